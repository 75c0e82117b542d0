"""Compile time of the train step versus depth, with and without scan over layers.

    .venv/bin/python bench/compile_depth.py      # gpt2-small, -medium, -xl shapes

One device (CPU here), abstract inputs (nothing is allocated): the jitted train step of each
preset (float32, AdamW, a [1, 128] batch) is lowered and compiled with scan_layers False and
True; the time of `.lower(...).compile()` is printed as a table row.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import optax

from transformer_jax import models, presets
from transformer_jax.train import steps
from transformer_jax.train.optimizer import make_optimizer


def compile_seconds(name: str, scan: bool, length: int = 128) -> float:
    cfg = presets.get(name).replace(scan_layers=scan, dropout_rate=0.0)
    sched = optax.constant_schedule(1e-4)
    tx = make_optimizer(sched)
    state = jax.eval_shape(
        lambda r: steps.init_train_state(models.init_params(cfg, r), tx), jax.random.key(0)
    )
    batch = {
        k: jax.ShapeDtypeStruct((1, length), dt)
        for k, dt in (("inputs", jnp.int32), ("targets", jnp.int32), ("weights", jnp.float32))
    }
    step = steps.make_train_step(models.build(cfg), tx, sched, objective="clm", axis_name=None)
    start = time.perf_counter()
    jax.jit(step, donate_argnums=0).lower(state, batch, jax.random.key(0)).compile()
    return time.perf_counter() - start


def main() -> None:
    print("| preset | layers | compile, per-layer stack | compile, scanned stack |")
    print("|---|---|---|---|")
    for name in ("gpt2-small", "gpt2-medium", "gpt2-xl"):
        layers = presets.get(name).num_layers
        plain, scanned = compile_seconds(name, False), compile_seconds(name, True)
        print(f"| {name} | {layers} | {plain:.1f} s | {scanned:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
