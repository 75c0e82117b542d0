"""What the command lines (train.py, sample.py, export.py) print, and how quietly.

By default a program prints its own lines only: this library's log records (logger
`transformer_jax.*`, INFO and up) as plain `message` lines on stderr, written through tqdm so
that they never tear a progress bar; everything else (absl, orbax, jax, TensorFlow, TFDS)
only from WARNING up. `--verbose` brings every library's INFO lines back (absl's format).

TensorFlow's C++ notices are turned off through the environment before it is imported
(`quiet_environment`): TF_CPP_MIN_LOG_LEVEL=2 and TF_ENABLE_ONEDNN_OPTS=0 (the oneDNN notice;
TF only feeds tf.data here, so its oneDNN kernels are never used for results). Every entry
point calls it first thing, and so does transformer_jax.data (the one module that imports
TensorFlow), so that any program reading data is quiet too; a value already in the
environment wins.
"""

from __future__ import annotations

import logging
import os
import sys

_HANDLER_NAME = "transformer_jax.console"


def verbose_flag(argv: list[str]) -> bool:
    """Whether a command line holds --verbose (read before absl parses the flags)."""
    return any(a in ("--verbose", "-verbose") or a.lower() == "--verbose=true" for a in argv)


def quiet_environment(verbose: bool = False) -> None:
    """Sets TensorFlow's logging variables (unless the user set them); call before TF loads."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")
    if not verbose:
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


class _TqdmHandler(logging.StreamHandler):
    """Writes a record as one line through `tqdm.write` (above any progress bar)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            import tqdm

            tqdm.tqdm.write(self.format(record), file=self.stream or sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup(verbose: bool = False) -> None:
    """Configures logging for a command line program (see the module docstring). Idempotent."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.WARNING)
    ours = logging.getLogger("transformer_jax")
    ours.setLevel(logging.INFO)
    if verbose:  # one format for every library: absl's, through the root logger
        ours.propagate = True
        ours.handlers = [h for h in ours.handlers if h.get_name() != _HANDLER_NAME]
        return
    if not any(h.get_name() == _HANDLER_NAME for h in ours.handlers):
        handler = _TqdmHandler(sys.stderr)
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter("%(message)s"))
        ours.addHandler(handler)
    ours.propagate = False
