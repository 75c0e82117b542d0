"""StarCoder / SantaCoder (HF GPTBigCodeForCausalLM, model_type gpt_bigcode): GPT-2's wiring
(pre-LN, learned positions, tanh-GELU, biases everywhere, tied output) with multi-query
attention: one key/value head. Its fused `c_attn` is a torch Linear [D + 2*H, D] holding
q | k | v along the outputs (GPT-2's c_attn is a Conv1D [D, 3*D]).

| preset           | params        | reference                                          |
|------------------|---------------|----------------------------------------------------|
| starcoderbase-1b | 1,137,207,296 | HF GPTBigCodeForCausalLM (bigcode/starcoderbase-1b) |
| starcoder-tiny   | (tests/demos) | 2 layers of width 64, 4 query heads, 1 KV head      |
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


def starcoder(
    d_model: int,
    num_layers: int,
    num_heads: int,
    *,
    vocab_size: int = 49152,
    max_len: int = 8192,
) -> ModelConfig:
    return ModelConfig(
        arch="decoder",
        vocab_size=vocab_size,
        d_model=d_model,
        num_layers=num_layers,
        max_len=max_len,
        attention=AttentionConfig(num_heads=num_heads, num_kv_heads=1, dropout_rate=0.1),
        ffn=FeedForwardConfig(d_ff=4 * d_model, activation="gelu_tanh"),
        positions=LearnedPositions(),
        norm=NormConfig(residual="pre", final=True),
        output=OutputConfig(tie=True),
        dropout_rate=0.1,  # as published (attn_pdrop, resid_pdrop)
        pad_id=None,
    )


PRESETS: dict[str, ModelConfig] = {
    "starcoderbase-1b": starcoder(2048, 24, 16),
    "starcoder-tiny": starcoder(64, 2, 4).override(
        {**TINY, "dropout_rate": 0.0, "attention.dropout_rate": 0.0}
    ),
}


# ------------------------------------------------------------------- Hugging Face checkpoints
HF_MODEL_TYPE = "gpt_bigcode"
HF_PREFIX = "transformer."
HF_ARCHITECTURES = {"GPTBigCodeForCausalLM": True, "GPTBigCodeModel": False}
HF_IGNORED_TENSORS = (r"(^|\.)attn\.(masked_)?bias$",)  # causal-mask buffers of old files

_HF_ACTIVATIONS = {
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
}
_HF_ACTIVATION_NAMES = {
    "gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu", "relu": "relu", "silu": "silu"
}  # fmt: skip


def from_hf_config(hf: dict) -> ModelConfig:
    """A GPTBigCode config.json -> ModelConfig (multi-query only)."""
    from transformer_jax.hf.strict import check_fields, choose

    check_fields(
        hf,
        "gpt_bigcode",
        understood={
            "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner",
            "activation_function", "resid_pdrop", "attn_pdrop", "layer_norm_epsilon",
            "initializer_range", "scale_attn_weights", "tie_word_embeddings",
            "num_key_value_heads",
        },
        required={
            "multi_query": (True,),
            "add_cross_attention": (False,),
            "is_decoder": (False, True),
        },
        # Softmax precision switches: every computation here is float32 already.
        # bigcode's Megatron inference-runner settings (inference_runner, ...) and summary_*
        # heads of other classes: read by no GPTBigCodeForCausalLM code.
        ignored={"embd_pdrop", "attention_softmax_in_fp32", "scale_attention_softmax_in_fp32",
                 "n_ctx", "inference_runner", "max_batch_size", "max_sequence_length",
                 "pad_key_length", "pre_allocate_kv_cache", "validate_runner_input",
                 "summary_type", "summary_use_proj", "summary_activation",
                 "summary_proj_to_labels", "summary_first_dropout"},  # fmt: skip
    )  # fmt: skip
    if hf.get("num_key_value_heads", 1) != 1:
        raise ValueError(
            f"gpt_bigcode config.json: num_key_value_heads={hf['num_key_value_heads']!r} "
            "contradicts multi_query=true (one key/value head)."
        )
    d = hf.get("n_embd", 768)
    return ModelConfig(
        arch="decoder",
        vocab_size=hf.get("vocab_size", 50257),
        d_model=d,
        num_layers=hf.get("n_layer", 12),
        max_len=hf.get("n_positions", 1024),
        attention=AttentionConfig(
            num_heads=hf.get("n_head", 12),
            num_kv_heads=1,
            scale=None if hf.get("scale_attn_weights", True) else 1.0,
            dropout_rate=hf.get("attn_pdrop", 0.1),
        ),
        ffn=FeedForwardConfig(
            d_ff=hf.get("n_inner") or 4 * d,
            activation=choose(
                "gpt_bigcode",
                "activation_function",
                hf.get("activation_function", "gelu_pytorch_tanh"),
                _HF_ACTIVATIONS,
            ),
        ),
        positions=LearnedPositions(),
        norm=NormConfig(eps=hf.get("layer_norm_epsilon", 1e-5), residual="pre", final=True),
        output=OutputConfig(tie=bool(hf.get("tie_word_embeddings", True))),
        dropout_rate=hf.get("resid_pdrop", 0.1),
        init_std=hf.get("initializer_range", 0.02),
        pad_id=None,
    )


def to_hf_config(config: ModelConfig, heads: bool = True) -> dict:
    """ModelConfig -> GPTBigCode config.json (hf.save checks that it reads back)."""
    return {
        "model_type": HF_MODEL_TYPE,
        "architectures": ["GPTBigCodeForCausalLM" if heads else "GPTBigCodeModel"],
        "vocab_size": config.vocab_size,
        "n_positions": config.max_len,
        "n_embd": config.d_model,
        "n_layer": config.num_layers,
        "n_head": config.num_heads,
        "n_inner": config.ffn.d_ff,
        "multi_query": True,
        "activation_function": _HF_ACTIVATION_NAMES[config.ffn.activation],
        "resid_pdrop": config.dropout_rate,
        "embd_pdrop": config.dropout_rate,
        "attn_pdrop": config.attention.dropout_rate,
        "layer_norm_epsilon": config.norm.eps,
        "initializer_range": config.init_std,
        "scale_attn_weights": config.attention.scale is None,
        "tie_word_embeddings": config.output.tie,
        "bos_token_id": 0,  # StarCoder's <|endoftext|>
        "eos_token_id": 0,
    }


def hf_name_table(config: ModelConfig, heads: bool) -> list:
    """Rows (HF tensor name, our parameter path, transform); `{p}` is HF_PREFIX or ""."""
    from transformer_jax.hf.table import Row, linear_rows, lm_head_rows, norm_rows

    layer, hf_layer, n = "decoder/layer_{i}", "{p}h.{i}", "layers"
    qkv = tuple(f"{layer}/self_attn/{x}" for x in ("query", "key", "value"))
    rows = [
        Row("{p}wte.weight", "token_embed/embedding"),
        Row("{p}wpe.weight", "decoder/embed/pos_embed/embedding"),
        *norm_rows(f"{hf_layer}.ln_1", f"{layer}/self_attn_norm", n),
        Row(f"{hf_layer}.attn.c_attn.weight", tuple(f"{q}/kernel" for q in qkv),
            "linear_fused_qkv", n),
        Row(f"{hf_layer}.attn.c_attn.bias", tuple(f"{q}/bias" for q in qkv), "fused_flat", n),
        Row(f"{hf_layer}.attn.c_proj.weight", f"{layer}/self_attn/out/kernel", "linear_out", n),
        Row(f"{hf_layer}.attn.c_proj.bias", f"{layer}/self_attn/out/bias", "copy", n),
        *norm_rows(f"{hf_layer}.ln_2", f"{layer}/ffn_norm", n),
        *linear_rows(f"{hf_layer}.mlp.c_fc", f"{layer}/ffn/wi", n),
        *linear_rows(f"{hf_layer}.mlp.c_proj", f"{layer}/ffn/wo", n),
        *norm_rows("{p}ln_f", "decoder/final_norm"),
    ]  # fmt: skip
    return rows + lm_head_rows(config, heads)
