"""XLNet (HF XLNetLMHeadModel / XLNetModel, model_type xlnet): permutation language modelling
with two-stream relative self-attention (arch="two_stream", nn/two_stream.py).

Transformer-XL relative positions ("bi": every token sees both directions, the masks decide
what is hidden), per-layer content/position/segment biases and a two-row segment table,
post-LN layers, exact-erf GELU feed-forward, a tied output with a [vocab] bias (HF lm_loss).
Train it with objective="plm" (data/objectives.py: a random factorisation order per example,
the last 1/K of it predicted through the query stream). Generation (sampling.generate)
appends a position no token can see and predicts it with the query stream, recomputing the
whole stack each step: HF's `generate(..., use_mems=False)`. HF's default `generate` reuses
`mems`, hidden states computed before the later tokens existed, and so departs from the
model's own definition (its tokens differ from a full recompute).
Segment recurrence (mems) for long documents is not implemented; `bi_data`, `attn_type="uni"`
and `same_length` configs are refused by the loader. XLNet's tokenizer pads on the left
(pad id 5); our models mask padding wherever it is.

| preset             | params (LM head / backbone) | reference                            |
|--------------------|-----------------------------|--------------------------------------|
| xlnet-base-cased   | 116,750,336 / 116,718,336   | HF XLNetLMHeadModel / XLNetModel     |
| xlnet-large-cased  | 360,300,800 / 360,268,800   | HF XLNetLMHeadModel / XLNetModel     |
| xlnet-tiny         | (tests/demos)               | 2 layers of width 64, FFN 128, pad 0 |
"""

from __future__ import annotations

from transformer_jax.config import (
    AttentionConfig,
    FeedForwardConfig,
    ModelConfig,
    NormConfig,
    OutputConfig,
    RelativeSinusoidalPositions,
)
from transformer_jax.families.tiny import TINY


def xlnet(
    d_model: int = 768, num_layers: int = 12, num_heads: int = 12, d_ff: int = 3072
) -> ModelConfig:
    return ModelConfig(
        arch="two_stream",
        vocab_size=32000,
        d_model=d_model,
        num_layers=num_layers,
        max_len=512,  # XLNet has no position limit; 512 is its pretraining length
        attention=AttentionConfig(num_heads=num_heads, qkv_bias=False, out_bias=False,
                                  dropout_rate=0.1),
        ffn=FeedForwardConfig(d_ff=d_ff, activation="gelu"),
        positions=RelativeSinusoidalPositions(clamp_len=-1),
        norm=NormConfig(residual="post", eps=1e-12),
        output=OutputConfig(tie=True, bias=True),
        dropout_rate=0.1,
        pad_id=5,  # <pad> of XLNet's spiece.model
    )  # fmt: skip


PRESETS: dict[str, ModelConfig] = {
    "xlnet-base-cased": xlnet(),
    "xlnet-large-cased": xlnet(d_model=1024, num_layers=24, num_heads=16, d_ff=4096),
    "xlnet-tiny": xlnet().override(
        {**TINY, "dropout_rate": 0.0, "attention.dropout_rate": 0.0, "pad_id": 0}
    ),  # pad 0: this library's sentencepiece tokenizer (data/tokenizer.py)
}


# ------------------------------------------------------------------- Hugging Face checkpoints
HF_MODEL_TYPE = "xlnet"
HF_PREFIX = "transformer."
HF_ARCHITECTURES = {"XLNetLMHeadModel": True, "XLNetModel": False}
HF_IGNORED_TENSORS = ()

_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "relu": "relu", "silu": "silu",
                   "swish": "silu"}  # fmt: skip
_HF_ACTIVATION_NAMES = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}


