"""Training: optimizer and schedules, losses, pure steps, checkpoints, metrics, the loop."""

from transformer_jax.train.loop import ConfigError, NonFiniteError, Preempted, train_and_evaluate
from transformer_jax.train.run_config import default_config

__all__ = ["ConfigError", "NonFiniteError", "Preempted", "default_config", "train_and_evaluate"]
