"""transformer_jax.runtime and the package's lazy top level: a command-line program tunes the
garbage collector before JAX, Flax or TensorFlow load."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys

import transformer_jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_console_and_runtime_load_before_jax_and_set_the_thresholds():
    # A fresh interpreter: the test process has imported JAX long ago.
    code = (
        "import gc, sys\n"
        "from transformer_jax import console, runtime\n"
        "loaded = sorted(m for m in ('jax', 'flax', 'tensorflow', 'orbax') if m in sys.modules)\n"
        "runtime.tune_gc()\n"
        "print(loaded, gc.get_threshold())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] (100000, 50, 100)"


def test_entry_points_tune_the_collector_before_their_other_imports():
    light = {"__future__", "os", "sys", "re", "json", "importlib.util", "transformer_jax"}
    for name in ("train.py", "sample.py", "evaluate.py", "export.py", "demo.py"):
        with open(os.path.join(ROOT, name)) as f:
            body = ast.parse(f.read()).body  # top-level statements, in order
        calls = [i for i, node in enumerate(body) if ast.unparse(node) == "runtime.tune_gc()"]
        modules = [
            (i, alias.name if isinstance(node, ast.Import) else node.module)
            for i, node in enumerate(body) if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        ]  # fmt: skip
        heavy = [i for i, module in modules if module not in light]
        assert len(calls) == 1 and all(i > calls[0] for i in heavy), (name, calls, modules)


def test_lazy_top_level_names_are_the_modules_and_class():
    assert transformer_jax.models is importlib.import_module("transformer_jax.models")
    assert transformer_jax.presets is importlib.import_module("transformer_jax.presets")
    from transformer_jax import ModelConfig
    from transformer_jax.config import ModelConfig as Direct

    assert ModelConfig is Direct and transformer_jax.ModelConfig is Direct
    assert {"models", "presets", "ModelConfig", "load_workdir"} <= set(dir(transformer_jax))
    try:
        transformer_jax.no_such_name  # noqa: B018
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("a missing name must raise AttributeError")
