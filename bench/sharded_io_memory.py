"""Host memory that loading and checkpointing take in mesh mode, from Python's allocator.

    .venv/bin/python bench/sharded_io_memory.py                  # gpt2-small shapes, 8 devices
    .venv/bin/python bench/sharded_io_memory.py --preset gpt2-medium --fsdp 4 --tensor 2

A random model of `--preset`'s shapes is written as a Hugging Face directory, then read with
`hf.load(dir)` (whole NumPy arrays) and with `hf.load(dir, mesh=...)` (each tensor built shard
by shard from the memory-mapped file); then its AdamW train state, sharded on the mesh, is
saved with `Checkpoints.save` (orbax, shard by shard). `tracemalloc` counts the NumPy and
Python buffers the process allocates (not the page cache of a mapped file). On the CPU
backend a placed shard may keep the NumPy buffer the callback filled (zero-copy), i.e. the
"device" memory is host memory here; so for the mesh load the table gives the largest
host allocation while one tensor is placed (its shards included, which a CPU device may
keep; an accelerator's process needs at most that beyond its devices' shards), and for the
save the peak above what was allocated before it. Deterministic: no timing noise.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import tracemalloc


def _peak(fn):
    """fn's result and the peak of what it allocated (bytes above the start)."""
    tracemalloc.start()
    out = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="gpt2-small")
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--data", type=int, default=1)
    ap.add_argument("--fsdp", type=int, default=-1)
    ap.add_argument("--tensor", type=int, default=1)
    args = ap.parse_args()
    flag = f"--xla_force_host_platform_device_count={args.devices}"
    if flag not in os.environ.get("XLA_FLAGS", ""):  # the device count is fixed at JAX start
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.execv(sys.executable, [sys.executable, *sys.argv])

    import jax
    import numpy as np
    import optax

    from transformer_jax import hf, models, presets
    from transformer_jax.hf import api
    from transformer_jax.train import sharding, steps
    from transformer_jax.train.checkpoints import Checkpoints

    cfg = presets.get(args.preset)
    mesh = sharding.make_mesh(args.data, args.fsdp, args.tensor)
    shapes = jax.eval_shape(lambda r: models.init_params(cfg, r), jax.random.key(0))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.standard_normal(s.shape, np.float32), shapes)
    total = sum(x.nbytes for x in jax.tree.leaves(params))
    largest = max(x.nbytes for x in jax.tree.leaves(params))
    mib = 2**20
    with tempfile.TemporaryDirectory() as tmp:
        hf.save(cfg, params, os.path.join(tmp, "hf"))
        del params
        _, whole = _peak(lambda: hf.load(os.path.join(tmp, "hf")))
        placer, transient = api._placer, []  # measure each tensor's placement

        def measured(*a):
            place = placer(*a)

            def one(path, value, dtype):
                gc.collect()  # what earlier tensors left is freed before this one is measured
                before = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                out = place(path, value, dtype)
                transient.append(tracemalloc.get_traced_memory()[1] - before)
                return out

            return one

        api._placer = measured
        tracemalloc.start()
        _, placed = hf.load(os.path.join(tmp, "hf"), mesh=mesh)
        tracemalloc.stop()
        api._placer = placer
        sharded = max(transient)
        tx = optax.adamw(1e-4)
        abstract = jax.eval_shape(lambda: steps.init_train_state(placed, tx))
        target = sharding.state_shardings(abstract, sharding.param_shardings(cfg, mesh), mesh)
        state = jax.jit(lambda p: steps.init_train_state(p, tx), out_shardings=target)(placed)
        state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
        ckpt = Checkpoints(os.path.join(tmp, "ckpt"), async_save=False)
        _, save_peak = _peak(lambda: ckpt.save(1, state))
        ckpt.close()
    print(f"{args.preset}, mesh {dict(mesh.shape)}, {jax.device_count()} CPU devices")
    print(f"parameters {total / mib:,.0f} MiB (largest tensor {largest / mib:,.0f} MiB); "
          f"train state {state_bytes / mib:,.0f} MiB")  # fmt: skip
    print(f"hf.load                 host peak {whole / mib:8,.1f} MiB")
    print(f"hf.load(mesh=)          largest per tensor {sharded / mib:8,.1f} MiB")
    print(f"Checkpoints.save(mesh)  host peak {save_peak / mib:8,.1f} MiB")


if __name__ == "__main__":
    main()
