"""PLBART (HF PLBartForConditionalGeneration): BART's wiring (post-LN, `layernorm_embedding`,
learned positions with 2 reserved rows, GELU, tied output) with embeddings scaled by
sqrt(d_model), over a 50,005-token code-and-text vocabulary.

| preset      | params      | reference                                           |
|-------------|-------------|-----------------------------------------------------|
| plbart-base | 139,220,736 | HF PLBartForConditionalGeneration (tied)            |
| plbart-tiny | (tests)     | 2 + 2 layers of width 64, the same wiring           |

Every preset is the whole seq2seq model (both stacks, position tables, the tied output).
PLBART computes exactly what BART's HF class computes with `scale_embedding=true`, with the
same tensor names, so hf.save writes a PLBART ModelConfig as model_type "bart"
(BartForConditionalGeneration, the first family that expresses it); PLBART files load here.
"""

from __future__ import annotations

from transformer_jax.config import (
    EmbeddingConfig,
    LearnedPositions,
    ModelConfig,
    NormConfig,
    OutputConfig,
)
from transformer_jax.families import bart as _bart
from transformer_jax.families.tiny import TINY


def plbart(d_model: int, num_layers: int, num_heads: int, vocab_size: int = 50005) -> ModelConfig:
    return _bart.bart(d_model, num_layers, num_heads).replace(
        vocab_size=vocab_size, embed={"scale": True}
    )


PRESETS: dict[str, ModelConfig] = {
    "plbart-base": plbart(768, 6, 12),
    "plbart-tiny": plbart(64, 2, 4).override(TINY),
}


# ------------------------------------------------------------------- Hugging Face checkpoints
HF_MODEL_TYPE = "plbart"
HF_PREFIX = "model."
HF_ARCHITECTURES = {"PLBartForConditionalGeneration": True, "PLBartModel": False}
HF_IGNORED_TENSORS = ()
hf_canonical = _bart.hf_canonical
hf_name_table = _bart.hf_name_table

_DEFAULTS = {
    "vocab_size": 50005, "d_model": 768, "encoder_layers": 6, "encoder_attention_heads": 12,
    "encoder_ffn_dim": 3072, "max_position_embeddings": 1024, "pad_token_id": 1,
}  # fmt: skip


def from_hf_config(hf: dict) -> ModelConfig:
    """A PLBART config.json -> ModelConfig (PLBART's default scale_embedding is true)."""
    common = _bart.read_common(
        hf,
        HF_MODEL_TYPE,
        required={"tie_word_embeddings": (True,), "is_decoder": (False,)},
        defaults=_DEFAULTS,
    )
    return ModelConfig(
        **common,
        positions=LearnedPositions(offset=2),
        embed=EmbeddingConfig(norm=True, scale=bool(hf.get("scale_embedding", True))),
        norm=NormConfig(residual="post"),
        output=OutputConfig(tie=True, bias=True),
    )


def to_hf_config(config: ModelConfig, heads: bool = True) -> dict:
    """ModelConfig -> PLBART config.json (<s>=0, <pad>=1, </s>=2; the decoder starts with
    </s> unless a language code is given)."""
    arch = "PLBartForConditionalGeneration" if heads else "PLBartModel"
    return {
        **_bart.write_common(config, HF_MODEL_TYPE, arch),
        "bos_token_id": 0,
        "eos_token_id": 2,
        "decoder_start_token_id": 2,
        "forced_eos_token_id": None,
    }
