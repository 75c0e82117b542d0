"""BERT (HF BertForPreTraining): a post-LN encoder with learned positions, token types,
an embedding norm, a pooler and the pretraining heads.

| preset      | params      | reference                                           |
|-------------|-------------|-----------------------------------------------------|
| bert-base   | 110,106,428 | HF BertForPreTraining; backbone+pooler 109,482,240  |
| bert-large  | 336,226,108 | backbone+pooler 335,141,888                         |
| bert-tiny   | (tests)     | 2 layers of width 64                                |

The presets include the pretraining heads: the MLM head (dense + GELU + LayerNorm, decoder
tied to the token table, with a vocab bias) and the 2-way NSP classifier on the pooled
output; `models.init_params(cfg, rng, heads=False)` builds the backbone (HF BertModel).
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


def bert(d_model: int, num_layers: int, num_heads: int) -> ModelConfig:
    return ModelConfig(
        arch="encoder",
        vocab_size=30522,
        d_model=d_model,
        num_layers=num_layers,
        max_len=512,
        attention=AttentionConfig(num_heads=num_heads, dropout_rate=0.1),
        ffn=FeedForwardConfig(d_ff=4 * d_model, activation="gelu"),
        positions=LearnedPositions(),
        embed=EmbeddingConfig(type_vocab_size=2, norm=True),
        norm=NormConfig(residual="post", eps=1e-12),
        output=OutputConfig(tie=True, bias=True),
        heads=HeadsConfig(pooler=True, mlm_transform=True, num_labels=2),
        dropout_rate=0.1,
        pad_id=0,
    )


PRESETS: dict[str, ModelConfig] = {
    "bert-base": bert(768, 12, 12),
    "bert-large": bert(1024, 24, 16),
    "bert-tiny": bert(64, 2, 4).override(TINY),
}


# ------------------------------------------------------------------- Hugging Face checkpoints
HF_MODEL_TYPE = "bert"
HF_PREFIX = "bert."  # the backbone's prefix in head classes
# class -> has its heads; BertModel is the backbone (init_params(heads=False)) with a pooler.
HF_ARCHITECTURES = {"BertForPreTraining": True, "BertForMaskedLM": True, "BertModel": False}
HF_IGNORED_TENSORS = (r"(^|\.)embeddings\.position_ids$",)  # an index buffer (old files)
# Older files (converted from TF) name LayerNorm parameters gamma/beta.
HF_LEGACY_RENAMES = (
    (r"LayerNorm\.gamma$", "LayerNorm.weight"),
    (r"LayerNorm\.beta$", "LayerNorm.bias"),
)

_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "relu": "relu", "silu": "silu"}
_HF_ACTIVATION_NAMES = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}


def from_hf_config(hf: dict) -> ModelConfig:
    """A BERT config.json -> ModelConfig. Its `architectures` decides the heads: pretraining
    (pooler, MLM, 2-way NSP), masked LM (MLM, no pooler) or BertModel (the backbone with a
    pooler; the config still describes BERT's MLM head, so asking such parameters for MLM
    logits fails on the missing `mlm_transform`)."""
    from transformer_jax.hf.strict import check_fields, choose

    check_fields(
        hf,
        "bert",
        understood={
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "hidden_act", "max_position_embeddings", "type_vocab_size",
            "layer_norm_eps", "tie_word_embeddings", "attention_probs_dropout_prob",
            "hidden_dropout_prob", "initializer_range", "pad_token_id",
        },
        required={
            "position_embedding_type": ("absolute",),
            "add_cross_attention": (False,),
            "is_decoder": (False,),
            "tie_word_embeddings": (True,),
        },
    )  # fmt: skip
    architecture = (hf.get("architectures") or ["BertForPreTraining"])[0]
    pretraining = architecture == "BertForPreTraining"
    d = hf.get("hidden_size", 768)
    return ModelConfig(
        arch="encoder",
        vocab_size=hf.get("vocab_size", 30522),
        d_model=d,
        num_layers=hf.get("num_hidden_layers", 12),
        max_len=hf.get("max_position_embeddings", 512),
        attention=AttentionConfig(
            num_heads=hf.get("num_attention_heads", 12),
            dropout_rate=hf.get("attention_probs_dropout_prob", 0.1),
        ),
        ffn=FeedForwardConfig(
            d_ff=hf.get("intermediate_size", 3072),
            activation=choose("bert", "hidden_act", hf.get("hidden_act", "gelu"), _HF_ACTIVATIONS),
        ),
        positions=LearnedPositions(),
        embed=EmbeddingConfig(type_vocab_size=hf.get("type_vocab_size", 2), norm=True),
        norm=NormConfig(residual="post", eps=hf.get("layer_norm_eps", 1e-12)),
        output=OutputConfig(tie=True, bias=True),
        heads=HeadsConfig(
            pooler=architecture != "BertForMaskedLM",
            mlm_transform=True,
            num_labels=2 if pretraining else 0,
        ),
        dropout_rate=hf.get("hidden_dropout_prob", 0.1),
        init_std=hf.get("initializer_range", 0.02),
        pad_id=hf.get("pad_token_id", 0),
    )


def hf_architecture(config: ModelConfig, heads: bool) -> str:
    if not heads:
        return "BertModel"
    h = config.heads
    if h.pooler and h.num_labels == 2:
        return "BertForPreTraining"
    if not h.pooler and not h.num_labels:
        return "BertForMaskedLM"
    raise ValueError(
        f"No HF BERT class has the heads {h}: BertForPreTraining has pooler=True, "
        "num_labels=2; BertForMaskedLM has pooler=False, num_labels=0."
    )


def to_hf_config(config: ModelConfig, heads: bool = True) -> dict:
    """ModelConfig -> BERT config.json (hf.save checks that it reads back as `config`)."""
    return {
        "model_type": HF_MODEL_TYPE,
        "architectures": [hf_architecture(config, heads)],
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "num_hidden_layers": config.num_layers,
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
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
    }


def hf_name_table(config: ModelConfig, heads: bool) -> list:
    """Rows (HF tensor name, our parameter path, transform); `{p}` is HF_PREFIX or ""."""
    from transformer_jax.hf.table import Row, linear_attention_rows, linear_rows, norm_rows

    layer, hf_layer, n = "encoder/layer_{i}", "{p}encoder.layer.{i}", "layers"
    rows = [
        Row("{p}embeddings.word_embeddings.weight", "token_embed/embedding"),
        Row("{p}embeddings.position_embeddings.weight", "encoder/embed/pos_embed/embedding"),
        Row("{p}embeddings.token_type_embeddings.weight", "encoder/embed/type_embed/embedding"),
        *norm_rows("{p}embeddings.LayerNorm", "encoder/embed/embed_norm"),
        *linear_attention_rows(
            f"{hf_layer}.attention",
            f"{layer}/self_attn",
            n,
            ("self.query", "self.key", "self.value", "output.dense"),
        ),
        *norm_rows(f"{hf_layer}.attention.output.LayerNorm", f"{layer}/self_attn_norm", n),
        *linear_rows(f"{hf_layer}.intermediate.dense", f"{layer}/ffn/wi", n),
        *linear_rows(f"{hf_layer}.output.dense", f"{layer}/ffn/wo", n),
        *norm_rows(f"{hf_layer}.output.LayerNorm", f"{layer}/ffn_norm", n),
    ]
    if config.heads.pooler:
        rows += linear_rows("{p}pooler.dense", "pooler")
    if heads:
        rows += [
            *linear_rows("cls.predictions.transform.dense", "mlm_transform"),
            *norm_rows("cls.predictions.transform.LayerNorm", "mlm_norm"),
            Row("cls.predictions.bias", "logits_bias"),
            Row("cls.predictions.decoder.weight", "token_embed/embedding", alias=True),
            Row("cls.predictions.decoder.bias", "logits_bias", alias=True),
        ]
        if config.heads.num_labels:
            rows += linear_rows("cls.seq_relationship", "classifier")
    return rows


def hf_canonical(config: ModelConfig, params: dict, heads: bool) -> tuple[ModelConfig, dict]:
    """The equivalent model HF expresses: backbone parameters (BertModel) read back with
    BERT's MLM head described and no classifier, whatever heads the config had."""
    if heads or config.arch != "encoder":
        return config, params
    return config.replace(
        heads={"mlm_transform": True, "num_labels": 0}, output={"bias": True}
    ), params


def hf_from_tensors(config: ModelConfig, names: set[str]) -> ModelConfig:
    """Heads as the file holds them, whatever `architectures` says: released files labelled
    BertForMaskedLM often keep the pooler and NSP classifier of pretraining
    (bert-base-uncased), and some configs name no class at all."""
    nsp = "cls.seq_relationship.weight" in names
    pooler = nsp or any(n.endswith("pooler.dense.weight") for n in names)
    return config.replace(heads={"pooler": pooler, "num_labels": 2 if nsp else 0})
