"""ALBERT (HF AlbertForPreTraining / AlbertForMaskedLM / AlbertModel): BERT's post-LN encoder
with factorised embeddings (tables of width E = `embed.size` < D, normed, then projected
E -> D) and cross-layer sharing: `layer_groups` parameter sets (HF num_hidden_groups, 1 in
every released model) applied in turn over `num_layers` depths, layer i using set
floor(i * groups / layers). tanh-GELU (gelu_new).

| preset          | params     | reference                                              |
|-----------------|------------|--------------------------------------------------------|
| albert-base-v2  | 11,813,810 | HF AlbertForPreTraining; backbone+pooler 11,683,584    |
| albert-tiny     | (tests)    | 2 depths of one shared layer, width 64, embeddings 32  |

Heads: the presets include AlbertForPreTraining's heads: the MLM head (dense D -> E + GELU +
LayerNorm, decoder tied to the E-wide token table, with a vocab bias) and the 2-way
sentence-order (SOP) classifier on the pooled output (`heads.num_labels=2`; 0 drops it:
AlbertForMaskedLM). `models.init_params(cfg, rng, heads=False)` builds HF AlbertModel
(11,683,584 for albert-base-v2). The SOP head trains with objective "mlm_nsp" on sentence
pairs.
"""

from __future__ import annotations

from transformer_jax.config import (
    AttentionConfig,
    EmbeddingConfig,
    FeedForwardConfig,
    HeadsConfig,
    LearnedPositions,
    ModelConfig,
    NormConfig,
    OutputConfig,
)
from transformer_jax.families.tiny import TINY


def albert(d_model: int, num_layers: int, num_heads: int, embed_size: int = 128) -> ModelConfig:
    return ModelConfig(
        arch="encoder",
        vocab_size=30000,
        d_model=d_model,
        num_layers=num_layers,
        layer_groups=1,  # one layer's parameters at every depth
        max_len=512,
        attention=AttentionConfig(num_heads=num_heads, dropout_rate=0.0),
        ffn=FeedForwardConfig(d_ff=4 * d_model, activation="gelu_tanh"),
        positions=LearnedPositions(),
        embed=EmbeddingConfig(type_vocab_size=2, norm=True, size=embed_size),
        norm=NormConfig(residual="post", eps=1e-12),
        output=OutputConfig(tie=True, bias=True),
        heads=HeadsConfig(pooler=True, mlm_transform=True, num_labels=2),
        dropout_rate=0.0,
        pad_id=0,
    )


PRESETS: dict[str, ModelConfig] = {
    "albert-base-v2": albert(768, 12, 12),
    "albert-tiny": albert(64, 2, 4, embed_size=32).override(TINY),
}


# ------------------------------------------------------------------- Hugging Face checkpoints
HF_MODEL_TYPE = "albert"
HF_PREFIX = "albert."  # the backbone's prefix in head classes
# class -> has its heads; AlbertModel is the backbone (init_params(heads=False)) with a pooler.
HF_ARCHITECTURES = {"AlbertForPreTraining": True, "AlbertForMaskedLM": True, "AlbertModel": False}
HF_IGNORED_TENSORS = (r"(^|\.)embeddings\.(position_ids|token_type_ids)$",)  # index buffers

_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "relu": "relu", "silu": "silu"}
_HF_ACTIVATION_NAMES = {v: k for k, v in _HF_ACTIVATIONS.items()}


def from_hf_config(hf: dict) -> ModelConfig:
    """An ALBERT config.json -> ModelConfig. `architectures` decides the heads: pretraining
    (pooler, MLM, 2-way SOP), masked LM (MLM; a pooler if the file holds one) or AlbertModel
    (the backbone with a pooler)."""
    from transformer_jax.hf.strict import check_fields, choose

    check_fields(
        hf,
        "albert",
        understood={
            "vocab_size", "embedding_size", "hidden_size", "num_hidden_layers",
            "num_hidden_groups", "num_attention_heads", "intermediate_size", "hidden_act",
            "max_position_embeddings", "type_vocab_size", "layer_norm_eps",
            "attention_probs_dropout_prob", "hidden_dropout_prob", "initializer_range",
            "pad_token_id", "tie_word_embeddings",
        },
        required={
            "inner_group_num": (1,),
            "position_embedding_type": ("absolute",),
            "tie_word_embeddings": (True,),
        },
        ignored={"classifier_dropout_prob", "down_scale_factor", "gap_size", "net_structure_type",
                 "num_memory_blocks"},  # fmt: skip
    )  # fmt: skip
    architecture = (hf.get("architectures") or ["AlbertForPreTraining"])[0]
    d, e = hf.get("hidden_size", 4096), hf.get("embedding_size", 128)
    layers, groups = hf.get("num_hidden_layers", 12), hf.get("num_hidden_groups", 1)
    if e == d:
        raise ValueError(
            f"albert config.json: embedding_size={e} equals hidden_size; HF ALBERT still "
            "projects E -> D there, transformer_jax only when the sizes differ."
        )
    if not 1 <= groups <= layers:
        raise ValueError(
            f"albert config.json: num_hidden_groups={groups} must be in [1, "
            f"num_hidden_layers={layers}]."
        )
    return ModelConfig(
        arch="encoder",
        vocab_size=hf.get("vocab_size", 30000),
        d_model=d,
        num_layers=layers,
        layer_groups=None if groups == layers else groups,
        max_len=hf.get("max_position_embeddings", 512),
        attention=AttentionConfig(
            num_heads=hf.get("num_attention_heads", 64),
            dropout_rate=hf.get("attention_probs_dropout_prob", 0.0),
        ),
        ffn=FeedForwardConfig(
            d_ff=hf.get("intermediate_size", 16384),
            activation=choose(
                "albert", "hidden_act", hf.get("hidden_act", "gelu_new"), _HF_ACTIVATIONS
            ),
        ),
        positions=LearnedPositions(),
        embed=EmbeddingConfig(type_vocab_size=hf.get("type_vocab_size", 2), norm=True, size=e),
        norm=NormConfig(residual="post", eps=hf.get("layer_norm_eps", 1e-12)),
        output=OutputConfig(tie=True, bias=True),
        heads=HeadsConfig(
            pooler=architecture != "AlbertForMaskedLM",
            mlm_transform=True,
            num_labels=2 if architecture == "AlbertForPreTraining" else 0,
        ),
        dropout_rate=hf.get("hidden_dropout_prob", 0.0),
        init_std=hf.get("initializer_range", 0.02),
        pad_id=hf.get("pad_token_id", 0),
    )


