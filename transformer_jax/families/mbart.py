"""mBART (HF MBartForConditionalGeneration): BART's layers with pre-LN wiring, a norm after
the embeddings (`layernorm_embedding`) and a final norm at the end of both stacks
(`layer_norm`), embeddings scaled by sqrt(d_model), learned positions with 2 reserved rows,
GELU, the output tied to the token table.

| preset           | params      | reference                                           |
|------------------|-------------|-----------------------------------------------------|
| mbart-large-cc25 | 610,851,840 | HF MBartForConditionalGeneration (tied)             |
| mbart-tiny       | (tests)     | 2 + 2 layers of width 64, the same wiring           |

Every preset is the whole seq2seq model: both stacks, their position tables and norms, and the
tied output projection. HF's `final_logits_bias` is a buffer of zeros in mBART's checkpoints
(not counted by HF); a loaded checkpoint carries it as our `logits_bias` (output.bias), and
hf.save writes a zero one for a preset without it (bart.hf_canonical).
"""

from __future__ import annotations

from transformer_jax.config import (
    AttentionConfig,
    EmbeddingConfig,
    FeedForwardConfig,
    LearnedPositions,
    ModelConfig,
    NormConfig,
    OutputConfig,
)
from transformer_jax.families import bart as _bart
from transformer_jax.families.tiny import TINY


def mbart(d_model: int, num_layers: int, num_heads: int, vocab_size: int = 250027) -> ModelConfig:
    return ModelConfig(
        arch="encoder_decoder",
        vocab_size=vocab_size,
        d_model=d_model,
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        max_len=1024,
        attention=AttentionConfig(num_heads=num_heads, dropout_rate=0.0),
        ffn=FeedForwardConfig(d_ff=4 * d_model, activation="gelu"),
        positions=LearnedPositions(offset=2),
        embed=EmbeddingConfig(scale=True, norm=True),
        norm=NormConfig(residual="pre", final=True),
        output=OutputConfig(tie=True),
        dropout_rate=0.1,
        pad_id=1,  # mBART's <pad>
    )


PRESETS: dict[str, ModelConfig] = {
    "mbart-large-cc25": mbart(1024, 12, 16),
    "mbart-tiny": mbart(64, 2, 4).override(TINY),
}


# ------------------------------------------------------------------- Hugging Face checkpoints
HF_MODEL_TYPE = "mbart"
HF_PREFIX = "model."
HF_ARCHITECTURES = {"MBartForConditionalGeneration": True, "MBartModel": False}
HF_IGNORED_TENSORS = ()
hf_canonical = _bart.hf_canonical

_DEFAULTS = {
    "vocab_size": 50265, "d_model": 1024, "encoder_layers": 12, "encoder_attention_heads": 16,
    "encoder_ffn_dim": 4096, "max_position_embeddings": 1024, "pad_token_id": 1,
}  # fmt: skip


def from_hf_config(hf: dict) -> ModelConfig:
    """An mBART config.json -> ModelConfig (HF's MBart class ignores the fairseq-era wiring
    fields that BART's reads, so they are ignored here too)."""
    common = _bart.read_common(
        hf,
        HF_MODEL_TYPE,
        required={"tie_word_embeddings": (True,), "is_decoder": (False,)},
        ignored=_bart._LEGACY_FIELDS,
        defaults=_DEFAULTS,
    )
    return ModelConfig(
        **common,
        positions=LearnedPositions(offset=2),
        embed=EmbeddingConfig(norm=True, scale=bool(hf.get("scale_embedding", False))),
        norm=NormConfig(residual="pre", final=True),
        output=OutputConfig(tie=True, bias=True),
    )


def to_hf_config(config: ModelConfig, heads: bool = True) -> dict:
    """ModelConfig -> mBART config.json. Token ids are mBART's (<s>=0, <pad>=1, </s>=2); the
    decoder starts with </s> (fine-tuned models start with a language code instead: pass it
    as `bos_id` to generate)."""
    arch = "MBartForConditionalGeneration" if heads else "MBartModel"
    return {
        **_bart.write_common(config, HF_MODEL_TYPE, arch),
        "bos_token_id": 0,
        "eos_token_id": 2,
        "decoder_start_token_id": 2,
        "forced_eos_token_id": None,
    }


def hf_name_table(config: ModelConfig, heads: bool) -> list:
    return _bart.hf_name_table(config, heads, final_norm=True)
