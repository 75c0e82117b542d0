"""transformer_jax: encoder-only, decoder-only and encoder-decoder Transformers in Flax."""

from transformer_jax import models, presets
from transformer_jax.config import ModelConfig

__all__ = ["ModelConfig", "models", "presets"]
__version__ = "0.1.0"
