"""Per-device memory of a full-size training step in mesh mode, from XLA's own accounting.

    .venv/bin/python bench/mesh_memory.py --devices 8 --fsdp 8          # llama-2-7b
    .venv/bin/python bench/mesh_memory.py --devices 64 --fsdp 8 --data 8 --tensor 1

Nothing is allocated: the train state (float32 parameters and AdamW moments) and the batch
are `jax.ShapeDtypeStruct`s with their mesh shardings (transformer_jax.train.sharding), and
the step (bfloat16 compute, scan over layers, remat) is lowered and compiled for `--devices`
forced host (CPU) devices with the state donated, as train.py runs it.
`compiled.memory_analysis()` is per device: arguments (this device's shards of the state and
batch), outputs, aliased (donated state written in place), temporaries.
Peak = arguments + outputs - aliased + temporaries. On the CPU, XLA has no bf16 matmul and
converts bf16 operands to float32 temporaries, so temporaries are an upper bound for an
accelerator.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama-2-7b")
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--data", type=int, default=1)
    ap.add_argument("--fsdp", type=int, default=-1)
    ap.add_argument("--tensor", type=int, default=1)
    ap.add_argument("--per_device_batch", type=int, default=1)
    ap.add_argument("--length", type=int, default=2048)
    ap.add_argument("--remat", default="full")
    args = ap.parse_args()
    flag = f"--xla_force_host_platform_device_count={args.devices}"
    if flag not in os.environ.get("XLA_FLAGS", ""):  # the device count is fixed at JAX start
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.execv(sys.executable, [sys.executable, *sys.argv])

    import jax
    import jax.numpy as jnp
    import optax

    from transformer_jax import models, presets
    from transformer_jax.train import sharding, steps
    from transformer_jax.train.optimizer import make_optimizer

    cfg = presets.get(args.preset).replace(
        dtype="bfloat16", scan_layers=True, remat=args.remat, dropout_rate=0.0
    )
    sched = optax.constant_schedule(1e-4)
    tx = make_optimizer(sched, weight_decay=0.1, grad_clip_norm=1.0)
    abstract = jax.eval_shape(
        lambda r: steps.init_train_state(models.init_params(cfg, r), tx), jax.random.key(0)
    )
    mesh = sharding.make_mesh(args.data, args.fsdp, args.tensor)
    model = models.build(cfg)
    runner = sharding.MeshRunner(
        steps.make_train_step(model, tx, sched, objective="clm", axis_name=None),
        steps.make_eval_step(model, objective="clm", axis_name=None),
        abstract,
        cfg,
        mesh,
    )
    rows = args.per_device_batch * args.devices
    batch_sh = sharding.batch_sharding(mesh)
    batch = {
        k: jax.ShapeDtypeStruct((rows, args.length), dt, sharding=batch_sh)
        for k, dt in (("inputs", jnp.int32), ("targets", jnp.int32), ("weights", jnp.float32))
    }
    state = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
        abstract,
        runner.state_sharding,
    )
    start = time.perf_counter()
    compiled = runner._train.lower(state, batch, jax.random.key(0)).compile()
    seconds = time.perf_counter() - start
    mem = compiled.memory_analysis()
    gib = 2**30
    total_state = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract))
    peak = (
        mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        - mem.alias_size_in_bytes
        + mem.temp_size_in_bytes
    )
    print(
        f"| {args.preset} | {args.devices} | {mesh.shape['data']}x{mesh.shape['fsdp']}x"
        f"{mesh.shape['tensor']} | {rows}x{args.length} | {args.remat} "
        f"| {total_state / gib:.1f} | {mem.argument_size_in_bytes / gib:.2f} "
        f"| {mem.temp_size_in_bytes / gib:.2f} | {peak / gib:.2f} | {seconds:.0f} s |"
    )


if __name__ == "__main__":
    main()
