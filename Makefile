# Two entry points: `make demo` and `make test`. Both create .venv on first use and install the
# exact versions pinned in requirements.lock (jax 0.10.2 needs Python >= 3.11).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# The first interpreter found that is >= 3.11 builds the venv; override with `make PYTHON=...`.
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
# TensorFlow only feeds tf.data: keep it quiet and off any GPU.
export TF_CPP_MIN_LOG_LEVEL ?= 2
# Packages are installed without bytecode (compiling all of TensorFlow's files costs more than
# the install); Python writes the .pyc of each module on its first import instead, into
# .cache/pycache (not next to the sources), even where PYTHONDONTWRITEBYTECODE is set, so that
# every later process (the test suite starts dozens) imports from bytecode.
export PYTHONPYCACHEPREFIX ?= $(CURDIR)/.cache/pycache
export PYTHONDONTWRITEBYTECODE :=
UV_PIN := $(shell grep -m1 '^uv==' requirements.lock)

# pytest-xdist workers for `make test`/`make test-fast` (`make test PYTEST_WORKERS=0`: one process).
PYTEST_WORKERS ?= auto
PYTEST_XDIST := -n $(PYTEST_WORKERS) --dist loadgroup
# Extra pytest arguments, e.g. `make test PYTEST_ARGS=--durations=10`.
PYTEST_ARGS ?=
# What pytest collects, e.g. `make test-fast TESTS=tests/test_attention.py`.
TESTS ?= tests

.PHONY: demo test test-fast lint bench clean

$(VENV)/.installed: requirements.lock pyproject.toml
	@if [ -z "$(PYTHON)" ]; then echo "error: no Python >= 3.11 found (jax 0.10.2 requires it); install one or run 'make PYTHON=/path/to/python3.11'" >&2; exit 1; fi
	@test -x $(PY) || $(PYTHON) -m venv --without-pip $(VENV)
	@# uv (pinned in requirements.lock) installs the lock in seconds where pip takes a minute.
	@# The interpreter's own pip puts uv into the venv (`pip --python`), which spares the venv
	@# a pip of its own (ensurepip: ~6 s); without a usable outer pip the venv gets one and
	@# installs uv itself. pip stays the fallback for a machine that can reach only pip's
	@# configured indexes.
	{ $(PYTHON) -m pip --python $(PY) install --quiet $(UV_PIN) 2>/dev/null || \
	  { $(PY) -m ensurepip >/dev/null && $(PY) -m pip install --quiet $(UV_PIN); }; } && \
	  $(PY) -m uv pip install --quiet --python $(PY) -r requirements.lock || \
	  { $(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip >/dev/null; \
	    $(PY) -m pip install --quiet --no-compile -r requirements.lock; }
	$(PY) -m uv pip install --quiet --python $(PY) --no-deps -e . 2>/dev/null || \
	  { $(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip >/dev/null; \
	    $(PY) -m pip install --quiet --no-deps -e .; }
	@touch $@

demo: $(VENV)/.installed
	$(PY) demo.py

lint: $(VENV)/.installed
	$(PY) -m ruff check .

# The whole suite (what README and CI run).
test: $(VENV)/.installed lint
	$(PY) -m pytest -q $(PYTEST_XDIST) $(PYTEST_ARGS) $(TESTS)

# The edit-test loop: everything but the tests marked slow (whole training runs, subprocesses),
# with a JAX compilation cache kept between runs in .cache/jax-tests (compiling is most of the
# suite's time; entries are keyed by program, flags and versions, so a stale one is never used).
# `make test` always starts from an empty cache.
JAX_TEST_CACHE := $(CURDIR)/.cache/jax-tests
test-fast: $(VENV)/.installed
	@mkdir -p $(JAX_TEST_CACHE)
	TRANSFORMER_JAX_TEST_JAX_CACHE_DIR=$(JAX_TEST_CACHE) \
	$(PY) -m pytest -q $(PYTEST_XDIST) -m "not slow" $(PYTEST_ARGS) $(TESTS)

bench: $(VENV)/.installed
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .cache
