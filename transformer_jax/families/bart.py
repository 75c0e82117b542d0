"""BART (HF BartForConditionalGeneration): a post-LN encoder-decoder with learned positions
(2 table rows reserved before position 0), embedding norms and a tied output.

| preset      | params      | reference                               |
|-------------|-------------|-----------------------------------------|
| bart-base   | 139,420,416 | HF BartForConditionalGeneration (tied)  |
| bart-large  | 406,291,456 |                                         |
| bart-tiny   | (tests)     | 2 + 2 layers of width 64, offset 0      |
"""

from __future__ import annotations

import numpy as np

from transformer_jax.config import (
    AttentionConfig,
    EmbeddingConfig,
    FeedForwardConfig,
    LearnedPositions,
    ModelConfig,
    NormConfig,
    OutputConfig,
)
from transformer_jax.families.tiny import TINY


def bart(d_model: int, num_layers: int, num_heads: int) -> ModelConfig:
    return ModelConfig(
        arch="encoder_decoder",
        vocab_size=50265,
        d_model=d_model,
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        max_len=1024,
        attention=AttentionConfig(num_heads=num_heads, dropout_rate=0.0),
        ffn=FeedForwardConfig(d_ff=4 * d_model, activation="gelu"),
        positions=LearnedPositions(offset=2),
        embed=EmbeddingConfig(norm=True),
        norm=NormConfig(residual="post"),
        output=OutputConfig(tie=True),
        dropout_rate=0.1,
        pad_id=1,  # BART's <pad>
    )


PRESETS: dict[str, ModelConfig] = {
    "bart-base": bart(768, 6, 12),
    "bart-large": bart(1024, 12, 16),
    "bart-tiny": bart(64, 2, 4).override({**TINY, "pad_id": 0, "positions.offset": 0}),
}


# ------------------------------------------------------------------- Hugging Face checkpoints
HF_MODEL_TYPE = "bart"
HF_PREFIX = "model."  # the backbone's prefix in head classes
HF_ARCHITECTURES = {"BartForConditionalGeneration": True, "BartModel": False}
HF_IGNORED_TENSORS = ()

_HF_ACTIVATIONS = {
    "gelu": "gelu", "gelu_new": "gelu_tanh", "relu": "relu", "silu": "silu", "swish": "silu"
}  # fmt: skip
_HF_ACTIVATION_NAMES = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}


# Fields every BART-like config.json (BART, mBART, PLBART, Marian) reads the same way.
_COMMON_FIELDS = {
    "vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
    "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "activation_function",
    "max_position_embeddings", "scale_embedding", "dropout", "attention_dropout", "init_std",
    "pad_token_id", "num_hidden_layers",
}  # fmt: skip
# Fairseq-era fields that BART's HF class reads and mBART's / Marian's ignore.
_LEGACY_FIELDS = {
    "normalize_before", "add_final_layer_norm", "normalize_embedding", "add_bias_logits",
    "static_position_embeddings", "extra_pos_embeddings",
}  # fmt: skip
_IGNORED = {"activation_dropout", "encoder_layerdrop", "decoder_layerdrop", "classif_dropout",
            "classifier_dropout", "_num_labels"}  # fmt: skip


def read_common(
    hf: dict,
    family: str,
    *,
    required: dict,
    understood: set = frozenset(),
    ignored: set = frozenset(),
    defaults: dict,
) -> dict:
    """The ModelConfig fields all BART-like families read alike (sizes, activation, dropout,
    init, pad id), after checking config.json's fields; `defaults` are the HF config class's
    (vocab_size, d_model, layers, heads, ffn, max_len, pad_id)."""
    from transformer_jax.hf.strict import check_fields, choose

    check_fields(
        hf,
        family,
        understood=_COMMON_FIELDS | set(understood),
        required=required,
        ignored=_IGNORED | set(ignored),
    )
    for a, b in (("encoder_attention_heads", "decoder_attention_heads"),
                 ("encoder_ffn_dim", "decoder_ffn_dim")):  # fmt: skip
        if hf.get(a, defaults[a]) != hf.get(b, defaults[a]):
            raise ValueError(
                f"{family} config.json: {a}={hf.get(a)} differs from {b}={hf.get(b)}; "
                "transformer_jax uses one attention and feed-forward shape for both stacks."
            )
    layers = hf.get("encoder_layers", defaults["encoder_layers"])
    return dict(
        arch="encoder_decoder",
        vocab_size=hf.get("vocab_size", defaults["vocab_size"]),
        d_model=hf.get("d_model", defaults["d_model"]),
        num_layers=layers,
        num_decoder_layers=hf.get("decoder_layers", layers),
        max_len=hf.get("max_position_embeddings", defaults["max_position_embeddings"]),
        attention=AttentionConfig(
            num_heads=hf.get("encoder_attention_heads", defaults["encoder_attention_heads"]),
            dropout_rate=hf.get("attention_dropout", 0.0),
        ),
        ffn=FeedForwardConfig(
            d_ff=hf.get("encoder_ffn_dim", defaults["encoder_ffn_dim"]),
            activation=choose(
                family,
                "activation_function",
                hf.get("activation_function", "gelu"),
                _HF_ACTIVATIONS,
            ),
        ),
        dropout_rate=hf.get("dropout", 0.1),
        init_std=hf.get("init_std", 0.02),
        pad_id=hf.get("pad_token_id", defaults["pad_token_id"]),
    )


