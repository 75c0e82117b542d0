"""What the benchmarks that compare against PyTorch share: the machine's speed at a moment."""

from __future__ import annotations

import time


def calibrate(n: int = 3_000_000) -> float:
    """Seconds of a fixed pure-Python loop: the machine's speed at this moment (this shared
    VM's speed moves by up to ~2x within minutes; BENCHMARKS.md, the test suite's section)."""
    start, x = time.perf_counter(), 0
    for i in range(n):
        x += i * i
    return time.perf_counter() - start
