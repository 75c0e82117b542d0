"""Training throughput: tokens/s, step time, compile time and MFU of the pmapped train step.

    python bench/train_throughput.py                       # tiny presets + gpt2-small
    python bench/train_throughput.py --presets gpt2-small --batch 8 --length 1024 --dtype bfloat16

Synthetic token batches (no input pipeline: this measures the step), every row full (no
padding), dropout as in the preset. Step time is the median over --steps timed steps (10 by
default) after one compile step and one warm-up step. MFU = train FLOPs of the executed
shapes (3 x forward matmul FLOPs, transformer_jax.train.flops) / step time / (peak per device
x devices); the peak is the datasheet value for known accelerators and a measured jitted
matmul on CPUs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from transformer_jax import models, presets  # noqa: E402
from transformer_jax.train import flops, metrics, steps  # noqa: E402
from transformer_jax.train.optimizer import make_optimizer  # noqa: E402
from transformer_jax.train.parallel import AXIS, replicate, shard  # noqa: E402
from transformer_jax.train.schedules import rsqrt_warmup  # noqa: E402

OBJECTIVE = {"decoder": "clm", "encoder": "mlm", "encoder_decoder": "seq2seq"}


def synthetic_batch(cfg, batch: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(4, cfg.vocab_size, size=(batch, length)).astype(np.int32)
    ones = np.ones((batch, length), np.float32)
    if cfg.arch == "encoder_decoder":
        return {"inputs": tokens, "decoder_inputs": tokens, "targets": tokens, "weights": ones}
    return {"inputs": tokens, "targets": tokens, "weights": ones}


def bench(name: str, batch_per_device: int, length: int, num_steps: int, dtype: str) -> dict:
    cfg = presets.get(name, dtype=dtype)
    length = min(length, cfg.max_len)
    model = models.build(cfg)
    schedule = rsqrt_warmup(cfg.d_model, 4000)
    tx = make_optimizer(schedule, grad_clip_norm=1.0)
    params = jax.jit(lambda r: models.init_params(cfg, r))(jax.random.key(0))
    state = replicate(steps.init_train_state(params, tx))
    del params
    step = jax.pmap(
        steps.make_train_step(model, tx, schedule, objective=OBJECTIVE[cfg.arch]),
        axis_name=AXIS,
        in_axes=(0, 0, None),
        donate_argnums=(0,),
    )
    n_dev = jax.local_device_count()
    batch = shard(synthetic_batch(cfg, batch_per_device * n_dev, length), n_dev)
    rng = jax.random.key(1)
    t0 = time.perf_counter()
    state, m = step(state, batch, rng)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    state, m = step(state, batch, rng)  # warm-up
    jax.block_until_ready(m)
    times = []
    for _ in range(num_steps):
        t0 = time.perf_counter()
        state, m = step(state, batch, rng)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    tokens = batch_per_device * n_dev * length
    row_flops = flops.train_flops(cfg, length, length if cfg.arch == "encoder_decoder" else None)
    peak, source = metrics.peak_flops_per_device(dtype)
    return {
        "preset": name,
        "params": models.count_params(state.params) // n_dev,
        "batch": batch_per_device * n_dev,
        "length": length,
        "compile_s": compile_s,
        "step_ms": 1e3 * step_s,
        "tokens_s": tokens / step_s,
        "mfu": row_flops * batch_per_device * n_dev / step_s / (peak * n_dev),
        "peak": f"{peak:.3g} ({source})",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--presets",
        nargs="+",
        default=["gpt-tiny", "bert-tiny", "bart-tiny", "transformer-tiny", "gpt2-small"],
    )
    p.add_argument("--batch", type=int, default=8, help="rows per device")
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = p.parse_args()
    dev = jax.devices()[0]
    print(f"device: {jax.local_device_count()} x {dev.device_kind} ({dev.platform}), "
          f"jax {jax.__version__}, dtype {args.dtype}")  # fmt: skip
    print("| preset | params | batch x len | compile s | step ms | tokens/s | MFU |")
    print("|---|---|---|---|---|---|---|")
    for name in args.presets:
        r = bench(name, args.batch, args.length, args.steps, args.dtype)
        print(
            f"| {r['preset']} | {r['params']:,} | {r['batch']} x {r['length']} | "
            f"{r['compile_s']:.1f} | {r['step_ms']:.1f} | {r['tokens_s']:,.0f} | "
            f"{100 * r['mfu']:.1f}% |",
            flush=True,
        )
    print(f"MFU peak per device: {r['peak']}")


if __name__ == "__main__":
    main()
