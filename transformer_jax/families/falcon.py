"""Falcon (HF FalconForCausalLM): a parallel decoder, x + attn(n(x)) + mlp(n(x)), with
LayerNorm, rotary positions ("half" pairs over the whole head), exact GELU, no biases and a
tied output. Two architectures:

  * the original (Falcon-7B): multi-query (one key/value head), one norm shared by both
    branches; the fused query_key_value is [q heads..., k, v];
  * `new_decoder_architecture` (Falcon-40B/180B): grouped key/value heads and two norms
    (`num_ln_in_parallel_attn` 2; or 1); query_key_value is laid out per key/value head as
    [q x (N/K), k, v].
Both are `norm.residual="parallel"` with `norm.parallel_norms` 1 or 2, and one transform
(`linear_grouped_qkv`) reads both fused layouts (multi-query is the grouped layout with K = 1).
ALiBi (falcon-rw, `alibi: true`) is not implemented and such configs are refused.

| preset      | params        | reference                                     |
|-------------|---------------|-----------------------------------------------|
| falcon-7b   | 6,921,720,704 | HF FalconForCausalLM (tiiuae/falcon-7b, tied) |
| falcon-tiny | (tests/demos) | 2 layers of width 64, multi-query, one norm   |
"""

from __future__ import annotations

from transformer_jax.config import (
    AttentionConfig,
    FeedForwardConfig,
    ModelConfig,
    NormConfig,
    OutputConfig,
    RotaryPositions,
)
from transformer_jax.families.tiny import TINY


def falcon(
    d_model: int,
    num_layers: int,
    num_heads: int,
    *,
    num_kv_heads: int = 1,
    parallel_norms: int = 1,
    vocab_size: int = 65024,
    max_len: int = 2048,
) -> ModelConfig:
    return ModelConfig(
        arch="decoder",
        vocab_size=vocab_size,
        d_model=d_model,
        num_layers=num_layers,
        max_len=max_len,
        attention=AttentionConfig(
            num_heads=num_heads,
            num_kv_heads=None if num_kv_heads == num_heads else num_kv_heads,
            qkv_bias=False,
            out_bias=False,
            dropout_rate=0.0,
        ),
        ffn=FeedForwardConfig(d_ff=4 * d_model, activation="gelu", bias=False),
        positions=RotaryPositions(layout="half"),
        norm=NormConfig(residual="parallel", parallel_norms=parallel_norms, final=True),
        output=OutputConfig(tie=True),
        dropout_rate=0.0,
        pad_id=None,
    )


PRESETS: dict[str, ModelConfig] = {
    "falcon-7b": falcon(4544, 32, 71),
    "falcon-tiny": falcon(64, 2, 4).override(TINY),
}


# ------------------------------------------------------------------- Hugging Face checkpoints
HF_MODEL_TYPE = "falcon"
HF_PREFIX = "transformer."
HF_ARCHITECTURES = {"FalconForCausalLM": True, "FalconModel": False}
HF_IGNORED_TENSORS = ()

_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "relu": "relu", "silu": "silu"}
_HF_ACTIVATION_NAMES = {v: k for k, v in _HF_ACTIVATIONS.items()}


def from_hf_config(hf: dict) -> ModelConfig:
    """A Falcon config.json -> ModelConfig (either architecture; ALiBi is refused)."""
    from transformer_jax.hf.strict import ROPE_FIELDS, check_fields, choose, rope_theta

    check_fields(
        hf,
        "falcon",
        understood={
            "vocab_size", "hidden_size", "n_embed", "num_hidden_layers", "num_attention_heads",
            "num_kv_heads", "new_decoder_architecture", "multi_query", "parallel_attn", "bias",
            "layer_norm_epsilon", "initializer_range", "hidden_dropout", "attention_dropout",
            "max_position_embeddings", "ffn_hidden_size", "activation", "tie_word_embeddings",
            "num_ln_in_parallel_attn", "n_layer", "n_head", *ROPE_FIELDS,
        },
        required={
            "alibi": (False,),
            "parallel_attn": (True,),
            "apply_residual_connection_post_layernorm": (False,),  # older configs
            "is_decoder": (False, True),
        },
        ignored={"auto_map"},  # trust_remote_code's class map: HF's own class is the reference
    )  # fmt: skip
    d = hf.get("hidden_size", hf.get("n_embed", 4544))  # older names: n_embed, n_layer, n_head
    heads = hf.get("num_attention_heads", hf.get("n_head", 71))
    new = bool(hf.get("new_decoder_architecture", False))
    norms = hf.get("num_ln_in_parallel_attn")
    if new:
        kv = hf.get("num_kv_heads") or heads
        norms = 2 if norms is None else norms
        if norms not in (1, 2):
            raise ValueError(
                f"falcon config.json: num_ln_in_parallel_attn={norms!r} must be 1 or 2."
            )
    else:
        if norms not in (None, 1):
            raise ValueError(
                f"falcon config.json: num_ln_in_parallel_attn={norms!r} is only read with "
                "new_decoder_architecture=true (HF's original architecture has one norm)."
            )
        if not hf.get("multi_query", True):
            raise ValueError(
                "falcon config.json: multi_query=False without new_decoder_architecture is not "
                "supported (its per-head fused [q, k, v] layout is not implemented); "
                "transformer_jax reads multi_query=True or new_decoder_architecture=True."
            )
        kv, norms = 1, 1
    bias = bool(hf.get("bias", False))
    return ModelConfig(
        arch="decoder",
        vocab_size=hf.get("vocab_size", 65024),
        d_model=d,
        num_layers=hf.get("num_hidden_layers", hf.get("n_layer", 32)),
        max_len=hf.get("max_position_embeddings", 2048),
        attention=AttentionConfig(
            num_heads=heads,
            num_kv_heads=None if kv == heads else kv,
            qkv_bias=bias,
            out_bias=bias,
            dropout_rate=hf.get("attention_dropout", 0.0),
        ),
        ffn=FeedForwardConfig(
            d_ff=hf.get("ffn_hidden_size") or 4 * d,
            activation=choose(
                "falcon", "activation", hf.get("activation", "gelu"), _HF_ACTIVATIONS
            ),
            bias=bias,
        ),
        positions=RotaryPositions(theta=rope_theta(hf, "falcon"), layout="half"),
        norm=NormConfig(
            eps=hf.get("layer_norm_epsilon", 1e-5),
            residual="parallel",
            parallel_norms=norms,
            final=True,
        ),
        output=OutputConfig(tie=bool(hf.get("tie_word_embeddings", True))),
        dropout_rate=hf.get("hidden_dropout", 0.0),
        init_std=hf.get("initializer_range", 0.02),
        pad_id=None,
    )


