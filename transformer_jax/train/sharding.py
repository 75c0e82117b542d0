"""Mesh mode: one `jax.jit` step over a `Mesh` with named axes (data, fsdp, tensor).

The modules name the axes of their parameters (`transformer_jax.nn.partitioning`: vocab,
embed, heads, kv_heads, head_dim, mlp, layers); `RULES`, the one table here, maps each name to
mesh axes: FSDP shards `embed` (the model width, the largest axis of almost every weight)
over `fsdp`; tensor parallelism shards `heads`, `kv_heads`, `mlp` and `vocab` over `tensor`
(Megatron-style column/row split of attention and feed-forward); batches are split over
`data x fsdp`. Optimizer moments are sharded like the parameters they follow. A dimension that
a mesh axis does not divide (e.g. 1 key/value head with tensor 2) stays whole on that axis.

The same pure train step as under pmap (`steps.make_train_step(axis_name=None)`) is compiled
with these shardings; XLA's SPMD partitioner inserts the collectives. With several processes
each one feeds only its own rows (`jax.make_array_from_process_local_data`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from transformer_jax import models
from transformer_jax.config import ModelConfig

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# logical axis name -> mesh axes (None: never sharded). The one place this mapping lives.
RULES: dict[str, tuple[str, ...] | None] = {
    "batch": BATCH_AXES,
    "vocab": ("tensor",),
    "embed": ("fsdp",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "mlp": ("tensor",),
    "head_dim": None,
    "layers": None,
}


def mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) with at most one -1 resolved to the rest of the devices; raises
    ValueError naming config.mesh.* when the product differs from the device count."""
    sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
    for name, n in sizes.items():
        if not isinstance(n, int) or isinstance(n, bool) or (n < 1 and n != -1):
            raise ValueError(f"config.mesh.{name}={n!r}: must be a positive integer or -1.")
    free = [k for k, n in sizes.items() if n == -1]
    if len(free) > 1:
        raise ValueError(f"config.mesh: only one axis may be -1, got {free}.")
    fixed = math.prod(n for n in sizes.values() if n != -1)
    if free:
        if num_devices % fixed:
            raise ValueError(
                f"config.mesh={sizes}: the fixed axes ({fixed} devices) do not divide the "
                f"{num_devices} devices; choose sizes whose product divides {num_devices}."
            )
        sizes[free[0]] = num_devices // fixed
    if math.prod(sizes.values()) != num_devices:
        raise ValueError(
            f"config.mesh={sizes}: data x fsdp x tensor = {math.prod(sizes.values())} differs "
            f"from the {num_devices} devices; make the product {num_devices} (or set one axis "
            "to -1)."
        )
    return sizes["data"], sizes["fsdp"], sizes["tensor"]


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1, devices: list | None = None) -> Mesh:
    """A Mesh over `devices` (default: all, every process's) with axes (data, fsdp, tensor)."""
    devices = jax.devices() if devices is None else list(devices)
    shape = mesh_shape(data, fsdp, tensor, len(devices))
    from jax.experimental import mesh_utils

    try:
        grid = mesh_utils.create_device_mesh(shape, devices)
    except (ValueError, AssertionError, NotImplementedError):  # CPU / odd topologies
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES)


def check_model(model_cfg: ModelConfig, tensor: int) -> None:
    """Tensor parallelism splits heads and the MLP width: `tensor` must divide both."""
    for what, n in (
        ("attention.num_heads", model_cfg.num_heads),
        ("ffn.d_ff", model_cfg.ffn.d_ff),
    ):
        if n % tensor:
            raise ValueError(
                f"config.mesh.tensor={tensor} does not divide the model's {what}={n}; "
                f"choose a tensor size dividing {n}."
            )


def check_batch(rows: int, mesh: Mesh, field: str = "per_device_batch_size") -> None:
    """A global batch of `rows` must split evenly over data x fsdp."""
    split = mesh.shape["data"] * mesh.shape["fsdp"]
    if rows % split:
        raise ValueError(
            f"config.{field}: the global batch of {rows} rows does not split over "
            f"data x fsdp = {split}; make it a multiple of {split}."
        )


