"""Where numbers go: console progress bar, TensorBoard event files, metrics.jsonl; and the
peak FLOP/s that MFU is measured against."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp

# Dense peak FLOP/s per chip by device kind (substring match) and compute dtype. float32 on
# NVIDIA GPUs runs matmuls as TF32 under JAX's default precision.
PEAK_FLOPS = {
    "H200": {"bfloat16": 989e12, "float32": 494e12},
    "H100": {"bfloat16": 989e12, "float32": 494e12},
    "A100": {"bfloat16": 312e12, "float32": 156e12},
    "L4": {"bfloat16": 121e12, "float32": 60e12},
    "TPU v4": {"bfloat16": 275e12, "float32": 275e12},
    "TPU v5 lite": {"bfloat16": 197e12, "float32": 197e12},
    "TPU v5p": {"bfloat16": 459e12, "float32": 459e12},
    "TPU v6 lite": {"bfloat16": 918e12, "float32": 918e12},
}


def measure_matmul_peak(dtype: str = "float32", size: int = 1024, repeats: int = 8) -> float:
    """Best FLOP/s of a jitted square matmul on the default device (used for CPUs)."""
    x = jnp.ones((size, size), dtype)
    f = jax.jit(lambda a: a @ a)
    f(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        f(x).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def peak_flops_per_device(dtype: str, override: float | None = None) -> tuple[float, str]:
    """(peak FLOP/s of one local device, where the number came from)."""
    if override:
        return float(override), "config.peak_flops"
    kind = jax.local_devices()[0].device_kind
    for name, table in PEAK_FLOPS.items():
        if name.lower() in kind.lower():
            return table[dtype], f"datasheet ({kind})"
    return measure_matmul_peak(dtype), f"measured matmul peak ({kind})"


class MetricWriter:
    """Writes scalars to TensorBoard (WORKDIR/tensorboard) and WORKDIR/metrics.jsonl.

    Only process 0 writes; other processes get a no-op writer.
    """

    def __init__(self, workdir: str, *, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        import tensorflow as tf

        from transformer_jax.data.builders import hide_gpus_from_tensorflow

        hide_gpus_from_tensorflow()  # TF only writes event files here; never a GPU
        self._tf = tf
        self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")  # noqa: SIM115

    def write(self, step: int, split: str, scalars: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self._tb.as_default(step=step):
            for key, value in scalars.items():
                self._tf.summary.scalar(f"{split}/{key}", float(value))
        record = {"step": step, "split": split, **{k: float(v) for k, v in scalars.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()
            self._jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()
            self.enabled = False