def from_hf_config(hf: dict) -> ModelConfig:
    """An xlnet config.json -> ModelConfig. Only the bidirectional, single-data, recompute
    form: attn_type "bi", bi_data false, same_length false; mems settings are ignored (this
    library recomputes instead of reusing mems)."""
    from transformer_jax.hf.strict import check_fields, choose

    check_fields(
        hf,
        "xlnet",
        understood={
            "vocab_size", "d_model", "n_layer", "n_head", "d_inner", "d_head", "ff_activation",
            "layer_norm_eps", "dropout", "clamp_len", "initializer_range", "pad_token_id",
            "tie_word_embeddings",
        },
        required={"attn_type": ("bi",), "bi_data": (False,), "same_length": (False,)},
        # mems (segment recurrence) and the SQuAD / summary heads: not part of the LM.
        ignored={"mem_len", "reuse_len", "use_mems_eval", "use_mems_train", "summary_type",
                 "summary_use_proj", "summary_activation", "summary_last_dropout",
                 "start_n_top", "end_n_top", "untie_r"},
    )  # fmt: skip
    d, heads = hf.get("d_model", 1024), hf.get("n_head", 16)
    if hf.get("d_head", d // heads) != d // heads:
        raise ValueError(f"xlnet config.json: d_head={hf['d_head']} != d_model // n_head.")
    if not hf.get("tie_word_embeddings", True):
        raise ValueError("xlnet config.json: tie_word_embeddings=false is not supported.")
    pad = hf.get("pad_token_id", 5)
    vocab = hf.get("vocab_size", 32000)
    dropout = hf.get("dropout", 0.1)
    return ModelConfig(
        arch="two_stream",
        vocab_size=vocab,
        d_model=d,
        num_layers=hf.get("n_layer", 24),
        max_len=512,
        attention=AttentionConfig(num_heads=heads, qkv_bias=False, out_bias=False,
                                  dropout_rate=dropout),
        ffn=FeedForwardConfig(
            d_ff=hf.get("d_inner", 4096),
            activation=choose("xlnet", "ff_activation", hf.get("ff_activation", "gelu"),
                              _HF_ACTIVATIONS),
        ),
        positions=RelativeSinusoidalPositions(clamp_len=hf.get("clamp_len", -1)),
        norm=NormConfig(residual="post", eps=hf.get("layer_norm_eps", 1e-12)),
        output=OutputConfig(tie=True, bias=True),
        dropout_rate=dropout,
        init_std=hf.get("initializer_range", 0.02),
        pad_id=pad if pad is not None and 0 <= pad < vocab else None,
    )  # fmt: skip


def to_hf_config(config: ModelConfig, heads: bool = True) -> dict:
    """ModelConfig -> xlnet config.json (hf.save checks that it reads back)."""
    if config.arch != "two_stream":
        raise ValueError(f"arch={config.arch!r} is not XLNet's 'two_stream'.")
    if config.head_dim * config.num_heads != config.d_model:
        raise ValueError("XLNet needs head_dim * num_heads == d_model.")
    return {
        "model_type": HF_MODEL_TYPE,
        "architectures": ["XLNetLMHeadModel" if heads else "XLNetModel"],
        "vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "n_layer": config.num_layers,
        "n_head": config.num_heads,
        "d_head": config.head_dim,
        "d_inner": config.ffn.d_ff,
        "ff_activation": _HF_ACTIVATION_NAMES[config.ffn.activation],
        "layer_norm_eps": config.norm.eps,
        "dropout": config.dropout_rate,
        "clamp_len": config.positions.clamp_len,
        "attn_type": "bi",
        "bi_data": False,
        "same_length": False,
        "initializer_range": config.init_std,
        "pad_token_id": config.pad_id,
        "tie_word_embeddings": True,
    }


def hf_name_table(config: ModelConfig, heads: bool) -> list:
    """Rows (HF tensor name, our parameter path, transform); `{p}` is HF_PREFIX or "".
    q/k/v/r are [D, N, H] in both (no transpose); o is [D, N, H] in HF, [N, H, D] here."""
    from transformer_jax.hf.table import Row, linear_rows, norm_rows

    layer, hf_layer, n = "encoder/layer_{i}", "{p}layer.{i}", "layers"
    attn, hf_attn = f"{layer}/self_attn", f"{hf_layer}.rel_attn"
    rows = [
        Row("{p}word_embedding.weight", "token_embed/embedding"),
        Row("{p}mask_emb", "encoder/mask_emb", "row3"),
        *(Row(f"{hf_attn}.{h}", f"{attn}/{o}/kernel", "copy", n)
          for h, o in (("q", "query"), ("k", "key"), ("v", "value"), ("r", "pos"))),
        Row(f"{hf_attn}.o", f"{attn}/out/kernel", "heads_out", n),
        *(Row(f"{hf_attn}.{b}", f"{attn}/{b}", "copy", n)
          for b in ("r_w_bias", "r_r_bias", "r_s_bias", "seg_embed")),
        *norm_rows(f"{hf_attn}.layer_norm", f"{layer}/self_attn_norm", n),
        *linear_rows(f"{hf_layer}.ff.layer_1", f"{layer}/ffn/wi", n),
        *linear_rows(f"{hf_layer}.ff.layer_2", f"{layer}/ffn/wo", n),
        *norm_rows(f"{hf_layer}.ff.layer_norm", f"{layer}/ffn_norm", n),
    ]  # fmt: skip
    if heads:
        rows += [
            Row("lm_loss.weight", "token_embed/embedding", alias=True),
            Row("lm_loss.bias", "logits_bias"),
        ]
    return rows
