"""GPT-Neo (HF GPTNeoForCausalLM): GPT-2's wiring (pre-LN with a final norm, learned positions,
tanh-GELU, tied output) with GPT-3's alternating attention: layers are "global" (dense causal)
or "local" (query q sees keys q - window < k <= q) by `attention.pattern`, one entry per layer.
Three more switches, no module of its own: scores are not divided by sqrt(head size)
(`attention.scale=1.0`); q/k/v projections have no bias, the output projection has one
(`qkv_bias=False`, `out_bias=True`); attention runs in float32 (as every attention here: the
scores accumulate in float32 and the softmax is float32 even in bfloat16 compute).

HF builds its local mask as causal XOR tril(causal, -window_size): key k is dropped iff
k <= q - window_size, so a local query sees exactly `window_size` keys, itself included: the
same band as Mistral's `sliding_window`, hence `attention.window = window_size` (no offset)
and the one sliding-window mask of transformer_jax/nn/attention.py.

| preset        | params        | reference                                             |
|---------------|---------------|-------------------------------------------------------|
| gpt-neo-125m  | 125,198,592   | HF GPTNeoForCausalLM (EleutherAI/gpt-neo-125m)        |
| gpt-neo-1.3b  | 1,315,575,808 | (EleutherAI/gpt-neo-1.3B)                             |
| gpt-neo-2.7b  | 2,651,307,520 | (EleutherAI/gpt-neo-2.7B)                             |
| gpt-neo-tiny  | (tests/demos) | 2 layers of width 64: global, local; window 4         |

All three published models alternate global and local layers (starting global) with a
window of 256 and 2,048 positions.
"""

from __future__ import annotations

from transformer_jax.config import (
    AttentionConfig,
    FeedForwardConfig,
    LearnedPositions,
    ModelConfig,
    NormConfig,
    OutputConfig,
)
from transformer_jax.families.tiny import TINY


def alternating(num_layers: int) -> tuple[str, ...]:
    """("global", "local", "global", ...) for `num_layers` layers (GPT-3's and GPT-Neo's)."""
    return tuple("global" if i % 2 == 0 else "local" for i in range(num_layers))


def gpt_neo(d_model: int, num_layers: int, num_heads: int, window: int = 256) -> ModelConfig:
    return ModelConfig(
        arch="decoder",
        vocab_size=50257,
        d_model=d_model,
        num_layers=num_layers,
        max_len=2048,
        attention=AttentionConfig(
            num_heads=num_heads,
            scale=1.0,
            qkv_bias=False,
            out_bias=True,
            pattern=alternating(num_layers),
            window=window,
        ),
        ffn=FeedForwardConfig(d_ff=4 * d_model, activation="gelu_tanh"),
        positions=LearnedPositions(),
        norm=NormConfig(residual="pre", final=True),
        output=OutputConfig(tie=True),
        dropout_rate=0.0,  # as published (embed_dropout, resid_dropout, attention_dropout)
        pad_id=None,  # GPT-Neo's vocabulary (GPT-2's) has no pad token
    )


PRESETS: dict[str, ModelConfig] = {
    "gpt-neo-125m": gpt_neo(768, 12, 12),
    "gpt-neo-1.3b": gpt_neo(2048, 24, 16),
    "gpt-neo-2.7b": gpt_neo(2560, 32, 20),
    # One global and one local layer; window 4 < the test sequences.
    "gpt-neo-tiny": gpt_neo(64, 2, 4, window=4).override(TINY),
}


# ------------------------------------------------------------------- Hugging Face checkpoints
HF_MODEL_TYPE = "gpt_neo"
HF_PREFIX = "transformer."
HF_ARCHITECTURES = {"GPTNeoForCausalLM": True, "GPTNeoModel": False}
# Causal/local-mask buffers and the masked_bias constant of older files.
HF_IGNORED_TENSORS = (r"(^|\.)attn\.attention\.(masked_)?bias$",)

_HF_ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
}
_HF_ACTIVATION_NAMES = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}


def _expand(attention_types) -> list[str]:
    """HF's attention_types [[[kinds...], repeats], ...] -> one kind per layer."""
    layers: list[str] = []
    try:
        for kinds, repeats in attention_types:
            layers.extend(list(kinds) * int(repeats))
    except (TypeError, ValueError):
        raise ValueError(
            f"gpt_neo config.json: attention_types={attention_types!r} is not a list of "
            '[[kinds...], repeats] pairs, e.g. [[["global", "local"], 12]].'
        ) from None
    return layers


