"""Data-parallel plumbing for jax.pmap: replicate the state, shard host batches.

Replication goes through a pmapped identity with the steps' axis name, so the replicated
state carries exactly the sharding that the pmapped step returns; otherwise (e.g. with
flax.jax_utils.replicate on JAX 0.10) the second step sees a different input sharding and
compiles the whole step a second time.
"""

from __future__ import annotations

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
