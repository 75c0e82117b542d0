"""Learning-rate schedules. Steps are counted from 1 (the first update uses step 1)."""

from __future__ import annotations

import jax.numpy as jnp
import optax


def rsqrt_warmup(d_model: int, warmup_steps: int, scale: float = 1.0) -> optax.Schedule:
    """The paper's schedule: lr = scale · d_model^-0.5 · min(step^-0.5, step · warmup^-1.5).

    optax passes the number of updates done so far (0 for the first), so step = count + 1.
    """
    if warmup_steps <= 0:
        raise ValueError(f"warmup_steps={warmup_steps} must be > 0 for the rsqrt schedule.")

    def schedule(count):
        step = jnp.asarray(count, jnp.float32) + 1.0
        return scale * d_model**-0.5 * jnp.minimum(step**-0.5, step * warmup_steps**-1.5)

    return schedule


def linear_warmup_rsqrt_decay(peak: float, warmup_steps: int) -> optax.Schedule:
    """Linear warmup to `peak` at `warmup_steps`, then peak · sqrt(warmup / step)."""
    if warmup_steps <= 0:
        raise ValueError(f"warmup_steps={warmup_steps} must be > 0 for linear warmup.")

    def schedule(count):
        step = jnp.asarray(count, jnp.float32) + 1.0
        return peak * jnp.minimum(step / warmup_steps, jnp.sqrt(warmup_steps / step))

    return schedule


SCHEDULES = ("rsqrt", "linear_rsqrt", "constant")


def make_schedule(name: str, *, d_model: int, warmup_steps: int, learning_rate: float):
    """`learning_rate` is the scale for 'rsqrt' (paper: 1.0) and the peak otherwise."""
    if name == "rsqrt":
        return rsqrt_warmup(d_model, warmup_steps, learning_rate)
    if name == "linear_rsqrt":
        return linear_warmup_rsqrt_decay(learning_rate, warmup_steps)
    if name == "constant":
        return optax.constant_schedule(learning_rate)
    raise ValueError(f"config.schedule={name!r} is not one of {SCHEDULES}.")