def mesh_spec(logical: P, shape: tuple[int, ...], mesh: Mesh) -> P:
    """Logical PartitionSpec -> mesh PartitionSpec by RULES; a mesh axis is used at most once,
    and only on a dimension it divides (else that dimension stays whole)."""
    used: set[str] = set()
    out = []
    names = tuple(logical) + (None,) * (len(shape) - len(logical))
    for dim, name in zip(shape, names, strict=True):
        axes = []
        for axis in RULES.get(name) or () if name is not None else ():
            size = math.prod(mesh.shape[a] for a in axes) * mesh.shape[axis]
            if axis not in used and dim % size == 0:
                axes.append(axis)
        used.update(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    return P(*out)


def param_shardings(model_cfg: ModelConfig, mesh: Mesh, *, heads: bool = True) -> Any:
    """NamedSharding of every parameter (the tree of `models.init_params`)."""
    logical = models.logical_axes(model_cfg, heads=heads)
    shapes = jax.eval_shape(
        lambda r: models.init_params(model_cfg, r, heads=heads), jax.random.key(0)
    )
    return jax.tree.map(
        lambda spec, s: NamedSharding(mesh, mesh_spec(spec, s.shape, mesh)),
        logical,
        shapes,
        is_leaf=lambda x: isinstance(x, P),
    )


def _keys(path: tuple) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def state_shardings(abstract_state: Any, params_sharding: Any, mesh: Mesh) -> Any:
    """Shardings of a TrainState: parameters from `params_sharding`; every optimizer leaf
    whose path ends with a parameter's path and has its shape (Adam's mu and nu) like that
    parameter; everything else (step counts, scalars) replicated."""
    replicated = NamedSharding(mesh, P())
    by_path = {_keys(p): s for p, s in jax.tree_util.tree_flatten_with_path(params_sharding)[0]}
    shapes = {
        _keys(p): x.shape for p, x in jax.tree_util.tree_flatten_with_path(abstract_state.params)[0]
    }
    depth = max((len(k) for k in by_path), default=0)

    def pick(path, leaf):
        keys = _keys(path)
        for n in range(min(depth, len(keys)), 0, -1):
            suffix = keys[-n:]
            if suffix in by_path and shapes[suffix] == leaf.shape:
                return by_path[suffix]
        return replicated

    opt = jax.tree_util.tree_map_with_path(pick, abstract_state.opt_state)
    return abstract_state.replace(
        step=replicated, params=params_sharding, opt_state=opt, skipped=replicated
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows over data x fsdp, everything else whole."""
    return NamedSharding(mesh, P(BATCH_AXES))


def place_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows [local_batch, ...] -> global arrays [global_batch, ...]."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
    }


class MeshRunner:
    """The train and eval steps compiled for a mesh, and how state and batches are placed.

    Same interface as `parallel.PmapRunner`, so the loop does not know which mode it runs."""

    def __init__(
        self,
        train_step: Callable,
        eval_step: Callable,
        abstract_state: Any,
        model_cfg: ModelConfig,
        mesh: Mesh,
    ):
        self.mesh = mesh
        self.state_sharding = state_shardings(
            abstract_state, param_shardings(model_cfg, mesh), mesh
        )
        replicated = NamedSharding(mesh, P())
        batch = batch_sharding(mesh)
        self._train = jax.jit(
            train_step,
            in_shardings=(self.state_sharding, batch, replicated),
            out_shardings=(self.state_sharding, replicated),
            donate_argnums=(0,),
        )
        self._eval = jax.jit(
            eval_step,
            in_shardings=(self.state_sharding.params, batch),
            out_shardings=replicated,
        )

    def init(self, init_state: Callable[[], Any], abstract: Any = None) -> Any:
        """A fresh state, created directly in its shards (no device holds all of it).
        `abstract` (the state's shapes) is part of the runners' shared interface; the mesh
        runner knows them already."""
        return jax.jit(init_state, out_shardings=self.state_sharding)()

    def place(self, state: Any) -> Any:
        """A host (numpy) or device state -> sharded on the mesh (resharding on restore).
        Arrays already in their sharding (a sharded checkpoint read in place) are kept."""
        seen: set[int] = set()

        def put(x, sharding):
            if isinstance(x, jax.Array) and x.sharding == sharding and id(x) not in seen:
                seen.add(id(x))
                return x
            # may_alias=False: leaves that share one buffer (the step and skip counters start
            # as one zero) must not reach the donating step as the same buffer twice.
            return jax.device_put(x, sharding, may_alias=False)

        return jax.tree.map(put, state, self.state_sharding)

    def train(self, state: Any, batch: dict[str, np.ndarray], rng: jax.Array):
        return self._train(state, place_batch(batch, self.mesh), rng)

    def eval(self, params: Any, batch: dict[str, np.ndarray]) -> Any:
        return self._eval(params, place_batch(batch, self.mesh))

    def params(self, state: Any) -> Any:
        return state.params

    def single(self, tree: Any) -> Any:
        """Metrics or parameters as one logical copy that `np.asarray` can read: global
        arrays as they are on one process; with several, shards other processes hold are
        gathered. (Checkpoints take the sharded state as it is: never gathered.)"""

        def readable(x):
            if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
                return x
            from jax.experimental import multihost_utils

            return multihost_utils.process_allgather(x, tiled=True)

        return jax.tree.map(readable, tree)
