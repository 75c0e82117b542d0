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


class _EventFile:
    """A TensorBoard event file (`events.out.tfevents.*`: TFRecords of `Event` protos) written
    with TensorBoard's own record format and protos, without TensorFlow; flushed after every
    write, so a crash loses nothing that was logged. Remote (`scheme://`) logdirs go through
    `tf.io.gfile`."""

    def __init__(self, logdir: str):
        import socket

        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.0"
        path = os.path.join(logdir, name)
        if "://" in logdir:
            from transformer_jax.data.builders import tensorflow

            tf = tensorflow()
            tf.io.gfile.makedirs(logdir)
            f = tf.io.gfile.GFile(path, "wb")
        else:
            os.makedirs(logdir, exist_ok=True)
            f = open(path, "wb")  # noqa: SIM115
        self._event = event_pb2.Event
        self._records = RecordWriter(f)
        self.write(self._event(wall_time=time.time(), file_version="brain.Event:2"))

    def write(self, event) -> None:
        self._records.write(event.SerializeToString())
        self._records.flush()

    def scalars(self, step: int, scalars: dict[str, float]) -> None:
        """Like `tf.summary.scalar`: a float32 scalar tensor with the scalars plugin's data."""
        from tensorboard.compat.proto import summary_pb2, tensor_pb2, types_pb2
        from tensorboard.plugins.scalar import metadata

        values = [
            summary_pb2.Summary.Value(
                tag=tag,
                metadata=metadata.create_summary_metadata(display_name=None, description=""),
                tensor=tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[value]),
            )
            for tag, value in scalars.items()
        ]
        summary = summary_pb2.Summary(value=values)
        self.write(self._event(wall_time=time.time(), step=step, summary=summary))

    def close(self) -> None:
        self._records.close()


class MetricWriter:
    """Writes scalars to TensorBoard (WORKDIR/tensorboard) and WORKDIR/metrics.jsonl.

    The event files are TensorBoard's format, written without TensorFlow (`_EventFile`): a run
    whose data is prepared never imports it. Only process 0 writes; other processes get a
    no-op writer.
    """

    def __init__(self, workdir: str, *, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        self._tb = _EventFile(os.path.join(workdir, "tensorboard"))
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")  # noqa: SIM115

    def resume_at(self, step: int) -> int:
        """Drops the metrics.jsonl rows of steps after `step` (the step training resumes
        from: later rows were written by a run that stopped before its next checkpoint, and
        are written again), so a resumed run never repeats a row. Returns the rows dropped.
        TensorBoard handles repeated steps itself."""
        if not self.enabled:
            return 0
        path = self._jsonl.name
        self._jsonl.close()
        with open(path) as f:
            lines = f.readlines()
        # A line cut short by a kill is dropped too (it cannot be parsed).
        keep = [line for line in lines if _row_step(line) is not None and _row_step(line) <= step]
        if len(keep) != len(lines):
            with open(path + ".tmp", "w") as f:
                f.writelines(keep)
            os.replace(path + ".tmp", path)
        self._jsonl = open(path, "a")  # noqa: SIM115
        return len(lines) - len(keep)

    def write(self, step: int, split: str, scalars: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._tb.scalars(step, {f"{split}/{k}": float(v) for k, v in scalars.items()})
        record = {"step": step, "split": split, **{k: float(v) for k, v in scalars.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def flush(self) -> None:
        if self.enabled:
            self._jsonl.flush()  # event records are flushed as they are written

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()
            self.enabled = False


def _row_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None
