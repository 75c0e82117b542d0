"""transformer_jax.console: what the command lines print by default and with --verbose."""

from __future__ import annotations

import logging

import pytest
from absl import logging as absl_logging

from transformer_jax import console


@pytest.fixture
def restore_logging():
    ours = logging.getLogger("transformer_jax")
    saved = (ours.level, ours.propagate, list(ours.handlers), absl_logging.get_verbosity())
    yield ours
    ours.setLevel(saved[0])
    ours.propagate = saved[1]
    ours.handlers = saved[2]
    absl_logging.set_verbosity(saved[3])


def test_default_prints_our_lines_plainly_and_verbose_brings_libraries_back(
    restore_logging, capsys
):
    ours = restore_logging
    console.setup(verbose=False)
    console.setup(verbose=False)  # idempotent: one handler
    logging.getLogger("transformer_jax.data.pipeline").info("our line")
    logging.getLogger("orbax.checkpoint").info("library INFO")
    assert capsys.readouterr().err == "our line\n"
    assert absl_logging.get_verbosity() == absl_logging.WARNING and not ours.propagate
    assert len([h for h in ours.handlers if h.get_name() == "transformer_jax.console"]) == 1

    console.setup(verbose=True)
    assert absl_logging.get_verbosity() == absl_logging.INFO and ours.propagate
    assert not [h for h in ours.handlers if h.get_name() == "transformer_jax.console"]


def test_verbose_flag_is_read_before_flag_parsing():
    assert console.verbose_flag(["train.py", "--workdir=w", "--verbose"])
    assert console.verbose_flag(["sample.py", "--verbose=True"])
    assert not console.verbose_flag(["train.py", "--noverbose", "--verbose=false"])
