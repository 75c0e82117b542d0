"""GPT-2 (HF GPT2LMHeadModel): a pre-LN decoder with learned positions and a tied output.

| preset       | params        | reference                      |
|--------------|---------------|--------------------------------|
| gpt2-small   | 124,439,808   | HF GPT2LMHeadModel (tied)      |
| gpt2-medium  | 354,823,168   |                                |
| gpt2-large   | 774,030,080   |                                |
| gpt2-xl      | 1,557,611,200 |                                |
| gpt-tiny     | (tests/demos) | 2 layers of width 64, pad id 0 |
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


def gpt2(d_model: int, num_layers: int, num_heads: int) -> ModelConfig:
    return ModelConfig(
        arch="decoder",
        vocab_size=50257,
        d_model=d_model,
        num_layers=num_layers,
        max_len=1024,
        attention=AttentionConfig(num_heads=num_heads, dropout_rate=0.1),
        ffn=FeedForwardConfig(d_ff=4 * d_model, activation="gelu_tanh"),
        positions=LearnedPositions(),
        norm=NormConfig(residual="pre", final=True),
        output=OutputConfig(tie=True),
        dropout_rate=0.1,
        pad_id=None,  # GPT-2's vocabulary has no pad token
    )


PRESETS: dict[str, ModelConfig] = {
    "gpt2-small": gpt2(768, 12, 12),
    "gpt2-medium": gpt2(1024, 24, 16),
    "gpt2-large": gpt2(1280, 36, 20),
    "gpt2-xl": gpt2(1600, 48, 25),
    "gpt-tiny": gpt2(64, 2, 4).override({**TINY, "pad_id": 0}),
}


# ------------------------------------------------------------------- Hugging Face checkpoints
HF_MODEL_TYPE = "gpt2"
HF_PREFIX = "transformer."  # the backbone's prefix in head classes (older files omit it)
HF_ARCHITECTURES = {"GPT2LMHeadModel": True, "GPT2Model": False}  # class -> has its heads
HF_IGNORED_TENSORS = (r"(^|\.)h\.\d+\.attn\.(masked_)?bias$",)  # causal-mask buffers (old files)

_HF_ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
_HF_ACTIVATION_NAMES = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}


def from_hf_config(hf: dict) -> ModelConfig:
    """A GPT-2 config.json -> ModelConfig (GPT-2 has no pad token: pad_id=None)."""
    from transformer_jax.hf.strict import check_fields, choose

    check_fields(
        hf,
        "gpt2",
        understood={
            "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner",
            "activation_function", "layer_norm_epsilon", "tie_word_embeddings",
            "scale_attn_weights", "attn_pdrop", "resid_pdrop", "initializer_range", "n_ctx",
        },
        required={
            "scale_attn_by_inverse_layer_idx": (False,),
            "reorder_and_upcast_attn": (False,),
            "add_cross_attention": (False,),
            "is_decoder": (False, True),
        },
        ignored={"embd_pdrop", "summary_type", "summary_use_proj", "summary_activation",
                 "summary_proj_to_labels", "summary_first_dropout"},  # fmt: skip
    )  # fmt: skip
    d = hf.get("n_embd", 768)
    return ModelConfig(
        arch="decoder",
        vocab_size=hf.get("vocab_size", 50257),
        d_model=d,
        num_layers=hf.get("n_layer", 12),
        max_len=hf.get("n_positions", 1024),
        attention=AttentionConfig(
            num_heads=hf.get("n_head", 12),
            scale=None if hf.get("scale_attn_weights", True) else 1.0,
            dropout_rate=hf.get("attn_pdrop", 0.1),
        ),
        ffn=FeedForwardConfig(
            d_ff=hf.get("n_inner") or 4 * d,
            activation=choose(
                "gpt2",
                "activation_function",
                hf.get("activation_function", "gelu_new"),
                _HF_ACTIVATIONS,
            ),
        ),  # fmt: skip
        positions=LearnedPositions(),
        norm=NormConfig(residual="pre", final=True, eps=hf.get("layer_norm_epsilon", 1e-5)),
        output=OutputConfig(tie=hf.get("tie_word_embeddings", True)),
        dropout_rate=hf.get("resid_pdrop", 0.1),
        init_std=hf.get("initializer_range", 0.02),
        pad_id=None,
    )


def to_hf_config(config: ModelConfig, heads: bool = True) -> dict:
    """ModelConfig -> GPT-2 config.json (hf.save checks that it reads back as `config`)."""
    return {
        "model_type": HF_MODEL_TYPE,
        "architectures": ["GPT2LMHeadModel" if heads else "GPT2Model"],
        "vocab_size": config.vocab_size,
        "n_positions": config.max_len,
        "n_embd": config.d_model,
        "n_layer": config.num_layers,
        "n_head": config.num_heads,
        "n_inner": config.ffn.d_ff,
        "activation_function": _HF_ACTIVATION_NAMES[config.ffn.activation],
        "layer_norm_epsilon": config.norm.eps,
        "tie_word_embeddings": config.output.tie,
        "scale_attn_weights": config.attention.scale is None,
        "attn_pdrop": config.attention.dropout_rate,
        "resid_pdrop": config.dropout_rate,
        "embd_pdrop": config.dropout_rate,
        "initializer_range": config.init_std,
        "bos_token_id": config.vocab_size - 1,  # GPT-2's <|endoftext|> is the last id
        "eos_token_id": config.vocab_size - 1,
    }


def hf_name_table(config: ModelConfig, heads: bool) -> list:
    """Rows (HF tensor name, our parameter path, transform); `{p}` is HF_PREFIX or ""."""
    from transformer_jax.hf.table import Row, lm_head_rows, norm_rows

    layer, hf_layer, n = "decoder/layer_{i}", "{p}h.{i}", "layers"
    rows = [
        Row("{p}wte.weight", "token_embed/embedding"),
        Row("{p}wpe.weight", "decoder/embed/pos_embed/embedding"),
        *conv1d_layer_rows(hf_layer, layer, n),
        *norm_rows(f"{hf_layer}.ln_1", f"{layer}/self_attn_norm", n),
        *norm_rows(f"{hf_layer}.ln_2", f"{layer}/ffn_norm", n),
        *norm_rows("{p}ln_f", "decoder/final_norm"),
    ]
    return rows + lm_head_rows(config, heads)


def conv1d_layer_rows(hf_layer: str, layer: str, n: str) -> list:
    """The attention and MLP of one OpenAI-style layer stored as Conv1Ds ([in, out] weights;
    q|k|v fused in `attn.c_attn`): GPT-2 and GPT-1."""
    from transformer_jax.hf.table import Row

    qkv = tuple(f"{layer}/self_attn/{x}" for x in ("query", "key", "value"))
    return [
        Row(f"{hf_layer}.attn.c_attn.weight", tuple(f"{q}/kernel" for q in qkv), "conv_qkv", n),
        Row(f"{hf_layer}.attn.c_attn.bias", tuple(f"{q}/bias" for q in qkv), "fused_flat", n),
        Row(f"{hf_layer}.attn.c_proj.weight", f"{layer}/self_attn/out/kernel", "conv_out", n),
        Row(f"{hf_layer}.attn.c_proj.bias", f"{layer}/self_attn/out/bias", "copy", n),
        Row(f"{hf_layer}.mlp.c_fc.weight", f"{layer}/ffn/wi/kernel", "copy", n),
        Row(f"{hf_layer}.mlp.c_fc.bias", f"{layer}/ffn/wi/bias", "copy", n),
        Row(f"{hf_layer}.mlp.c_proj.weight", f"{layer}/ffn/wo/kernel", "copy", n),
        Row(f"{hf_layer}.mlp.c_proj.bias", f"{layer}/ffn/wo/bias", "copy", n),
    ]
