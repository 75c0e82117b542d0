"""CodeGen (HF CodeGenForCausalLM): GPT-J's wiring, a parallel decoder x + attn(n(x)) +
mlp(n(x)) with one LayerNorm, interleaved rotary positions (pairs (2i, 2i+1), GPT-J's
rotate_every_two) on the first `rotary_dim` dims of each head, no attention biases, a
tanh-GELU feed-forward with biases, and an untied output WITH a bias.

Its fused `qkv_proj` is unusual: the 3*D outputs are 4 blocks (`mp_num`, a model-parallel
split baked into the layout), each holding [q | v | k] (value before key) for a quarter of
the heads; hf/table.py's `codegen_qkv` transform reads and writes it.

| preset            | params      | reference                                           |
|-------------------|-------------|-----------------------------------------------------|
| codegen-350m-mono | 356,712,448 | HF CodeGenForCausalLM (Salesforce/codegen-350M-mono) |
| codegen-tiny      | (tests)     | 2 layers of width 64, 4 heads of 16, rotary_dim 8   |
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


def codegen(
    d_model: int, num_layers: int, num_heads: int, rotary_dim: int, *, vocab_size: int = 51200
) -> ModelConfig:
    return ModelConfig(
        arch="decoder",
        vocab_size=vocab_size,
        d_model=d_model,
        num_layers=num_layers,
        max_len=2048,
        attention=AttentionConfig(
            num_heads=num_heads, qkv_bias=False, out_bias=False, dropout_rate=0.0
        ),
        ffn=FeedForwardConfig(d_ff=4 * d_model, activation="gelu_tanh"),
        positions=RotaryPositions(rotary_dim=rotary_dim, layout="interleaved"),
        norm=NormConfig(residual="parallel", parallel_norms=1, final=True),
        output=OutputConfig(tie=False, bias=True),
        dropout_rate=0.0,
        pad_id=None,
    )


PRESETS: dict[str, ModelConfig] = {
    "codegen-350m-mono": codegen(1024, 20, 16, 32),
    "codegen-tiny": codegen(64, 2, 4, 8).override(TINY),
}


# ------------------------------------------------------------------- Hugging Face checkpoints
HF_MODEL_TYPE = "codegen"
HF_PREFIX = "transformer."
HF_ARCHITECTURES = {"CodeGenForCausalLM": True, "CodeGenModel": False}
HF_IGNORED_TENSORS = (r"(^|\.)attn\.(causal_mask|masked_bias|bias)$",)  # old files' buffers

_HF_ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
}
_HF_ACTIVATION_NAMES = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}


def from_hf_config(hf: dict) -> ModelConfig:
    """A CodeGen config.json -> ModelConfig."""
    from transformer_jax.hf.strict import check_fields, choose
    from transformer_jax.hf.table import CODEGEN_MP

    check_fields(
        hf,
        "codegen",
        understood={
            "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "rotary_dim", "n_inner",
            "activation_function", "resid_pdrop", "attn_pdrop", "layer_norm_epsilon",
            "initializer_range",
        },
        required={"tie_word_embeddings": (False,), "is_decoder": (False, True)},
        # n_ctx and scale_attn_weights: read by no CodeGen code (it always scales by
        # 1/sqrt(head_dim)); summary_*: heads of other classes.
        ignored={"n_ctx", "embd_pdrop", "scale_attn_weights", "summary_type", "summary_use_proj",
                 "summary_activation", "summary_proj_to_labels", "summary_first_dropout"},
    )  # fmt: skip
    d, heads = hf.get("n_embd", 4096), hf.get("n_head", 16)
    rotary_dim = hf.get("rotary_dim", 64)
    if rotary_dim is None:
        raise ValueError(
            "codegen config.json: rotary_dim=None is not supported (HF's CodeGen then builds "
            "its sin/cos tables at the model width, not the head size); set rotary_dim."
        )
    if heads % CODEGEN_MP:
        raise ValueError(
            f"codegen config.json: n_head={heads} is not a multiple of {CODEGEN_MP}; "
            f"CodeGen's fused qkv_proj is split into {CODEGEN_MP} blocks of heads."
        )
    return ModelConfig(
        arch="decoder",
        vocab_size=hf.get("vocab_size", 50400),
        d_model=d,
        num_layers=hf.get("n_layer", 28),
        max_len=hf.get("n_positions", 2048),
        attention=AttentionConfig(
            num_heads=heads,
            qkv_bias=False,
            out_bias=False,
            dropout_rate=hf.get("attn_pdrop", 0.0),
        ),
        ffn=FeedForwardConfig(
            d_ff=hf.get("n_inner") or 4 * d,
            activation=choose(
                "codegen",
                "activation_function",
                hf.get("activation_function", "gelu_new"),
                _HF_ACTIVATIONS,
            ),
        ),
        positions=RotaryPositions(rotary_dim=rotary_dim, layout="interleaved"),
        norm=NormConfig(
            eps=hf.get("layer_norm_epsilon", 1e-5),
            residual="parallel",
            parallel_norms=1,
            final=True,
        ),
        output=OutputConfig(tie=False, bias=True),
        dropout_rate=hf.get("resid_pdrop", 0.0),
        init_std=hf.get("initializer_range", 0.02),
        pad_id=None,
    )


def to_hf_config(config: ModelConfig, heads: bool = True) -> dict:
    """ModelConfig -> CodeGen config.json (hf.save checks that it reads back as `config`)."""
    pos = config.positions
    if not isinstance(pos, RotaryPositions) or pos.theta != 10000.0:
        raise ValueError("codegen: rotary positions with theta 10000 are needed.")
    return {
        "model_type": HF_MODEL_TYPE,
        "architectures": ["CodeGenForCausalLM" if heads else "CodeGenModel"],
        "vocab_size": config.vocab_size,
        "n_positions": config.max_len,
        "n_ctx": config.max_len,
        "n_embd": config.d_model,
        "n_layer": config.num_layers,
        "n_head": config.num_heads,
        "rotary_dim": pos.rotary_dim or config.head_dim,
        "n_inner": config.ffn.d_ff,
        "activation_function": _HF_ACTIVATION_NAMES[config.ffn.activation],
        "resid_pdrop": config.dropout_rate,
        "embd_pdrop": config.dropout_rate,
        "attn_pdrop": config.attention.dropout_rate,
        "layer_norm_epsilon": config.norm.eps,
        "initializer_range": config.init_std,
        "tie_word_embeddings": False,
        # GPT-2's <|endoftext|>, which CodeGen's tokenizer keeps (none in a smaller vocabulary)
        "bos_token_id": 50256 if config.vocab_size > 50256 else None,
        "eos_token_id": 50256 if config.vocab_size > 50256 else None,
    }


def hf_name_table(config: ModelConfig, heads: bool) -> list:
    """Rows (HF tensor name, our parameter path, transform); `{p}` is HF_PREFIX or ""."""
    from transformer_jax.hf.table import Row, linear_rows, norm_rows

    layer, hf_layer, n = "decoder/layer_{i}", "{p}h.{i}", "layers"
    qkv = tuple(f"{layer}/self_attn/{x}/kernel" for x in ("query", "key", "value"))
    rows = [
        Row("{p}wte.weight", "token_embed/embedding"),
        *norm_rows(f"{hf_layer}.ln_1", f"{layer}/self_attn_norm", n),
        Row(f"{hf_layer}.attn.qkv_proj.weight", qkv, "codegen_qkv", n),
        Row(f"{hf_layer}.attn.out_proj.weight", f"{layer}/self_attn/out/kernel", "linear_out", n),
        *linear_rows(f"{hf_layer}.mlp.fc_in", f"{layer}/ffn/wi", n),
        *linear_rows(f"{hf_layer}.mlp.fc_out", f"{layer}/ffn/wo", n),
        *norm_rows("{p}ln_f", "decoder/final_norm"),
    ]
    if heads:
        rows += linear_rows("lm_head", "lm_head")
    return rows
