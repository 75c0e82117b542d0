"""The test run's persistent compilation cache (tests/_session_fixtures.py) only saves time:
train.py gives bitwise the same losses, parameters and optimizer state with the cache off as
the reference run that filled it. (Runs that load their executables from the cache are
compared bitwise with the same reference by the robustness tests, e.g. SIGKILL and restart.)"""

from __future__ import annotations

import os

import _robustness_util as U
import pytest

pytestmark = pytest.mark.slow

# jax logs each cache hit (and the cache's initialisation) at DEBUG in these modules.
DEBUG_LOG = {"JAX_DEBUG_LOG_MODULES": "jax._src.compiler,jax._src.compilation_cache"}


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return U.reference(tmp_path_factory)


@pytest.mark.skipif(
    "JAX_COMPILATION_CACHE_DIR" not in os.environ, reason="the run has no compilation cache"
)
def test_train_py_results_do_not_depend_on_the_compilation_cache(ref):
    # The reference run wrote its executables (the pmapped train step among them) to the cache.
    cache = os.environ["JAX_COMPILATION_CACHE_DIR"]
    assert any("jit__fun" in name for name in os.listdir(cache)), sorted(os.listdir(cache))[:5]
    uncached = ref.new_workdir("cache-off")
    # A fresh interpreter, as a user would start it, with the cache off.
    out = ref.train(uncached, compilation_cache=False, extra_env=DEBUG_LOG, fresh=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Persistent compilation cache" not in out.stderr  # every executable compiled here
    U.assert_same_as_reference(ref, uncached, every_metric=True)
