"""T5 (HF T5ForConditionalGeneration): a pre-norm encoder-decoder with T5's relative position
bias (learned log-spaced buckets, bidirectional in the encoder, causal in the decoder, one
table per stack), no 1/sqrt(d) score scaling, RMS norms without mean or bias, a final norm
on both stacks, no biases anywhere.

v1.0 (t5-small, t5-base): ReLU feed-forward, output tied to the token table with the hidden
states rescaled by d_model^-0.5. v1.1 / Flan-T5 / mT5: gated tanh-GELU (`gated-gelu`) and an
untied `lm_head` without the rescale. The decoder starts with the pad id itself (0): pass the
targets' validity (`tgt_valid`, or packed segment ids) to a teacher-forced call.

| preset        | params      | reference                                                |
|---------------|-------------|----------------------------------------------------------|
| t5-small      | 60,506,624  | HF T5ForConditionalGeneration (v1.0, tied)               |
| t5-base       | 222,903,552 | HF T5ForConditionalGeneration (v1.0, tied)               |
| flan-t5-base  | 247,577,856 | HF T5ForConditionalGeneration (gated GELU, untied head)  |
| t5-tiny       | (tests)     | 2 + 2 layers of width 64, v1.0 wiring                    |

Every preset is the whole seq2seq model (both stacks, the relative-bias tables, the output
projection); mT5 lives in families/mt5.py (its own HF model_type).
"""

from __future__ import annotations

from transformer_jax.config import (
    AttentionConfig,
    FeedForwardConfig,
    ModelConfig,
    NormConfig,
    OutputConfig,
    RelativePositions,
)
from transformer_jax.families.tiny import TINY


def t5(
    d_model: int,
    num_layers: int,
    num_heads: int,
    d_ff: int,
    *,
    head_dim: int = 64,
    gated: bool = False,
    vocab_size: int = 32128,
    num_decoder_layers: int | None = None,
) -> ModelConfig:
    """v1.0 wiring (ReLU, tied, rescaled); `gated=True`: v1.1 (gated GELU, untied head)."""
    return ModelConfig(
        arch="encoder_decoder",
        vocab_size=vocab_size,
        d_model=d_model,
        num_layers=num_layers,
        num_decoder_layers=num_layers if num_decoder_layers is None else num_decoder_layers,
        max_len=512,  # no position table: only the cache size and inputs are limited by it
        attention=AttentionConfig(
            num_heads=num_heads,
            head_dim=head_dim,
            scale=1.0,
            qkv_bias=False,
            out_bias=False,
            dropout_rate=0.1,
        ),
        ffn=FeedForwardConfig(
            d_ff=d_ff, activation="gelu_tanh" if gated else "relu", gated=gated, bias=False
        ),
        positions=RelativePositions(num_buckets=32, max_distance=128),
        norm=NormConfig(kind="rmsnorm", eps=1e-6, residual="pre", final=True),
        output=OutputConfig(tie=False) if gated else OutputConfig(tie=True, scale=d_model**-0.5),
        dropout_rate=0.1,
        pad_id=0,  # T5's <pad>, also the decoder start
    )


PRESETS: dict[str, ModelConfig] = {
    "t5-small": t5(512, 6, 8, 2048),
    "t5-base": t5(768, 12, 12, 3072),
    "flan-t5-base": t5(768, 12, 12, 2048, gated=True),
    "t5-tiny": t5(64, 2, 4, 128, head_dim=16).override({**TINY, "output.scale": 64**-0.5}),
}


# ------------------------------------------------------------------- Hugging Face checkpoints
HF_MODEL_TYPE = "t5"
HF_PREFIX = ""  # T5 names its tensors without a backbone prefix
HF_ARCHITECTURES = {"T5ForConditionalGeneration": True, "T5Model": False}
# HF keeps ignoring a cross-attention relative table some old files carry (never used).
HF_IGNORED_TENSORS = (r"^decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias",)

_HF_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "silu": "silu"}
_HF_ACTIVATION_NAMES = {v: k for k, v in _HF_ACTIVATIONS.items()}
_UNDERSTOOD = {
    "vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
    "relative_attention_num_buckets", "relative_attention_max_distance", "dropout_rate",
    "layer_norm_epsilon", "feed_forward_proj", "dense_act_fn", "is_gated_act", "pad_token_id",
    "tie_word_embeddings", "scale_decoder_outputs", "n_positions", "initializer_factor",
}  # fmt: skip


