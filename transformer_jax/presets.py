"""Named model configurations, looked up across every family (transformer_jax/families/).

Each family module documents its presets and their published parameter counts
(tests/test_presets.py checks them exactly); `*-tiny` presets are for tests and demos.
"""

from __future__ import annotations

from typing import Any

from transformer_jax.config import ModelConfig
from transformer_jax.families import FAMILY_OF, PRESETS

__all__ = ["FAMILY_OF", "PRESETS", "get", "names"]


def names() -> list[str]:
    """All preset names, sorted."""
    return sorted(PRESETS)


def get(name: str, **overrides: Any) -> ModelConfig:
    """The preset `name`, with optional overrides (validated): root fields, groups as dicts
    (`attention={"num_heads": 2}`), or the flat names of version 1 (`num_heads=2`); see
    `ModelConfig.override`."""
    if name not in PRESETS:
        raise ValueError(f"Unknown model preset {name!r}; available: {', '.join(names())}.")
    config = PRESETS[name]
    return config.override(overrides) if overrides else config