def write_common(config: ModelConfig, model_type: str, architecture: str) -> dict:
    """The config.json fields all BART-like families write alike (read back by
    `read_common`)."""
    return {
        "model_type": model_type,
        "architectures": [architecture],
        "vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "encoder_layers": config.num_layers,
        "decoder_layers": config.decoder_layers,
        "encoder_attention_heads": config.num_heads,
        "decoder_attention_heads": config.num_heads,
        "encoder_ffn_dim": config.ffn.d_ff,
        "decoder_ffn_dim": config.ffn.d_ff,
        "activation_function": _HF_ACTIVATION_NAMES[config.ffn.activation],
        "max_position_embeddings": config.max_len,
        "scale_embedding": config.embed.scale,
        "dropout": config.dropout_rate,
        "attention_dropout": config.attention.dropout_rate,
        "activation_dropout": 0.0,
        "init_std": config.init_std,
        "pad_token_id": config.pad_id,
        "is_encoder_decoder": True,
        "tie_word_embeddings": True,
    }


_DEFAULTS = {
    "vocab_size": 50265, "d_model": 1024, "encoder_layers": 12, "encoder_attention_heads": 16,
    "encoder_ffn_dim": 4096, "max_position_embeddings": 1024, "pad_token_id": 1,
}  # fmt: skip


def from_hf_config(hf: dict) -> ModelConfig:
    """A BART config.json -> ModelConfig. The output has a bias: final_logits_bias [1, V] is
    our `logits_bias` [V]."""
    common = read_common(
        hf,
        "bart",
        understood={"tie_word_embeddings"},
        required={
            "normalize_before": (False,),
            "add_final_layer_norm": (False,),
            "normalize_embedding": (True,),
            "add_bias_logits": (False,),
            "static_position_embeddings": (False,),
            "extra_pos_embeddings": (2,),
            "tie_word_embeddings": (True,),
            "is_decoder": (False,),
        },
        defaults=_DEFAULTS,
    )
    return ModelConfig(
        **common,
        positions=LearnedPositions(offset=2),
        embed=EmbeddingConfig(norm=True, scale=bool(hf.get("scale_embedding", False))),
        norm=NormConfig(residual="post"),
        output=OutputConfig(tie=True, bias=True),
    )


def to_hf_config(config: ModelConfig, heads: bool = True) -> dict:
    """ModelConfig -> BART config.json (hf.save checks that it reads back as `config`).
    Token ids are BART's (<s>=0, </s>=2, the decoder starts with </s>)."""
    architecture = "BartForConditionalGeneration" if heads else "BartModel"
    return {
        **write_common(config, HF_MODEL_TYPE, architecture),
        "bos_token_id": 0,
        "eos_token_id": 2,
        "decoder_start_token_id": 2,
        "forced_eos_token_id": None,
    }


def hf_name_table(
    config: ModelConfig,
    heads: bool,
    *,
    learned_positions: bool = True,
    embed_norm: bool = True,
    final_norm: bool = False,
) -> list:
    """Rows (HF tensor name, our parameter path, transform); `{p}` is HF_PREFIX or "". The
    flags serve the BART-like families: a learned position table (not Marian's sinusoidal
    one), `layernorm_embedding` (not Marian), a final `layer_norm` per stack (mBART)."""
    from transformer_jax.hf.table import Row, linear_attention_rows, linear_rows, norm_rows

    names = ("q_proj", "k_proj", "v_proj", "out_proj")
    rows = [Row("{p}shared.weight", "token_embed/embedding")]
    for stack, n in (("encoder", "layers"), ("decoder", "decoder_layers")):
        layer, hf_layer = f"{stack}/layer_{{i}}", f"{{p}}{stack}.layers.{{i}}"
        rows.append(Row(f"{{p}}{stack}.embed_tokens.weight", "token_embed/embedding", alias=True))
        if learned_positions:
            rows.append(
                Row(f"{{p}}{stack}.embed_positions.weight", f"{stack}/embed/pos_embed/embedding")
            )
        if embed_norm:
            rows += norm_rows(f"{{p}}{stack}.layernorm_embedding", f"{stack}/embed/embed_norm")
        if final_norm:
            rows += norm_rows(f"{{p}}{stack}.layer_norm", f"{stack}/final_norm")
        rows += [
            *linear_attention_rows(f"{hf_layer}.self_attn", f"{layer}/self_attn", n, names),
            *norm_rows(f"{hf_layer}.self_attn_layer_norm", f"{layer}/self_attn_norm", n),
            *linear_rows(f"{hf_layer}.fc1", f"{layer}/ffn/wi", n),
            *linear_rows(f"{hf_layer}.fc2", f"{layer}/ffn/wo", n),
            *norm_rows(f"{hf_layer}.final_layer_norm", f"{layer}/ffn_norm", n),
        ]
        if stack == "decoder":
            rows += [
                *linear_attention_rows(f"{hf_layer}.encoder_attn", f"{layer}/cross_attn", n, names),
                *norm_rows(f"{hf_layer}.encoder_attn_layer_norm", f"{layer}/cross_attn_norm", n),
            ]
    if heads:
        rows += [
            Row("final_logits_bias", "logits_bias", "row"),
            Row("lm_head.weight", "token_embed/embedding", alias=True),
        ]
    return rows


def hf_canonical(config: ModelConfig, params: dict, heads: bool) -> tuple[ModelConfig, dict]:
    """The equivalent model HF expresses: BART always has final_logits_bias, so a config
    without an output bias (our presets) is saved with a zero one."""
    if config.arch != "encoder_decoder" or config.output.bias:
        return config, params
    if heads:
        table = params["token_embed"]["embedding"]
        params = {**params, "logits_bias": np.zeros(config.vocab_size, table.dtype)}
    return config.replace(output={"bias": True}), params
