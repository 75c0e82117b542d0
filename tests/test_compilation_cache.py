"""The test run's persistent compilation cache (tests/_session_fixtures.py) only saves time:
train.py gives bitwise the same losses, parameters and optimizer state with the cache off as
the reference run that filled it. (Runs that load their executables from the cache are
compared bitwise with the same reference by the robustness tests, e.g. SIGKILL and restart.)"""

from __future__ import annotations

import os

import _robustness_util as U
import pytest

pytestmark = pytest.mark.slow

TIMINGS = ("steps_per_second", "tokens_per_second", "mfu")  # wall-clock, not results
# jax logs each cache hit (and the cache's initialisation) at DEBUG in these modules.
DEBUG_LOG = {"JAX_DEBUG_LOG_MODULES": "jax._src.compiler,jax._src.compilation_cache"}


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return U.reference(tmp_path_factory)


def _assert_same_as_reference(ref, workdir: str) -> None:
    step, state = U.load_state(workdir)
    ref_step, ref_state = U.load_state(ref.workdir)
    assert step == ref_step == ref.steps
    U.assert_trees_equal(state, ref_state)
    assert U.train_losses(workdir) == U.train_losses(ref.workdir)
    for split in ("train", "eval"):  # every logged number of both runs, not only the losses
        keep = lambda r: {k: v for k, v in r.items() if k not in TIMINGS}
        ours = [keep(r) for r in U.records(workdir) if r["split"] == split]
        theirs = [keep(r) for r in U.records(ref.workdir) if r["split"] == split]
        assert ours == theirs, split


@pytest.mark.skipif(
    "JAX_COMPILATION_CACHE_DIR" not in os.environ, reason="the run has no compilation cache"
)
def test_train_py_results_do_not_depend_on_the_compilation_cache(ref):
    # The reference run wrote its executables (the pmapped train step among them) to the cache.
    cache = os.environ["JAX_COMPILATION_CACHE_DIR"]
    assert any("jit__fun" in name for name in os.listdir(cache)), sorted(os.listdir(cache))[:5]
    uncached = ref.new_workdir("cache-off")
    out = ref.train(uncached, compilation_cache=False, extra_env=DEBUG_LOG)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Persistent compilation cache" not in out.stderr  # every executable compiled here
    _assert_same_as_reference(ref, uncached)
