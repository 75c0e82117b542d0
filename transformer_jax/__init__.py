"""transformer_jax: encoder-only, decoder-only and encoder-decoder Transformers in Flax.

`models`, `presets` and `ModelConfig` load on first use (PEP 562), so that a program can import
`transformer_jax.console` or `transformer_jax.runtime` before JAX and Flax load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these load lazily (below)
    from transformer_jax import models, presets
    from transformer_jax.config import ModelConfig

__all__ = ["ModelConfig", "load_workdir", "models", "presets"]
__version__ = "0.1.0"

_LAZY = {"models": "transformer_jax.models", "presets": "transformer_jax.presets"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(_LAZY[name])
    if name == "ModelConfig":
        return importlib.import_module("transformer_jax.config").ModelConfig
    raise AttributeError(f"module 'transformer_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def load_workdir(workdir: str, step: int | None = None):
    """(ModelConfig, params, tokenizer) of a train.py workdir, ready for `models.build(config)
    .apply({"params": params}, tokens)` and `sampling.generate`; see
    `transformer_jax.train.workdir.load_workdir` (imported here lazily: it needs orbax)."""
    from transformer_jax.train.workdir import load_workdir as load

    return load(workdir, step)
