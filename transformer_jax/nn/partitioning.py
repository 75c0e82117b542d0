"""Logical axis names of parameters, declared where each parameter is created.

`logical(init, ("embed", "mlp"))` wraps an initializer. Normally it returns `init` itself, so
parameters, their paths and their values are exactly those of an unannotated module (plain
arrays, no metadata boxes). Inside `recording_axes()` (used by `models.logical_axes`, under
`jax.eval_shape`) it returns `flax.linen.with_logical_partitioning(init, names)`, whose boxes
carry the names; `transformer_jax.train.sharding` maps them to mesh axes with one rules table.

Vocabulary: vocab, embed, heads, kv_heads, head_dim, mlp, layers (scanned stacks). Parameters
without names (biases, norms, position tables) are replicated.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import flax.linen as nn

LOGICAL_NAMES = ("vocab", "embed", "heads", "kv_heads", "head_dim", "mlp", "layers")

_RECORDING = contextvars.ContextVar("transformer_jax_recording_axes", default=False)


@contextlib.contextmanager
def recording_axes() -> Iterator[None]:
    """Within: `logical` initializers box their parameters with their axis names."""
    token = _RECORDING.set(True)
    try:
        yield
    finally:
        _RECORDING.reset(token)


def logical(init: Callable, names: tuple[str | None, ...]) -> Callable:
    """`init`, annotated with one logical axis name per parameter dimension."""
    unknown = [n for n in names if n is not None and n not in LOGICAL_NAMES]
    if unknown:
        raise ValueError(f"Unknown logical axis names {unknown}; known: {LOGICAL_NAMES}.")
    if not _RECORDING.get():
        return init
    return nn.with_logical_partitioning(init, names)
