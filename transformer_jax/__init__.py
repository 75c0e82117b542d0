"""transformer_jax: encoder-only, decoder-only and encoder-decoder Transformers in Flax."""

from transformer_jax import models, presets
from transformer_jax.config import ModelConfig

__all__ = ["ModelConfig", "load_workdir", "models", "presets"]
__version__ = "0.1.0"


def load_workdir(workdir: str, step: int | None = None):
    """(ModelConfig, params, tokenizer) of a train.py workdir, ready for `models.build(config)
    .apply({"params": params}, tokens)` and `sampling.generate`; see
    `transformer_jax.train.workdir.load_workdir` (imported here lazily: it needs orbax)."""
    from transformer_jax.train.workdir import load_workdir as load

    return load(workdir, step)
