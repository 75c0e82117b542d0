"""Training: optimizer and schedules, losses, pure steps, checkpoints, metrics, the loop."""

from transformer_jax.train.loop import NonFiniteError, Preempted, train_and_evaluate
from transformer_jax.train.run_config import default_config

__all__ = ["NonFiniteError", "Preempted", "default_config", "train_and_evaluate"]
