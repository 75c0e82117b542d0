"""Parameter initializers, each compiled once per shape and dtype.

`normal(std)` draws what `flax.linen.initializers.normal(std)` draws, bit for bit, but through
a jitted function cached per (std, shape, dtype). `models.init_params` runs flax's init eagerly
(`lazy_init`: only the parameter-creating operations execute), so creating a model compiles one
small program per distinct parameter shape, reused by every later model with that shape,
instead of one program holding every parameter's random draw: XLA:CPU compiles the threefry
hash of each draw separately, which made one tiny model's init a 2-5 s compile. Inside a jit
(mesh mode creates the state in its shards, `jax.eval_shape` counts presets) the nested jit is
inlined: the same program, the same values.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]


@functools.cache
def _jitted_normal(stddev: float) -> Callable:
    return jax.jit(nn.initializers.normal(stddev), static_argnums=(1, 2))


def normal(stddev: float) -> Initializer:
    """N(0, stddev^2) float32 values (flax's `normal(stddev)`), compiled per shape and dtype."""
    jitted = _jitted_normal(float(stddev))

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        return jitted(key, tuple(int(d) for d in shape), jnp.dtype(dtype))

    return init
