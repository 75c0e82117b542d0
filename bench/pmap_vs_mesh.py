"""Data-parallel step time: pmap mode against mesh mode (jit + NamedSharding), same shapes.

    python bench/pmap_vs_mesh.py                    # 2 host devices, the issue-12 tiny GPT
    python bench/pmap_vs_mesh.py --devices 4 --preset gpt2-small --batch 1 --length 256

Both runners wrap the same pure `train_step` (`steps.make_train_step`; pmap: one replica per
device with a psum over "batch"; mesh: mesh data=N x fsdp 1 x tensor 1, so the state is
replicated and the batch split over `data`: data parallelism only), with the same global
batch (--batch rows per device x N) of synthetic tokens, dropout off. Each mode is compiled,
warmed up, then timed in alternating rounds (pmap, mesh, pmap, mesh, ...) so that a change
in machine load hits both; the result is the median step time of each. On a CPU the
"devices" are forced host devices sharing the cores (XLA_FLAGS is set before jax loads).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=2, help="forced host devices (CPU only)")
    p.add_argument("--preset", default="gpt-tiny")
    p.add_argument("--d-model", type=int, default=256, help="override (0: the preset's)")
    p.add_argument("--layers", type=int, default=4, help="override (0: the preset's)")
    p.add_argument("--vocab", type=int, default=8192, help="override (0: the preset's)")
    p.add_argument("--batch", type=int, default=4, help="rows per device")
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=4, help="timed steps per round and mode")
    args = p.parse_args()
    flag = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    import jax
    import numpy as np
    import optax

    from transformer_jax import models, presets
    from transformer_jax.train import sharding, steps
    from transformer_jax.train.optimizer import make_optimizer
    from transformer_jax.train.parallel import AXIS, PmapRunner

    overrides = {"dropout_rate": 0.0, "attention_dropout_rate": 0.0}
    for key, value in (("d_model", args.d_model), ("num_layers", args.layers),
                       ("vocab_size", args.vocab)):  # fmt: skip
        if value:
            overrides[key] = value
    if args.length > presets.get(args.preset).max_len:
        overrides["max_len"] = args.length  # a longer position table for the benchmark
    cfg = presets.get(args.preset, **overrides)
    if args.preset == "gpt-tiny" and args.d_model:
        cfg = cfg.replace(attention={"num_heads": 4}, ffn={"d_ff": 4 * args.d_model})
    length = args.length
    model = models.build(cfg)
    schedule = optax.constant_schedule(1e-4)
    tx = make_optimizer(schedule, grad_clip_norm=1.0)
    n = jax.device_count()
    rows = args.batch * n
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, cfg.vocab_size, size=(rows, length)).astype(np.int32)
    batch = {"inputs": tokens, "targets": tokens, "weights": np.ones((rows, length), np.float32)}

    def init_state():
        return steps.init_train_state(models.init_params(cfg, jax.random.key(0)), tx)

    abstract = jax.eval_shape(init_state)
    runners = {
        "pmap": PmapRunner(
            steps.make_train_step(model, tx, schedule, objective="clm", axis_name=AXIS),
            steps.make_eval_step(model, objective="clm", axis_name=AXIS),
        ),
        "mesh": sharding.MeshRunner(
            steps.make_train_step(model, tx, schedule, objective="clm", axis_name=None),
            steps.make_eval_step(model, objective="clm", axis_name=None),
            abstract,
            cfg,
            sharding.make_mesh(data=n, fsdp=1, tensor=1),
        ),
    }
    states, times, losses = {}, {k: [] for k in runners}, {}
    step_rng = jax.random.key(1)
    for name, runner in runners.items():
        start = time.perf_counter()
        state, m = runner.train(runner.init(init_state), batch, step_rng)
        jax.block_until_ready(m)
        compile_s = time.perf_counter() - start
        state, m = runner.train(state, batch, step_rng)  # warm-up
        losses[name] = float(np.asarray(m["loss"]).reshape(-1)[0] / np.asarray(
            m["weight"]).reshape(-1)[0])  # fmt: skip
        states[name] = state
        print(f"{name}: first step (compile + run) {compile_s:.1f} s", flush=True)
    for _ in range(args.rounds):
        for name, runner in runners.items():
            state = states[name]
            for _ in range(args.steps):
                start = time.perf_counter()
                state, m = runner.train(state, batch, step_rng)
                jax.block_until_ready(m)
                times[name].append(time.perf_counter() - start)
            states[name] = state
    tokens_per_step = rows * length
    print(f"\n{cfg.num_layers} layers, d_model {cfg.d_model}, vocab {cfg.vocab_size}; {n} "
          f"devices ({jax.devices()[0].platform}), global batch {rows} x {length}; "
          f"second-step loss pmap {losses['pmap']:.6f}, mesh {losses['mesh']:.6f}")  # fmt: skip
    print("| mode | median step ms | tokens/s |\n|---|---|---|")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name in runners:
        print(f"| {name} | {1e3 * med[name]:.1f} | {tokens_per_step / med[name]:,.0f} |")
    print(f"\nmesh / pmap step time: {med['mesh'] / med['pmap']:.3f}")


if __name__ == "__main__":
    main()
