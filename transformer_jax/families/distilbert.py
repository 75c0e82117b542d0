"""DistilBERT (HF DistilBertForMaskedLM / DistilBertModel): BERT's post-LN encoder (half the
layers) without token types or pooler; every LayerNorm has eps 1e-12 (fixed in HF's code, not
in config.json); attention as q_lin / k_lin / v_lin / out_lin.

| preset           | params     | reference                                         |
|------------------|------------|---------------------------------------------------|
| distilbert-base  | 66,985,530 | HF DistilBertForMaskedLM; backbone 66,362,880     |
| distilbert-tiny  | (tests)    | 2 layers of width 64                              |

Heads: the presets include DistilBertForMaskedLM's head (vocab_transform + GELU +
vocab_layer_norm, vocab_projector tied to the token table with its own bias);
`models.init_params(cfg, rng, heads=False)` builds HF DistilBertModel (66,362,880 for
distilbert-base). No pooler, no classifier: train with objective "mlm".
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

EPS = 1e-12  # DistilBERT's LayerNorms (hard-coded in HF's modeling_distilbert.py)


def distilbert(d_model: int, num_layers: int, num_heads: int) -> ModelConfig:
    return ModelConfig(
        arch="encoder",
        vocab_size=30522,
        d_model=d_model,
        num_layers=num_layers,
        max_len=512,
        attention=AttentionConfig(num_heads=num_heads, dropout_rate=0.1),
        ffn=FeedForwardConfig(d_ff=4 * d_model, activation="gelu"),
        positions=LearnedPositions(),
        embed=EmbeddingConfig(type_vocab_size=0, norm=True),
        norm=NormConfig(residual="post", eps=EPS),
        output=OutputConfig(tie=True, bias=True),
        heads=HeadsConfig(pooler=False, mlm_transform=True, num_labels=0),
        dropout_rate=0.1,
        pad_id=0,
    )


PRESETS: dict[str, ModelConfig] = {
    "distilbert-base": distilbert(768, 6, 12),
    "distilbert-tiny": distilbert(64, 2, 4).override(TINY),
}


# ------------------------------------------------------------------- Hugging Face checkpoints
HF_MODEL_TYPE = "distilbert"
HF_PREFIX = "distilbert."  # the backbone's prefix in head classes
HF_ARCHITECTURES = {"DistilBertForMaskedLM": True, "DistilBertModel": False}
HF_IGNORED_TENSORS = (r"(^|\.)embeddings\.position_ids$",)  # an index buffer (old files)

_HF_ACTIVATIONS = {"gelu": "gelu", "relu": "relu"}  # DistilBertConfig.activation


def from_hf_config(hf: dict) -> ModelConfig:
    """A DistilBERT config.json -> ModelConfig (DistilBertModel: the same config, backbone
    parameters only)."""
    from transformer_jax.hf.strict import check_fields, choose

    check_fields(
        hf,
        "distilbert",
        understood={
            "vocab_size", "max_position_embeddings", "n_layers", "n_heads", "dim",
            "hidden_dim", "dropout", "attention_dropout", "activation", "initializer_range",
            "pad_token_id", "tie_word_embeddings",
        },
        required={
            "sinusoidal_pos_embds": (False,),
            "tie_word_embeddings": (True,),
        },
        ignored={"qa_dropout", "seq_classif_dropout", "tie_weights_"},
    )  # fmt: skip
    return ModelConfig(
        arch="encoder",
        vocab_size=hf.get("vocab_size", 30522),
        d_model=hf.get("dim", 768),
        num_layers=hf.get("n_layers", 6),
        max_len=hf.get("max_position_embeddings", 512),
        attention=AttentionConfig(
            num_heads=hf.get("n_heads", 12), dropout_rate=hf.get("attention_dropout", 0.1)
        ),
        ffn=FeedForwardConfig(
            d_ff=hf.get("hidden_dim", 3072),
            activation=choose(
                "distilbert", "activation", hf.get("activation", "gelu"), _HF_ACTIVATIONS
            ),
        ),
        positions=LearnedPositions(),
        embed=EmbeddingConfig(type_vocab_size=0, norm=True),
        norm=NormConfig(residual="post", eps=EPS),
        output=OutputConfig(tie=True, bias=True),
        heads=HeadsConfig(pooler=False, mlm_transform=True, num_labels=0),
        dropout_rate=hf.get("dropout", 0.1),
        init_std=hf.get("initializer_range", 0.02),
        pad_id=hf.get("pad_token_id", 0),
    )


def to_hf_config(config: ModelConfig, heads: bool = True) -> dict:
    """ModelConfig -> DistilBERT config.json (hf.save checks that it reads back as `config`)."""
    return {
        "model_type": HF_MODEL_TYPE,
        "architectures": ["DistilBertForMaskedLM" if heads else "DistilBertModel"],
        "vocab_size": config.vocab_size,
        "dim": config.d_model,
        "n_layers": config.num_layers,
        "n_heads": config.num_heads,
        "hidden_dim": config.ffn.d_ff,
        "activation": config.ffn.activation,
        "max_position_embeddings": config.max_len,
        "sinusoidal_pos_embds": False,
        "dropout": config.dropout_rate,
        "attention_dropout": config.attention.dropout_rate,
        "initializer_range": config.init_std,
        "pad_token_id": config.pad_id,
        "tie_word_embeddings": True,
    }


def hf_name_table(config: ModelConfig, heads: bool) -> list:
    """Rows (HF tensor name, our parameter path, transform); `{p}` is HF_PREFIX or ""."""
    from transformer_jax.hf.table import Row, linear_attention_rows, linear_rows, norm_rows

    layer, hf_layer, n = "encoder/layer_{i}", "{p}transformer.layer.{i}", "layers"
    rows = [
        Row("{p}embeddings.word_embeddings.weight", "token_embed/embedding"),
        Row("{p}embeddings.position_embeddings.weight", "encoder/embed/pos_embed/embedding"),
        *norm_rows("{p}embeddings.LayerNorm", "encoder/embed/embed_norm"),
        *linear_attention_rows(
            f"{hf_layer}.attention", f"{layer}/self_attn", n, ("q_lin", "k_lin", "v_lin", "out_lin")
        ),
        *norm_rows(f"{hf_layer}.sa_layer_norm", f"{layer}/self_attn_norm", n),
        *linear_rows(f"{hf_layer}.ffn.lin1", f"{layer}/ffn/wi", n),
        *linear_rows(f"{hf_layer}.ffn.lin2", f"{layer}/ffn/wo", n),
        *norm_rows(f"{hf_layer}.output_layer_norm", f"{layer}/ffn_norm", n),
    ]
    if heads:
        rows += [
            *linear_rows("vocab_transform", "mlm_transform"),
            *norm_rows("vocab_layer_norm", "mlm_norm"),
            Row("vocab_projector.bias", "logits_bias"),
            Row("vocab_projector.weight", "token_embed/embedding", alias=True),
        ]
    return rows
