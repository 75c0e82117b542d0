"""Data-parallel plumbing for jax.pmap: replicate the state, shard host batches.

Replication goes through a pmapped identity with the steps' axis name, so the replicated
state carries exactly the sharding that the pmapped step returns; otherwise (e.g. with
flax.jax_utils.replicate on JAX 0.10) the second step sees a different input sharding and
compiles the whole step a second time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

AXIS = "batch"


def replicate(tree: Any, axis_name: str = AXIS) -> Any:
    """Host/device tree -> one copy per local device, leading axis [local_devices]."""
    n = jax.local_device_count()
    stacked = jax.tree_util.tree_map(
        lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))), tree
    )
    return jax.pmap(lambda t: t, axis_name=axis_name)(stacked)


def unreplicate(tree: Any) -> Any:
    """The first device's copy of a replicated tree."""
    return jax.tree_util.tree_map(lambda x: x[0], tree)


def shard(batch: dict[str, np.ndarray], num_devices: int | None = None) -> dict[str, np.ndarray]:
    """[local_batch, ...] -> [local_devices, per_device, ...]."""
    n = num_devices or jax.local_device_count()
    return {k: v.reshape(n, v.shape[0] // n, *v.shape[1:]) for k, v in batch.items()}


class PmapRunner:
    """The train and eval steps under jax.pmap (one replica per local device), and how state
    and batches are placed. Same interface as `sharding.MeshRunner`."""

    def __init__(self, train_step: Callable | None, eval_step: Callable, axis_name: str = AXIS):
        """`train_step` None: an evaluation-only runner (evaluate.py)."""
        self.axis_name = axis_name
        self._train = train_step and jax.pmap(
            train_step, axis_name=axis_name, in_axes=(0, 0, None), donate_argnums=(0,)
        )
        self._eval = jax.pmap(eval_step, axis_name=axis_name)

    def init(self, init_state: Callable[[], Any]) -> Any:
        """A fresh state on every device. Run eagerly: `models.init_params` compiles one small
        program per parameter shape (shared by later models) where a jit of the whole
        `init_state` would compile every random draw anew; the values are the same."""
        return self.place(init_state())

    def place(self, state: Any) -> Any:
        return replicate(state, self.axis_name)

    def train(self, state: Any, batch: dict[str, np.ndarray], rng: jax.Array):
        return self._train(state, shard(batch), rng)

    def eval(self, params: Any, batch: dict[str, np.ndarray]) -> Any:
        return self._eval(params, shard(batch))

    def params(self, state: Any) -> Any:
        return state.params

    def single(self, tree: Any) -> Any:
        """One logical copy of a replicated tree (metrics, or the state to save)."""
        return unreplicate(tree)
