"""GPT-1 (HF OpenAIGPTLMHeadModel, model_type openai-gpt): the post-LN decoder of "Improving
Language Understanding by Generative Pre-Training": learned positions (512), a norm after each
residual sum (x = norm(x + f(x))), no norm after the last layer, tanh-GELU (HF's `afn: "gelu"`
is gelu_new), biases everywhere, a tied output. Its fused `c_attn` is a Conv1D [D, 3*D] like
GPT-2's.

| preset    | params        | reference                                             |
|-----------|---------------|-------------------------------------------------------|
| gpt1      | 116,534,784   | HF OpenAIGPTLMHeadModel at its default config (V 40,478) |
| gpt1-tiny | (tests/demos) | 2 post-LN layers of width 64, FFN 256                 |
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
from transformer_jax.families import gpt2
from transformer_jax.families.tiny import TINY


def gpt1(d_model: int = 768, num_layers: int = 12, num_heads: int = 12) -> ModelConfig:
    return ModelConfig(
        arch="decoder",
        vocab_size=40478,
        d_model=d_model,
        num_layers=num_layers,
        max_len=512,
        attention=AttentionConfig(num_heads=num_heads, dropout_rate=0.1),
        ffn=FeedForwardConfig(d_ff=4 * d_model, activation="gelu_tanh"),
        positions=LearnedPositions(),
        norm=NormConfig(residual="post", final=False),
        output=OutputConfig(tie=True),
        dropout_rate=0.1,
        pad_id=None,  # GPT-1's vocabulary has no pad token
    )


PRESETS: dict[str, ModelConfig] = {
    "gpt1": gpt1(),
    # d_ff 4 * 64 (HF's OpenAIGPT has no other FFN width, so the tiny model saves as HF).
    "gpt1-tiny": gpt1().override(
        {**TINY, "ffn.d_ff": 256, "dropout_rate": 0.0, "attention.dropout_rate": 0.0}
    ),
}


# ------------------------------------------------------------------- Hugging Face checkpoints
HF_MODEL_TYPE = "openai-gpt"
HF_PREFIX = "transformer."
HF_ARCHITECTURES = {"OpenAIGPTLMHeadModel": True, "OpenAIGPTModel": False}
# Causal-mask and position-id buffers of older files.
HF_IGNORED_TENSORS = (r"(^|\.)h\.\d+\.attn\.bias$", r"(^|\.)position_ids$")

# OpenAI GPT's own activation table (modeling_openai.ACT_FNS): "gelu" is the tanh form.
_HF_ACTIVATIONS = {"gelu": "gelu_tanh", "relu": "relu", "silu": "silu", "swish": "silu"}
_HF_ACTIVATION_NAMES = {"gelu_tanh": "gelu", "relu": "relu", "silu": "silu"}


def from_hf_config(hf: dict) -> ModelConfig:
    """An openai-gpt config.json -> ModelConfig (no pad token: pad_id=None)."""
    from transformer_jax.hf.strict import check_fields, choose

    check_fields(
        hf,
        "openai-gpt",
        understood={
            "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "afn",
            "layer_norm_epsilon", "tie_word_embeddings", "attn_pdrop", "resid_pdrop",
            "initializer_range", "n_ctx",
        },
        # n_special: extra special-token rows of old files, counted outside vocab_size.
        required={"is_decoder": (False, True), "add_cross_attention": (False,), "n_special": (0,)},
        # The double-heads model's multiple-choice head: not part of the LM.
        ignored={"embd_pdrop", "summary_type", "summary_use_proj", "summary_activation",
                 "summary_proj_to_labels", "summary_first_dropout", "predict_special_tokens"},
    )  # fmt: skip
    d = hf.get("n_embd", 768)
    return ModelConfig(
        arch="decoder",
        vocab_size=hf.get("vocab_size", 40478),
        d_model=d,
        num_layers=hf.get("n_layer", 12),
        max_len=hf.get("n_positions", 512),
        attention=AttentionConfig(
            num_heads=hf.get("n_head", 12), dropout_rate=hf.get("attn_pdrop", 0.1)
        ),
        ffn=FeedForwardConfig(
            d_ff=4 * d,  # HF's MLP is always 4 * n_embd wide
            activation=choose("openai-gpt", "afn", hf.get("afn", "gelu"), _HF_ACTIVATIONS),
        ),
        positions=LearnedPositions(),
        norm=NormConfig(residual="post", final=False, eps=hf.get("layer_norm_epsilon", 1e-5)),
        output=OutputConfig(tie=bool(hf.get("tie_word_embeddings", True))),
        dropout_rate=hf.get("resid_pdrop", 0.1),
        init_std=hf.get("initializer_range", 0.02),
        pad_id=None,
    )


def to_hf_config(config: ModelConfig, heads: bool = True) -> dict:
    """ModelConfig -> openai-gpt config.json (hf.save checks that it reads back)."""
    return {
        "model_type": HF_MODEL_TYPE,
        "architectures": ["OpenAIGPTLMHeadModel" if heads else "OpenAIGPTModel"],
        "vocab_size": config.vocab_size,
        "n_positions": config.max_len,
        "n_embd": config.d_model,
        "n_layer": config.num_layers,
        "n_head": config.num_heads,
        "afn": _HF_ACTIVATION_NAMES[config.ffn.activation],
        "layer_norm_epsilon": config.norm.eps,
        "tie_word_embeddings": config.output.tie,
        "attn_pdrop": config.attention.dropout_rate,
        "resid_pdrop": config.dropout_rate,
        "embd_pdrop": config.dropout_rate,
        "initializer_range": config.init_std,
    }


def hf_name_table(config: ModelConfig, heads: bool) -> list:
    """Rows (HF tensor name, our parameter path, transform); `{p}` is HF_PREFIX or "".
    Post-LN: HF's ln_1 follows the attention residual (our self_attn_norm), ln_2 the
    feed-forward one (our ffn_norm)."""
    from transformer_jax.hf.table import Row, lm_head_rows, norm_rows

    layer, hf_layer, n = "decoder/layer_{i}", "{p}h.{i}", "layers"
    rows = [
        Row("{p}tokens_embed.weight", "token_embed/embedding"),
        Row("{p}positions_embed.weight", "decoder/embed/pos_embed/embedding"),
        *gpt2.conv1d_layer_rows(hf_layer, layer, n),
        *norm_rows(f"{hf_layer}.ln_1", f"{layer}/self_attn_norm", n),
        *norm_rows(f"{hf_layer}.ln_2", f"{layer}/ffn_norm", n),
    ]
    return rows + lm_head_rows(config, heads)
