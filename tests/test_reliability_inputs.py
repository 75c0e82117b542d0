"""Every user mistake is one clear ValueError (train.py: exit 2) naming the field or path and the
fix, found before any work; the workdir lock's rules, in-process (issue 14). The real-process
cases (a second train.py, disk faults, the exit codes) are in test_reliability_processes.py."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time

import _robustness_util as U
import numpy as np
import pytest

from transformer_jax import hf
from transformer_jax.data import builders
from transformer_jax.hf.api import check_fits_memory
from transformer_jax.train import default_config, run_config, train_and_evaluate
from transformer_jax.train import workdir as wd
from transformer_jax.train.run_config import ConfigError

GPT2 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_fixtures", "gpt2")


def _config(**fields):
    """The robustness runs' tiny config (files need not exist: each case fails before)."""
    return U.make_config(("/nonexistent/train.txt", "/nonexistent/eval.txt"), 2, **fields)


# ----------------------------------------------------------------------------- config fields


@pytest.mark.parametrize(
    ("field", "closest"),
    [("lerning_rate", "learning_rate"), ("num_train_step", "num_train_steps"),
     ("warmup", "warmup_steps"), ("checkpoint_every", "checkpoint_every_steps")],
)  # fmt: skip
def test_unknown_field_in_a_recipe_names_the_closest_known_ones(tmp_path, field, closest):
    config = _config()
    config[field] = 1
    workdir = tmp_path / "never"
    with pytest.raises(ConfigError) as e:
        train_and_evaluate(config, str(workdir))
    message = str(e.value)
    assert message.startswith(f"config.{field}: unknown field {field!r}; the closest known names: ")
    names = message.split("the closest known names: ")[1].split(" (")[0].split(", ")
    assert names[0] == closest and len(names) == 3  # difflib's ranking, best first
    assert all(n in default_config() for n in names)
    assert "\n" not in message and not workdir.exists()


def test_unknown_field_paths():
    assert run_config.unknown_field(None, "learning_rate") is None
    assert run_config.unknown_field(None, "model_overrides.any.path") is None  # ModelConfig checks
    message = run_config.unknown_field(None, "learning_rate.x")
    assert message.startswith("config.learning_rate.x: unknown field 'x'; no fields here")


@pytest.mark.slow  # a subprocess
def test_unknown_config_override_exits_2_with_one_line():
    """train.py itself (the override fails while absl parses the flags, before jax loads)."""
    out = subprocess.run(
        [sys.executable, U.TRAIN_PY, "--workdir=/nonexistent/w", "--config.lerning_rate=0.1"],
        env=U.env(),
        capture_output=True,
        text=True,
        timeout=U.TIMEOUT,
        cwd=U.ROOT,
    )
    assert out.returncode == U.EXIT_INVALID
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("train.py: invalid configuration: config.lerning_rate: unknown")
    assert "closest known names: learning_rate," in lines[0]


RECIPE_HINT = "give a recipe file (see configs/gpt_tiny.py)"
RECIPES = {  # file text -> the one line train.py prints after "invalid --config: "
    "syntax": (
        "import ml_collections\n\ndef get_config():\n    c = ml_collections.ConfigDict(\n"
        "    return c\n",
        "{path}, line 4: SyntaxError: '(' was never closed",
    ),
    "indentation": (
        "def get_config():\nreturn 1\n",
        "{path}, line 2: IndentationError: expected an indented block after function "
        "definition on line 1",
    ),
    "raises_at_import": (
        "import ml_collections\nX = 1\nraise RuntimeError('no data folder')\n",
        "{path}, line 3 (at import): RuntimeError: no data folder",
    ),
    "no_get_config": (
        "import ml_collections\n\ndef get_conf():\n    return ml_collections.ConfigDict()\n",
        "{path} defines no get_config() function; a recipe returns its "
        "ml_collections.ConfigDict from get_config() (see configs/gpt_tiny.py)",
    ),
    "get_config_raises": (
        "def get_config():\n    rate = 1e-3\n    return {'lr': rate}['learning_rate']\n",
        "{path}, line 3 (in get_config()): KeyError: 'learning_rate'",
    ),
    "returns_none": (
        "def get_config():\n    pass\n",
        "{path}: get_config() returned NoneType, not an ml_collections.ConfigDict "
        "(see configs/gpt_tiny.py)",
    ),
}