def hf_architecture(config: ModelConfig, heads: bool) -> str:
    if not heads:
        return "AlbertModel"
    h = config.heads
    if h.mlm_transform and h.pooler and h.num_labels == 2:
        return "AlbertForPreTraining"
    if h.mlm_transform and not h.num_labels:
        return "AlbertForMaskedLM"  # with the pooler's tensors if it has one (released files)
    raise ValueError(
        f"No HF ALBERT class has the heads {h}: AlbertForPreTraining has pooler=True, "
        "num_labels=2; AlbertForMaskedLM has num_labels=0 (both mlm_transform=True)."
    )


def to_hf_config(config: ModelConfig, heads: bool = True) -> dict:
    """ModelConfig -> ALBERT config.json (hf.save checks that it reads back as `config`)."""
    return {
        "model_type": HF_MODEL_TYPE,
        "architectures": [hf_architecture(config, heads)],
        "vocab_size": config.vocab_size,
        "embedding_size": config.embed_size,
        "hidden_size": config.d_model,
        "num_hidden_layers": config.num_layers,
        "num_hidden_groups": config.layer_groups or config.num_layers,
        "inner_group_num": 1,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.ffn.d_ff,
        "hidden_act": _HF_ACTIVATION_NAMES[config.ffn.activation],
        "max_position_embeddings": config.max_len,
        "type_vocab_size": config.embed.type_vocab_size,
        "layer_norm_eps": config.norm.eps,
        "attention_probs_dropout_prob": config.attention.dropout_rate,
        "hidden_dropout_prob": config.dropout_rate,
        "initializer_range": config.init_std,
        "pad_token_id": config.pad_id,
        "bos_token_id": 2,
        "eos_token_id": 3,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
    }


def hf_name_table(config: ModelConfig, heads: bool) -> list:
    """Rows (HF tensor name, our parameter path, transform); `{p}` is HF_PREFIX or "". Layer
    rows run over the parameter sets (HF's albert_layer_groups), not the depths."""
    from transformer_jax.hf.table import Row, linear_attention_rows, linear_rows, norm_rows

    rows = [
        Row("{p}embeddings.word_embeddings.weight", "token_embed/embedding"),
        Row("{p}embeddings.position_embeddings.weight", "encoder/embed/pos_embed/embedding"),
        Row("{p}embeddings.token_type_embeddings.weight", "encoder/embed/type_embed/embedding"),
        *norm_rows("{p}embeddings.LayerNorm", "encoder/embed/embed_norm"),
        *linear_rows("{p}encoder.embedding_hidden_mapping_in", "encoder/embed/embed_proj"),
    ]
    for g in range(config.layer_groups or config.num_layers):
        layer = f"encoder/layer_{g}"
        hf_layer = f"{{p}}encoder.albert_layer_groups.{g}.albert_layers.0"
        rows += [
            *linear_attention_rows(
                f"{hf_layer}.attention",
                f"{layer}/self_attn",
                None,
                ("query", "key", "value", "dense"),
            ),
            *norm_rows(f"{hf_layer}.attention.LayerNorm", f"{layer}/self_attn_norm"),
            *linear_rows(f"{hf_layer}.ffn", f"{layer}/ffn/wi"),
            *linear_rows(f"{hf_layer}.ffn_output", f"{layer}/ffn/wo"),
            *norm_rows(f"{hf_layer}.full_layer_layer_norm", f"{layer}/ffn_norm"),
        ]
    if config.heads.pooler:
        rows += linear_rows("{p}pooler", "pooler")
    if heads:
        rows += [
            *linear_rows("predictions.dense", "mlm_transform"),
            *norm_rows("predictions.LayerNorm", "mlm_norm"),
            Row("predictions.bias", "logits_bias"),
            Row("predictions.decoder.weight", "token_embed/embedding", alias=True),
            Row("predictions.decoder.bias", "logits_bias", alias=True),
        ]
        if config.heads.num_labels:
            rows += linear_rows("sop_classifier.classifier", "classifier")
    return rows


def hf_canonical(config: ModelConfig, params: dict, heads: bool) -> tuple[ModelConfig, dict]:
    """Backbone parameters (AlbertModel) read back with ALBERT's MLM head described and no
    classifier, whatever heads the config had."""
    if heads or config.arch != "encoder":
        return config, params
    return config.replace(
        heads={"mlm_transform": True, "num_labels": 0}, output={"bias": True}
    ), params


def hf_from_tensors(config: ModelConfig, names: set[str]) -> ModelConfig:
    """Heads as the file holds them: a pooler and an SOP classifier where present."""
    sop = "sop_classifier.classifier.weight" in names
    pooler = sop or any(n.endswith("pooler.weight") for n in names)
    return config.replace(heads={"pooler": pooler, "num_labels": 2 if sop else 0})