def to_hf_config(config: ModelConfig, heads: bool = True) -> dict:
    """ModelConfig -> Falcon config.json: the original architecture when it expresses the
    config (one key/value head, one norm), else new_decoder_architecture."""
    att, norm, pos = config.attention, config.norm, config.positions
    if not isinstance(pos, RotaryPositions) or pos.layout != "half" or norm.residual != "parallel":
        raise ValueError("falcon: a parallel decoder with 'half' rotary positions is needed.")
    if att.qkv_bias != att.out_bias or att.qkv_bias != config.ffn.bias or config.ffn.gated:
        raise ValueError("falcon: one bias switch for every projection, an ungated FFN.")
    original = config.kv_heads == 1 and norm.parallel_norms == 1
    return {
        "model_type": HF_MODEL_TYPE,
        "architectures": ["FalconForCausalLM" if heads else "FalconModel"],
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_kv_heads": config.kv_heads,
        "new_decoder_architecture": not original,
        "multi_query": original,
        "parallel_attn": True,
        "num_ln_in_parallel_attn": None if original else norm.parallel_norms,
        "bias": att.qkv_bias,
        "alibi": False,
        "layer_norm_epsilon": norm.eps,
        "initializer_range": config.init_std,
        "hidden_dropout": config.dropout_rate,
        "attention_dropout": att.dropout_rate,
        "max_position_embeddings": config.max_len,
        "ffn_hidden_size": config.ffn.d_ff,
        "activation": _HF_ACTIVATION_NAMES[config.ffn.activation],
        "tie_word_embeddings": config.output.tie,
        "rope_parameters": {"rope_type": "default", "rope_theta": pos.theta},
        "bos_token_id": 11,  # Falcon's <|endoftext|>
        "eos_token_id": 11,
    }


def hf_name_table(config: ModelConfig, heads: bool) -> list:
    """Rows (HF tensor name, our parameter path, transform); `{p}` is HF_PREFIX or ""."""
    from transformer_jax.hf.table import Row, linear_rows, lm_head_rows, norm_rows

    layer, hf_layer, n = "decoder/layer_{i}", "{p}h.{i}", "layers"
    att, hf_att = f"{layer}/self_attn", f"{hf_layer}.self_attention"
    qkv = tuple(f"{att}/{x}" for x in ("query", "key", "value"))
    bias = config.attention.qkv_bias
    rows = [
        Row("{p}word_embeddings.weight", "token_embed/embedding"),
        *norm_rows("{p}ln_f", "decoder/final_norm"),
        Row(f"{hf_att}.query_key_value.weight", tuple(f"{q}/kernel" for q in qkv),
            "linear_grouped_qkv", n),
        Row(f"{hf_att}.dense.weight", f"{att}/out/kernel", "linear_out", n),
    ]  # fmt: skip
    if bias:
        rows += [
            Row(
                f"{hf_att}.query_key_value.bias", tuple(f"{q}/bias" for q in qkv), "grouped_flat", n
            ),
            Row(f"{hf_att}.dense.bias", f"{att}/out/bias", "copy", n),
        ]
    for hf_name, ours in (("dense_h_to_4h", "wi"), ("dense_4h_to_h", "wo")):
        if bias:
            rows += linear_rows(f"{hf_layer}.mlp.{hf_name}", f"{layer}/ffn/{ours}", n)
        else:
            rows.append(
                Row(f"{hf_layer}.mlp.{hf_name}.weight", f"{layer}/ffn/{ours}/kernel", "linear", n)
            )
    if config.norm.parallel_norms == 2:
        rows += norm_rows(f"{hf_layer}.ln_attn", f"{layer}/self_attn_norm", n)
        rows += norm_rows(f"{hf_layer}.ln_mlp", f"{layer}/ffn_norm", n)
    else:  # the original architecture, or the new one with num_ln_in_parallel_attn=1
        rows += norm_rows(f"{hf_layer}.input_layernorm", f"{layer}/self_attn_norm", n)
    return rows + lm_head_rows(config, heads)