@pytest.mark.parametrize("case", sorted(RECIPES))
def test_a_recipe_that_cannot_load_is_one_line_naming_the_file_line_and_error(tmp_path, case):
    from transformer_jax.train.recipe import load_problem

    text, expected = RECIPES[case]
    path = tmp_path / f"{case}.py"
    path.write_text(text)
    assert load_problem(str(path)) == expected.format(path=path)
    assert load_problem(os.path.join(U.ROOT, "configs", "gpt_tiny.py")) is None
    missing = load_problem(str(tmp_path / "nope.py"))
    assert missing == f"{str(tmp_path / 'nope.py')!r} does not exist; " + RECIPE_HINT


@pytest.mark.slow  # a subprocess
def test_recipe_with_a_syntax_error_exits_2_with_one_line(tmp_path):
    """train.py itself: ml_collections runs the file while absl parses the flags."""
    text, expected = RECIPES["syntax"]
    path = tmp_path / "bad.py"
    path.write_text(text)
    out = subprocess.run(
        [sys.executable, U.TRAIN_PY, f"--config={path}", f"--workdir={tmp_path / 'w'}"],
        env=U.env(),
        capture_output=True,
        text=True,
        timeout=U.TIMEOUT,
        cwd=U.ROOT,
    )
    assert out.returncode == U.EXIT_INVALID, out.stderr
    assert out.stderr == f"train.py: invalid --config: {expected.format(path=path)}\n"
    assert not (tmp_path / "w").exists()


# ----------------------------------------------------------------------------- paths


def test_workdir_that_is_a_file_or_under_a_file(tmp_path):
    path = tmp_path / "afile"
    path.write_text("not a directory")
    with pytest.raises(ConfigError, match=r"--workdir '.*afile' is a file, not a directory"):
        train_and_evaluate(_config(), str(path))
    with pytest.raises(ConfigError, match=r"--workdir '.*afile/sub' cannot be created \(Not a"):
        train_and_evaluate(_config(), str(path / "sub"))
    assert path.read_text() == "not a directory"


def test_data_directory_without_files_is_named(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / ".hidden").write_text("skipped, as dot files are")
    message = r"train_files='.*corpus': the directory '.*corpus' holds no files"
    with pytest.raises(ValueError, match=message):
        builders.text_files_splits(str(folder))
    # Through the trainer: exit 2's error type, after the lock was taken (and released).
    workdir = tmp_path / "w"
    with pytest.raises(ConfigError, match=message):
        train_and_evaluate(_config(train_files=str(folder)), str(workdir))
    assert (workdir / wd.LOCK_FILE).read_text() == ""  # released: no holder named


def test_hf_directory_with_absurd_sizes_is_refused_before_reading(tmp_path):
    with open(os.path.join(GPT2, "config.json")) as f:
        hf_config = json.load(f)
    # Every size that the safetensors file holds: the byte count of check_fits_memory.
    config, params = hf.load(GPT2)
    stored = sum(np.asarray(x).size for x in _leaves(params))
    needed = 4 * stored
    check_fits_memory(config, True, np.float32, "w", available=needed)
    with pytest.raises(ValueError, match=rf"w: the model has {stored:,} parameters"):
        check_fits_memory(config, True, np.float32, "w", available=needed - 1)

    absurd = tmp_path / "absurd"
    shutil.copytree(GPT2, absurd)
    D, F, L, V, P = 2**20, 2**22, 2, hf_config["vocab_size"], hf_config["n_positions"]
    hf_config.update(n_embd=D, n_inner=F, n_layer=L, n_head=2**10)
    (absurd / "config.json").write_text(json.dumps(hf_config))
    # GPT-2's count, written out: tied wte, wpe, per layer (2 norms, qkv, proj, fc, proj), norm.
    count = V * D + P * D + L * (2 * D + 3 * D * D + 3 * D + D * D + D + 2 * D + D * F + F
                                 + F * D + D) + 2 * D  # fmt: skip
    with pytest.raises(ValueError) as e:
        hf.load(str(absurd))  # not the tensors' shape mismatch: the size check comes first
    assert f"config.json: the model has {count:,} parameters ({4 * count / 2**30:,.1f} GiB" in str(
        e.value
    ) and " GiB of memory available; check the sizes in config.json" in str(e.value)


