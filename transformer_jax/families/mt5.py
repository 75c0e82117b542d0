"""mT5 (HF MT5ForConditionalGeneration): T5 v1.1's wiring (families/t5.py: relative position
bias, RMS norms, gated tanh-GELU, untied head without rescale) over a 250,112-token
multilingual vocabulary; its own HF model_type, so its own small module.

| preset     | params      | reference                                  |
|------------|-------------|--------------------------------------------|
| mt5-small  | 300,176,768 | HF MT5ForConditionalGeneration (untied)    |
| mt5-tiny   | (tests)     | 2 + 2 layers of width 64, gated, untied    |

Every preset is the whole seq2seq model (both stacks, relative-bias tables, lm_head).
"""

from __future__ import annotations

from transformer_jax.config import ModelConfig
from transformer_jax.families import t5 as _t5
from transformer_jax.families.tiny import TINY

PRESETS: dict[str, ModelConfig] = {
    "mt5-small": _t5.t5(512, 8, 6, 1024, gated=True, vocab_size=250112),
    "mt5-tiny": _t5.t5(64, 2, 4, 128, head_dim=16, gated=True).override(TINY),
}


# ------------------------------------------------------------------- Hugging Face checkpoints
HF_MODEL_TYPE = "mt5"
HF_PREFIX = _t5.HF_PREFIX
HF_ARCHITECTURES = {"MT5ForConditionalGeneration": True, "MT5Model": False}
HF_IGNORED_TENSORS = _t5.HF_IGNORED_TENSORS
hf_name_table = _t5.hf_name_table
hf_from_tensors = _t5.hf_from_tensors


def from_hf_config(hf: dict) -> ModelConfig:
    """An mT5 config.json -> ModelConfig (T5's reader; mT5 never rescales the output)."""
    return _t5.from_hf_config(hf, family=HF_MODEL_TYPE)


def to_hf_config(config: ModelConfig, heads: bool = True) -> dict:
    return _t5.to_hf_config(config, heads, family=HF_MODEL_TYPE)