def from_hf_config(hf: dict) -> ModelConfig:
    """A GPT-Neo config.json -> ModelConfig: `attention_types` expanded to one kind per layer
    (a single entry when every layer has the same kind), `window_size` kept only when some
    layer is local."""
    from transformer_jax.hf.strict import check_fields, choose

    check_fields(
        hf,
        "gpt_neo",
        understood={
            "vocab_size", "max_position_embeddings", "hidden_size", "num_layers",
            "attention_types", "num_heads", "intermediate_size", "window_size",
            "activation_function", "resid_dropout", "attention_dropout",
            "layer_norm_epsilon", "initializer_range", "tie_word_embeddings",
        },
        required={},
        # attention_layers: HF's own expansion of attention_types (checked equal below).
        ignored={"embed_dropout", "attention_layers", "summary_type", "summary_use_proj",
                 "summary_activation", "summary_proj_to_labels", "summary_first_dropout",
                 "gradient_checkpointing"},  # fmt: skip
    )  # fmt: skip
    num_layers = hf.get("num_layers", 24)
    layers = _expand(hf.get("attention_types", [[["global", "local"], 12]]))
    bad = sorted(set(layers) - {"global", "local"})
    if bad:
        raise ValueError(
            f"gpt_neo config.json: attention_types has kinds {bad}; only 'global' and 'local'."
        )
    if len(layers) != num_layers:
        raise ValueError(
            f"gpt_neo config.json: attention_types={hf.get('attention_types')!r} gives "
            f"{len(layers)} layers but num_layers={num_layers}."
        )
    if "attention_layers" in hf and list(hf["attention_layers"]) != layers:
        raise ValueError(
            f"gpt_neo config.json: attention_layers={hf['attention_layers']!r} disagrees with "
            f"attention_types={hf.get('attention_types')!r}."
        )
    pattern = tuple(layers) if len(set(layers)) > 1 else (layers[0],)
    d = hf.get("hidden_size", 2048)
    return ModelConfig(
        arch="decoder",
        vocab_size=hf.get("vocab_size", 50257),
        d_model=d,
        num_layers=num_layers,
        max_len=hf.get("max_position_embeddings", 2048),
        attention=AttentionConfig(
            num_heads=hf.get("num_heads", 16),
            scale=1.0,  # GPT-Neo does not scale the scores
            qkv_bias=False,
            out_bias=True,
            dropout_rate=hf.get("attention_dropout", 0.0),
            pattern=pattern,
            window=hf.get("window_size", 256) if "local" in pattern else None,
        ),
        ffn=FeedForwardConfig(
            d_ff=hf.get("intermediate_size") or 4 * d,
            activation=choose(
                "gpt_neo",
                "activation_function",
                hf.get("activation_function", "gelu_new"),
                _HF_ACTIVATIONS,
            ),
        ),
        positions=LearnedPositions(),
        norm=NormConfig(residual="pre", final=True, eps=hf.get("layer_norm_epsilon", 1e-5)),
        output=OutputConfig(tie=bool(hf.get("tie_word_embeddings", True))),
        dropout_rate=hf.get("resid_dropout", 0.0),
        init_std=hf.get("initializer_range", 0.02),
        pad_id=None,
    )


def _compress(layers: list[str]) -> list:
    """One kind per layer -> HF's attention_types: the shortest repeating unit, repeated."""
    for size in range(1, len(layers) + 1):
        if len(layers) % size == 0 and layers == layers[:size] * (len(layers) // size):
            return [[layers[:size], len(layers) // size]]
    raise AssertionError("unreachable: the whole list repeats once")


def to_hf_config(config: ModelConfig, heads: bool = True) -> dict:
    """ModelConfig -> GPT-Neo config.json (hf.save checks that it reads back)."""
    att = config.attention
    layers = [att.layer_kind(i) for i in range(config.num_layers)]
    return {
        "model_type": HF_MODEL_TYPE,
        "architectures": ["GPTNeoForCausalLM" if heads else "GPTNeoModel"],
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_len,
        "hidden_size": config.d_model,
        "num_layers": config.num_layers,
        "num_heads": config.num_heads,
        "attention_types": _compress(layers),
        "window_size": att.window if att.window is not None else 256,
        "intermediate_size": config.ffn.d_ff,
        "activation_function": _HF_ACTIVATION_NAMES[config.ffn.activation],
        "resid_dropout": config.dropout_rate,
        "embed_dropout": config.dropout_rate,
        "attention_dropout": att.dropout_rate,
        "layer_norm_epsilon": config.norm.eps,
        "initializer_range": config.init_std,
        "tie_word_embeddings": config.output.tie,
        "bos_token_id": config.vocab_size - 1,  # GPT-2's <|endoftext|> is the last id
        "eos_token_id": config.vocab_size - 1,
    }


def hf_name_table(config: ModelConfig, heads: bool) -> list:
    """Rows (HF tensor name, our parameter path, transform); `{p}` is HF_PREFIX or ""."""
    from transformer_jax.hf.table import Row, linear_rows, lm_head_rows, norm_rows

    layer, hf_layer, n = "decoder/layer_{i}", "{p}h.{i}", "layers"
    att, hf_att = f"{layer}/self_attn", f"{hf_layer}.attn.attention"
    rows = [
        Row("{p}wte.weight", "token_embed/embedding"),
        Row("{p}wpe.weight", "decoder/embed/pos_embed/embedding"),
        *norm_rows(f"{hf_layer}.ln_1", f"{layer}/self_attn_norm", n),
        Row(f"{hf_att}.q_proj.weight", f"{att}/query/kernel", "linear_qkv", n),
        Row(f"{hf_att}.k_proj.weight", f"{att}/key/kernel", "linear_qkv", n),
        Row(f"{hf_att}.v_proj.weight", f"{att}/value/kernel", "linear_qkv", n),
        Row(f"{hf_att}.out_proj.weight", f"{att}/out/kernel", "linear_out", n),
        Row(f"{hf_att}.out_proj.bias", f"{att}/out/bias", "copy", n),
        *norm_rows(f"{hf_layer}.ln_2", f"{layer}/ffn_norm", n),
        *linear_rows(f"{hf_layer}.mlp.c_fc", f"{layer}/ffn/wi", n),
        *linear_rows(f"{hf_layer}.mlp.c_proj", f"{layer}/ffn/wo", n),
        *norm_rows("{p}ln_f", "decoder/final_norm"),
    ]
    return rows + lm_head_rows(config, heads)