def _leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


# ----------------------------------------------------------------------------- the lock


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _write_holder(path: str, **holder) -> None:
    with open(path, "w") as f:
        json.dump(holder, f)


def test_lock_excludes_a_second_holder_and_release_empties_it(tmp_path):
    with wd.WorkdirLock(str(tmp_path)):
        holder = json.loads((tmp_path / wd.LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(wd.WorkdirLockedError) as e:  # a second open file: flock excludes
            wd.WorkdirLock(str(tmp_path)).acquire()
        assert f"pid {os.getpid()} on host {socket.gethostname()!r} (started " in str(e.value)
    assert (tmp_path / wd.LOCK_FILE).read_text() == ""
    wd.WorkdirLock(str(tmp_path)).acquire().release()  # free again


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path, caplog):
    pid = _dead_pid()
    _write_holder(str(tmp_path / wd.LOCK_FILE), host=socket.gethostname(), pid=pid, started="x")
    with caplog.at_level(logging.WARNING, logger="transformer_jax"):
        lock = wd.WorkdirLock(str(tmp_path)).acquire()
    lock.release()
    assert f"Took over the workdir lock of pid {pid}" in caplog.text
    assert "no longer running" in caplog.text


def test_lock_on_another_host_waits_for_its_heartbeat_to_go_stale(tmp_path, caplog):
    path = str(tmp_path / wd.LOCK_FILE)
    _write_holder(path, host="elsewhere.example", pid=1, started="x")
    with pytest.raises(wd.WorkdirLockedError, match=r"pid 1 on host 'elsewhere.example'.*"
                       r"heartbeat \d+ s ago .*lock_stale_seconds=600 s"):  # fmt: skip
        wd.WorkdirLock(str(tmp_path), stale_after=600).acquire()
    old = time.time() - 601
    os.utime(path, (old, old))
    with caplog.at_level(logging.WARNING, logger="transformer_jax"):
        lock = wd.WorkdirLock(str(tmp_path), stale_after=600).acquire()
    assert "no heartbeat for 601 s" in caplog.text
    # The new holder's heartbeat refreshes the mtime (every stale_after / 4 seconds).
    lock.release()
    lock = wd.WorkdirLock(str(tmp_path), stale_after=0.2).acquire()
    try:
        before = os.stat(path).st_mtime
        time.sleep(0.3)
        assert os.stat(path).st_mtime > before
    finally:
        lock.release()


# ----------------------------------------------------------------------------- TF's notices


def _python_files() -> list[str]:
    out = []
    for root, dirs, files in os.walk(U.ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("tests", "workdirs")]
        out += [os.path.join(root, f) for f in files if f.endswith(".py")]
    return sorted(out)


def test_every_file_that_imports_tensorflow_quiets_it_first():
    """TF reads TF_CPP_MIN_LOG_LEVEL / TF_ENABLE_ONEDNN_OPTS once, when it loads: every file
    that imports tensorflow (or tensorflow_datasets) calls console.quiet_environment at module
    level on an earlier line. (train.py's own run without those variables:
    test_reliability_processes.py's disk-full test checks its output.)"""
    import ast

    importers = {}
    for path in _python_files():
        with open(path) as f:
            tree = ast.parse(f.read())
        quiet = [
            node.lineno
            for node in tree.body
            if isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "attr", None) == "quiet_environment"
        ]
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )  # fmt: skip
            if any(n.split(".")[0] in ("tensorflow", "tensorflow_datasets") for n in names):
                importers[os.path.relpath(path, U.ROOT)] = quiet
                assert quiet and quiet[0] < node.lineno, (path, node.lineno)
    assert {"transformer_jax/data/builders.py", "train.py", "demo.py"} <= set(importers)
