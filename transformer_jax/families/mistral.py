"""Mistral (HF MistralForCausalLM): LLaMA (families/llama.py) plus one change, a sliding
window: in every layer query q sees keys q - window < k <= q (`attention.pattern=("local",)`).

| preset       | params        | reference                                                |
|--------------|---------------|----------------------------------------------------------|
| mistral-7b   | 7,241,732,096 | HF MistralForCausalLM (Mistral-7B-v0.1: window 4096, 8 KV heads) |
| mistral-tiny | (tests/demos) | llama-tiny with a window of 8 tokens                     |
"""

from __future__ import annotations

from transformer_jax.config import ModelConfig
from transformer_jax.families import llama as _llama
from transformer_jax.families.tiny import TINY


def mistral(window: int | None, **kwargs) -> ModelConfig:
    """`llama(**kwargs)` with a sliding window of `window` keys per query (None: none)."""
    config = _llama.llama(**kwargs)
    if window is None:
        return config
    return config.replace(attention={"pattern": ("local",), "window": window})


PRESETS: dict[str, ModelConfig] = {
    "mistral-7b": mistral(
        4096,
        d_model=4096,
        num_layers=32,
        num_heads=32,
        d_ff=14336,
        num_kv_heads=8,
        max_len=32768,
    ),  # fmt: skip
    "mistral-tiny": mistral(
        8, d_model=64, num_layers=2, num_heads=4, d_ff=128, num_kv_heads=2
    ).override(TINY),
}


# ------------------------------------------------------------------- Hugging Face checkpoints
HF_MODEL_TYPE = "mistral"
HF_PREFIX = "model."
HF_ARCHITECTURES = {"MistralForCausalLM": True, "MistralModel": False}
HF_IGNORED_TENSORS = _llama.HF_IGNORED_TENSORS
hf_name_table = _llama.hf_name_table  # Mistral's tensors are named as LLaMA's


def from_hf_config(hf: dict) -> ModelConfig:
    """A Mistral config.json -> ModelConfig: LLaMA's fields and `sliding_window` (null: none)."""
    config = _llama.config_from_hf(hf, HF_MODEL_TYPE, understood={"sliding_window"})
    window = hf.get("sliding_window")
    if window is None:
        return config
    if not isinstance(window, int) or window <= 0:
        raise ValueError(
            f"mistral config.json: sliding_window={window!r} must be a positive integer or null."
        )
    return config.replace(attention={"pattern": ("local",), "window": window})


def to_hf_config(config: ModelConfig, heads: bool = True) -> dict:
    """ModelConfig -> Mistral config.json: one window for every layer, or none."""
    att = config.attention
    if set(att.pattern) == {"local"}:
        window = att.window
        base = config.replace(attention={"pattern": ("global",), "window": None})
    elif set(att.pattern) == {"global"}:
        window, base = None, config
    else:
        raise ValueError(
            f"mistral: attention.pattern={att.pattern!r} mixes local and global layers; "
            "Mistral's sliding window applies to every layer."
        )
    hf = _llama.config_to_hf(base, HF_MODEL_TYPE, tuple(HF_ARCHITECTURES), heads)
    return {**hf, "sliding_window": window}
