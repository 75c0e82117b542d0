"""Process-wide settings of this library's command-line programs (train.py, sample.py,
evaluate.py, export.py, demo.py), applied first thing, before JAX, Flax or TensorFlow load.

Python's cyclic garbage collector: at its default thresholds (700, 10, 10) a program that
imports JAX, Flax, orbax and TFDS and traces a model runs ~500 young, ~45 middle and a few
full collections before its first train step, each full one walking every object the
imports and traces created, which all live until exit. Measured in one tiny `train.py` run
(gpt-tiny, 8 steps, 2-core CPU): 0.48 s of collecting in a 6 s process; with the thresholds
below 3 collections, 0.12 s (0.21 s when set only after `import jax`). Memory is no concern:
a young collection still runs every 100,000 net allocations. The test suite's workers use
the same setting (tests/_session_fixtures.py).

The package's `__init__` imports nothing heavy (its `models`, `presets` and `ModelConfig` load
on first use), so `from transformer_jax import runtime` can run before those imports.
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (100_000, 50, 100)  # young collections per 100,000 net allocations


def tune_gc() -> None:
    """Sets the collector's thresholds for a program's lifetime (see the module docstring).
    A library never calls this on import: it is the program's choice."""
    gc.set_threshold(*GC_THRESHOLDS)
