"""Session-wide test set-up, loaded by tests/conftest.py (`pytest_plugins`).

1. JAX's persistent compilation cache in a directory created fresh for each pytest run and
   removed at its end. The run's process (the xdist controller when run with `-n`) creates it
   at import, before anything is compiled, and exports it as JAX_COMPILATION_CACHE_DIR with
   thresholds that keep CPU entries (JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0,
   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=-1). xdist workers and every subprocess the tests
   start (train.py, sample.py, `python -c`) inherit the environment, so a train step compiled
   once is loaded, not compiled, by the next process. The cache only saves time: XLA compiles
   the same HLO to the same executable (test_compilation_cache.py checks this bitwise), and
   TRANSFORMER_JAX_TEST_JAX_CACHE=0 runs the whole suite without it. A directory given in
   TRANSFORMER_JAX_TEST_JAX_CACHE_DIR is used instead and kept (`make test-fast` keeps one
   between runs of the edit-test loop).
2. `shared_dir` / `build_once`: a directory, and a build in it done by exactly one process per
   run (a file lock), shared by all xdist workers; e.g. the robustness reference run.
3. The `serial` marker (pyproject.toml): tests that send signals, measure time, bind ports or
   start several processes of their own. Under xdist they all go to one group (one worker, one
   at a time), so two of them never compete with each other for the machine.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import gc
import os
import shutil
import tempfile

import pytest
from _robustness_util import xla_flags

from transformer_jax import runtime

_OWNED = "TRANSFORMER_JAX_TEST_JAX_CACHE_DIR"  # set by the process that created the cache dir
_SWITCH = "TRANSFORMER_JAX_TEST_JAX_CACHE"  # "0": run without the persistent cache
_created: list[str] = []


def _setup_compilation_cache() -> None:
    if os.environ.get(_SWITCH, "1") == "0":
        os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
        os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    else:
        if _OWNED not in os.environ:  # the run's first process: a fresh, empty directory
            path = tempfile.mkdtemp(prefix="transformer_jax-test-jax-cache-")
            _created.append(path)
            os.environ[_OWNED] = path
        os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ[_OWNED]
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
    # conftest.py has imported jax already (its options read the environment at import).
    import jax

    enabled = "JAX_COMPILATION_CACHE_DIR" in os.environ
    jax.config.update("jax_enable_compilation_cache", enabled)
    if enabled:
        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


_setup_compilation_cache()

# XLA's fast-compile flags for this process and, through XLA_FLAGS, its subprocesses
# (`_robustness_util.xla_flags` says why).
if xla_flags():  # before any backend exists (conftest imported jax, but ran nothing)
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {xla_flags()}".strip()


# Python's cyclic garbage collector, tuned as the command-line programs tune it
# (transformer_jax/runtime.py): tracing and compiling create millions of short-lived objects,
# so the default thresholds (700, 10, 10) run ~4,000 young and ~20 full collections over a few
# test files, each full one walking every live object (a worker holds over a million: jaxprs
# and executables in JAX's caches). 100,000 new objects per young collection cut the time
# spent collecting from 8.9 s to 1.2 s on test_models + test_hf + test_presets in one process
# (total CPU -6%); memory is no concern at this size.
runtime.tune_gc()


def pytest_collection_finish(session):
    gc.collect()
    gc.freeze()  # what collection imported and built lives on: never scanned again


def pytest_unconfigure(config):
    for path in _created:  # only the process that created it (the controller under xdist)
        shutil.rmtree(path, ignore_errors=True)


# Seconds per test module outside the serial group, summed from a full run's junit XML
# (2026-12-02): only the order in which xdist hands the modules out, longest first, so that a
# long one never starts last on one worker while the other idles. A module missing here is
# estimated from its test count.
MODULE_SECONDS = {
    "test_models": 124, "test_sharding": 93, "test_hf_seq2seq_families": 68,
    "test_train_steps": 63, "test_sampling_generate": 61, "test_robustness_train": 54,
    "test_hf": 51, "test_attention_maps": 51, "test_presets": 34, "test_migration": 34,
    "test_cli": 28, "test_hf_cli": 28, "test_decoder_families": 27, "test_data_pipeline": 16,
    "test_encoder_families": 15, "test_robustness_checkpoints": 15,
    "test_reliability_processes": 12, "test_fuzz": 11, "test_long_context": 11,
    "test_readme": 11, "test_compilation_cache": 11, "test_attention": 10,
    "test_train_loop": 10, "test_xlnet": 9, "test_blocks": 9, "test_parallel": 8,
    "test_positions": 7,
}  # fmt: skip
_BY_MODULE = "TRANSFORMER_JAX_TEST_GROUP_BY_MODULE"  # "0": hand out test by test


def _module(item) -> str:
    return os.path.splitext(os.path.basename(str(item.path)))[0]


def pytest_configure(config):
    # xdist would order the groups by their number of tests; ours come in the order below.
    if os.environ.get(_BY_MODULE, "1") != "0" and hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups into the node ids
def pytest_collection_modifyitems(config, items):
    """Under xdist (--dist loadgroup) tests go to workers by group:
    - `serial` tests share one group: one worker runs them, in turn, so that they never
      compete with each other for the machine;
    - every other test is grouped with its module: one worker runs a module's tests, so the
      programs they share (jitted functions, per-shape eager ops, module fixtures) are traced
      and compiled once, not once per worker (TRANSFORMER_JAX_TEST_GROUP_BY_MODULE=0: test by
      test, as before).
    Groups are handed out longest first (serial, then MODULE_SECONDS), so that the short
    ones fill the gaps at the end."""
    by_module = os.environ.get(_BY_MODULE, "1") != "0"
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        if item.get_closest_marker("serial"):
            item.add_marker(pytest.mark.xdist_group("serial"))
        elif by_module:
            item.add_marker(pytest.mark.xdist_group(_module(item)))
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker sorts its identical collection
        counts = collections.Counter(_module(item) for item in items)

        def weight(item) -> float:
            module = _module(item)
            return MODULE_SECONDS.get(module, 0.3 * counts[module]) if by_module else 0.0

        # Stable: collection order within serial, then by module weight (or, test by test:
        # slow first).
        items.sort(
            key=lambda i: (
                not i.get_closest_marker("serial"),
                -weight(i),
                not i.get_closest_marker("slow"),
            )
        )


def shared_dir(tmp_path_factory, name: str) -> str:
    """tmp directory `name` of this pytest run, the same path in every xdist worker."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # popen-gwN/.. is the run's own pytest-N directory
    path = os.path.join(str(base), name)
    os.makedirs(path, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(path: str):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_once(directory: str, build) -> None:
    """Runs `build(directory)` once per run, whichever worker asks first; the others wait for
    it. A failed build leaves no mark, so the next caller retries it (and fails likewise)."""
    done = os.path.join(directory, ".built")
    with _locked(directory + ".lock"):
        if os.path.exists(done):
            return
        for name in os.listdir(directory):  # leftovers of a failed attempt
            path = os.path.join(directory, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        build(directory)
        open(done, "w").close()