def _feed_forward(family: str, hf: dict) -> tuple[str, bool]:
    """(activation, gated) from feed_forward_proj ("relu", "gated-gelu", ...), checked
    against the derived dense_act_fn / is_gated_act that 5.x configs also write."""
    from transformer_jax.hf.strict import choose

    proj = hf.get("feed_forward_proj", "gated-gelu" if family == "mt5" else "relu")
    parts = proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
        raise ValueError(f"{family} config.json: feed_forward_proj={proj!r} is not supported.")
    gated = len(parts) == 2
    act_name = "gelu_new" if proj == "gated-gelu" else parts[-1]
    activation = choose(family, "feed_forward_proj", act_name, _HF_ACTIVATIONS)
    for key, expected in (("dense_act_fn", act_name), ("is_gated_act", gated)):
        if key in hf and hf[key] != expected:
            raise ValueError(
                f"{family} config.json: {key}={hf[key]!r} contradicts feed_forward_proj="
                f"{proj!r} (which means {key}={expected!r})."
            )
    return activation, gated


def from_hf_config(hf: dict, family: str = HF_MODEL_TYPE) -> ModelConfig:
    """A T5 (or mT5) config.json -> ModelConfig. Tying: `tie_word_embeddings` here; a file
    with its own lm_head.weight is untied whatever the config says (hf_from_tensors), since
    transformers 5 writes tie_word_embeddings=true for every T5. The d_model^-0.5 rescale:
    `scale_decoder_outputs` (5.x files), else tie_word_embeddings (4.x files); mT5 never."""
    from transformer_jax.hf.strict import check_fields

    check_fields(
        hf,
        family,
        understood=_UNDERSTOOD,
        required={"is_decoder": (False,), "is_encoder_decoder": (True,)},
        ignored={"classifier_dropout"},
    )
    d_model = hf.get("d_model", 512)
    tie = hf.get("tie_word_embeddings", family != "mt5") is not False
    if family == "mt5":
        rescale = False
    else:
        rescale = bool(hf.get("scale_decoder_outputs", tie))
    activation, gated = _feed_forward(family, hf)
    num_layers = hf.get("num_layers", 8 if family == "mt5" else 6)
    dropout = hf.get("dropout_rate", 0.1)
    return ModelConfig(
        arch="encoder_decoder",
        vocab_size=hf.get("vocab_size", 250112 if family == "mt5" else 32128),
        d_model=d_model,
        num_layers=num_layers,
        num_decoder_layers=hf.get("num_decoder_layers") or num_layers,
        max_len=hf.get("n_positions", 512),
        attention=AttentionConfig(
            num_heads=hf.get("num_heads", 6 if family == "mt5" else 8),
            head_dim=hf.get("d_kv", 64),
            scale=1.0,
            qkv_bias=False,
            out_bias=False,
            dropout_rate=dropout,
        ),
        ffn=FeedForwardConfig(
            d_ff=hf.get("d_ff", 1024 if family == "mt5" else 2048),
            activation=activation,
            gated=gated,
            bias=False,
        ),
        positions=RelativePositions(
            num_buckets=hf.get("relative_attention_num_buckets", 32),
            max_distance=hf.get("relative_attention_max_distance", 128),
        ),
        norm=NormConfig(
            kind="rmsnorm", eps=hf.get("layer_norm_epsilon", 1e-6), residual="pre", final=True
        ),
        output=OutputConfig(tie=tie, scale=d_model**-0.5 if rescale else 1.0),
        dropout_rate=dropout,
        pad_id=hf.get("pad_token_id", 0),
    )


def hf_from_tensors(config: ModelConfig, names: set[str]) -> ModelConfig:
    """An lm_head.weight in the file means an untied head (v1.1, Flan-T5, mT5)."""
    return config.replace(output={"tie": "lm_head.weight" not in names})


def _check_expressible(config: ModelConfig, family: str) -> None:
    """ValueError unless T5's HF class computes exactly `config`."""
    att, ffn, norm = config.attention, config.ffn, config.norm
    want = {
        "arch": (config.arch, "encoder_decoder"),
        "positions.kind": (config.positions.kind, "relative"),
        "attention.scale": (att.scale, 1.0),
        "attention.qkv_bias": (att.qkv_bias, False),
        "attention.out_bias": (att.out_bias, False),
        "attention.num_kv_heads": (att.num_kv_heads, None),
        "attention.pattern": (att.pattern, ("global",)),
        "ffn.bias": (ffn.bias, False),
        "norm.kind": (norm.kind, "rmsnorm"),
        "norm.residual": (norm.residual, "pre"),
        "norm.final": (norm.final, True),
        "embed.scale": (config.embed.scale, False),
        "embed.norm": (config.embed.norm, False),
        "embed.type_vocab_size": (config.embed.type_vocab_size, 0),
        "embed.size": (config.embed.size, None),
        "output.bias": (config.output.bias, False),
        "layer_groups": (config.layer_groups, None),
    }
    for key, (got, expected) in want.items():
        if got != expected:
            raise ValueError(f"{family}: {key}={got!r}, HF's T5 has {expected!r}.")
    scale = config.output.scale
    if scale != 1.0 and (family == "mt5" or abs(scale - config.d_model**-0.5) > 1e-12):
        raise ValueError(f"{family}: output.scale={scale!r} is neither 1 nor d_model^-0.5.")


