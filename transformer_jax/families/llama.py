"""LLaMA / LLaMA-2 (HF LlamaForCausalLM): a pre-norm decoder with RMSNorm, rotary positions
("half" pairs over the whole head), a SwiGLU feed-forward, no biases, grouped key/value heads
and an untied output.

| preset      | params        | reference                                         |
|-------------|---------------|---------------------------------------------------|
| llama-2-7b  | 6,738,415,616 | HF LlamaForCausalLM (meta-llama/Llama-2-7b-hf)    |
| llama-tiny  | (tests/demos) | 2 layers of width 64, 4 query heads on 2 KV heads |

Mistral (families/mistral.py) is this family plus a sliding window; its HF mapping is the
one written here with a different model_type.
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


def llama(
    d_model: int,
    num_layers: int,
    num_heads: int,
    d_ff: int,
    *,
    num_kv_heads: int | None = None,
    vocab_size: int = 32000,
    max_len: int = 4096,
    eps: float = 1e-5,
    theta: float = 10000.0,
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
        ffn=FeedForwardConfig(d_ff=d_ff, activation="silu", gated=True, bias=False),
        positions=RotaryPositions(theta=theta, layout="half"),
        norm=NormConfig(kind="rmsnorm", eps=eps, residual="pre", final=True),
        output=OutputConfig(tie=False),
        dropout_rate=0.0,
        pad_id=None,  # LLaMA's vocabulary has no pad token; HF masks by attention_mask
    )


PRESETS: dict[str, ModelConfig] = {
    "llama-2-7b": llama(4096, 32, 32, 11008),
    "llama-tiny": llama(64, 2, 4, 128, num_kv_heads=2).override(TINY),
}


# ------------------------------------------------------------------- Hugging Face checkpoints
HF_MODEL_TYPE = "llama"
HF_PREFIX = "model."  # the backbone's prefix in LlamaForCausalLM
HF_ARCHITECTURES = {"LlamaForCausalLM": True, "LlamaModel": False}
HF_IGNORED_TENSORS = (r"(^|\.)rotary_emb\.inv_freq$",)  # a buffer some older files hold

HF_ACTIVATIONS = {
    "silu": "silu",
    "swish": "silu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
}
_HF_ACTIVATION_NAMES = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}

_UNDERSTOOD = {
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act",
    "max_position_embeddings", "initializer_range", "rms_norm_eps", "tie_word_embeddings",
    "attention_bias", "attention_dropout", "mlp_bias",
}  # fmt: skip


def config_from_hf(hf: dict, family: str, understood: set[str] = frozenset()) -> ModelConfig:
    """A LLaMA-shaped config.json -> ModelConfig (shared with Mistral, which adds a window)."""
    from transformer_jax.hf.strict import ROPE_FIELDS, check_fields, choose, rope_theta

    check_fields(
        hf,
        family,
        understood=_UNDERSTOOD | ROPE_FIELDS | set(understood),
        required={"pretraining_tp": (1, None), "is_decoder": (False, True)},
    )
    d = hf.get("hidden_size", 4096)
    heads = hf.get("num_attention_heads", 32)
    kv = hf.get("num_key_value_heads") or heads
    head_dim = hf.get("head_dim") or d // heads
    return ModelConfig(
        arch="decoder",
        vocab_size=hf.get("vocab_size", 32000),
        d_model=d,
        num_layers=hf.get("num_hidden_layers", 32),
        max_len=hf.get("max_position_embeddings", 2048),
        attention=AttentionConfig(
            num_heads=heads,
            num_kv_heads=None if kv == heads else kv,
            head_dim=None if head_dim * heads == d else head_dim,
            qkv_bias=bool(hf.get("attention_bias", False)),
            out_bias=bool(hf.get("attention_bias", False)),
            dropout_rate=hf.get("attention_dropout", 0.0),
        ),
        ffn=FeedForwardConfig(
            d_ff=hf.get("intermediate_size", 11008),
            activation=choose(family, "hidden_act", hf.get("hidden_act", "silu"), HF_ACTIVATIONS),
            gated=True,
            bias=bool(hf.get("mlp_bias", False)),
        ),
        positions=RotaryPositions(theta=rope_theta(hf, family), layout="half"),
        norm=NormConfig(
            kind="rmsnorm", eps=hf.get("rms_norm_eps", 1e-6), residual="pre", final=True
        ),
        output=OutputConfig(tie=bool(hf.get("tie_word_embeddings", False))),
        dropout_rate=0.0,
        init_std=hf.get("initializer_range", 0.02),
        pad_id=None,
    )


def from_hf_config(hf: dict) -> ModelConfig:
    """A LLaMA config.json -> ModelConfig."""
    return config_from_hf(hf, HF_MODEL_TYPE)


def _check_llama_shaped(config: ModelConfig, family: str) -> None:
    """ValueError unless `config` has the shape every LLaMA-like HF class has (what its
    config.json cannot express: a pad mask, post/parallel norms, another position scheme)."""
    att, ffn, norm = config.attention, config.ffn, config.norm
    if config.arch != "decoder" or not isinstance(config.positions, RotaryPositions):
        raise ValueError(f"{family}: a decoder with rotary positions is needed.")
    if config.positions.layout != "half" or config.positions.rotary_dim not in (
        None,
        config.head_dim,
    ):
        raise ValueError(f"{family}: rotary positions are 'half' pairs over the whole head.")
    if att.qkv_bias != att.out_bias or not ffn.gated or att.scale is not None:
        raise ValueError(f"{family}: attention biases all or none, a gated FFN, 1/sqrt(H).")
    if (norm.kind, norm.residual, norm.final) != ("rmsnorm", "pre", True):
        raise ValueError(f"{family}: pre-RMSNorm with a final norm.")
    if config.output.bias or config.output.scale != 1.0 or config.embed != type(config.embed)():
        raise ValueError(f"{family}: no output bias or scale, plain token embeddings.")


def config_to_hf(config: ModelConfig, family: str, architectures: tuple[str, str], heads: bool):
    """The LLaMA-shaped config.json of `config` (hf.save checks that it reads back)."""
    _check_llama_shaped(config, family)
    att = config.attention
    return {
        "model_type": family,
        "architectures": [architectures[0] if heads else architectures[1]],
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.ffn.d_ff,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": _HF_ACTIVATION_NAMES[config.ffn.activation],
        "max_position_embeddings": config.max_len,
        "initializer_range": config.init_std,
        "rms_norm_eps": config.norm.eps,
        "tie_word_embeddings": config.output.tie,
        "attention_bias": att.qkv_bias,
        "attention_dropout": att.dropout_rate,
        "mlp_bias": config.ffn.bias,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.positions.theta},
        "pretraining_tp": 1,
        "bos_token_id": 1,  # LLaMA's sentencepiece <s>, </s>
        "eos_token_id": 2,
    }


def to_hf_config(config: ModelConfig, heads: bool = True) -> dict:
    """ModelConfig -> LLaMA config.json."""
    return config_to_hf(config, HF_MODEL_TYPE, tuple(HF_ARCHITECTURES), heads)


def hf_name_table(config: ModelConfig, heads: bool) -> list:
    """Rows (HF tensor name, our parameter path, transform); `{p}` is HF_PREFIX or ""."""
    from transformer_jax.hf.table import Row, lm_head_rows

    layer, hf_layer, n = "decoder/layer_{i}", "{p}layers.{i}", "layers"
    att, hf_att = f"{layer}/self_attn", f"{hf_layer}.self_attn"
    rows = [
        Row("{p}embed_tokens.weight", "token_embed/embedding"),
        Row(f"{hf_layer}.input_layernorm.weight", f"{layer}/self_attn_norm/scale", "copy", n),
        Row(f"{hf_layer}.post_attention_layernorm.weight", f"{layer}/ffn_norm/scale", "copy", n),
        Row("{p}norm.weight", "decoder/final_norm/scale"),
    ]
    for hf_name, ours in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
        rows.append(Row(f"{hf_att}.{hf_name}.weight", f"{att}/{ours}/kernel", "linear_qkv", n))
        if config.attention.qkv_bias:
            rows.append(Row(f"{hf_att}.{hf_name}.bias", f"{att}/{ours}/bias", "flat", n))
    rows.append(Row(f"{hf_att}.o_proj.weight", f"{att}/out/kernel", "linear_out", n))
    if config.attention.out_bias:
        rows.append(Row(f"{hf_att}.o_proj.bias", f"{att}/out/bias", "copy", n))
    for hf_name, ours in (("gate_proj", "wi_gate"), ("up_proj", "wi"), ("down_proj", "wo")):
        rows.append(
            Row(f"{hf_layer}.mlp.{hf_name}.weight", f"{layer}/ffn/{ours}/kernel", "linear", n)
        )
        if config.ffn.bias:
            rows.append(
                Row(f"{hf_layer}.mlp.{hf_name}.bias", f"{layer}/ffn/{ours}/bias", "copy", n)
            )
    return rows + lm_head_rows(config, heads)