def to_hf_config(config: ModelConfig, heads: bool = True, family: str = HF_MODEL_TYPE) -> dict:
    """ModelConfig -> T5 config.json, read the same by transformers 4.x and 5.x: both
    tie_word_embeddings and scale_decoder_outputs are written (5.x reads the latter); the
    decoder starts with the pad id, EOS is 1."""
    _check_expressible(config, family)
    ffn = config.ffn
    act = _HF_ACTIVATION_NAMES[ffn.activation]
    proj = ("gated-gelu" if act == "gelu_new" else f"gated-{act}") if ffn.gated else act
    prefix = "MT5" if family == "mt5" else "T5"
    out = {
        "model_type": family,
        "architectures": [f"{prefix}ForConditionalGeneration" if heads else f"{prefix}Model"],
        "vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "d_kv": config.head_dim,
        "d_ff": ffn.d_ff,
        "num_layers": config.num_layers,
        "num_decoder_layers": config.decoder_layers,
        "num_heads": config.num_heads,
        "relative_attention_num_buckets": config.positions.num_buckets,
        "relative_attention_max_distance": config.positions.max_distance,
        "dropout_rate": config.dropout_rate,
        "layer_norm_epsilon": config.norm.eps,
        "feed_forward_proj": proj,
        "n_positions": config.max_len,
        "pad_token_id": config.pad_id,
        "eos_token_id": 1,
        "decoder_start_token_id": config.pad_id,
        "is_encoder_decoder": True,
        "tie_word_embeddings": config.output.tie,
    }
    if config.attention.dropout_rate != config.dropout_rate:
        raise ValueError(
            f"{family}: attention.dropout_rate={config.attention.dropout_rate} differs from "
            f"dropout_rate={config.dropout_rate}; HF's T5 has one dropout_rate."
        )
    if family != "mt5":
        out["scale_decoder_outputs"] = config.output.scale != 1.0
    return out


def hf_name_table(config: ModelConfig, heads: bool) -> list:
    """Rows (HF tensor name, our parameter path, transform). Our relative-bias table lives in
    each stack's position scheme; HF keeps it in the first block's self-attention."""
    from transformer_jax.hf.table import Row, lm_head_rows

    if config.ffn.gated:  # wi_0 is the activated branch (our wi_gate), wi_1 the linear one
        ffn = [("wi_0", "wi_gate"), ("wi_1", "wi"), ("wo", "wo")]
    else:
        ffn = [("wi", "wi"), ("wo", "wo")]
    rows = [Row("shared.weight", "token_embed/embedding")]
    for stack, n in (("encoder", "layers"), ("decoder", "decoder_layers")):
        hf_block, layer = f"{stack}.block.{{i}}.layer", f"{stack}/layer_{{i}}"
        sublayers = [("SelfAttention", "self_attn")]
        if stack == "decoder":
            sublayers.append(("EncDecAttention", "cross_attn"))
        rows += [
            Row(f"{stack}.embed_tokens.weight", "token_embed/embedding", alias=True),
            Row(
                f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                f"{stack}/embed/pos_embed/relative_bias",
            ),
            Row(f"{stack}.final_layer_norm.weight", f"{stack}/final_norm/scale"),
        ]
        for j, (hf_name, ours) in enumerate(sublayers):
            for hf_proj, our_proj in zip("qkvo", ("query", "key", "value", "out"), strict=True):
                transform = "linear_out" if our_proj == "out" else "linear_qkv"
                rows.append(
                    Row(
                        f"{hf_block}.{j}.{hf_name}.{hf_proj}.weight",
                        f"{layer}/{ours}/{our_proj}/kernel",
                        transform,
                        n,
                    )
                )
            norm = f"{layer}/{ours}_norm/scale"
            rows.append(Row(f"{hf_block}.{j}.layer_norm.weight", norm, count=n))
        j = len(sublayers)  # the feed-forward sublayer follows the attentions
        for hf_name, ours in ffn:
            hf_weight = f"{hf_block}.{j}.DenseReluDense.{hf_name}.weight"
            rows.append(Row(hf_weight, f"{layer}/ffn/{ours}/kernel", "linear", n))
        rows.append(Row(f"{hf_block}.{j}.layer_norm.weight", f"{layer}/ffn_norm/scale", count=n))
    return rows + lm_head_rows(config, heads)
