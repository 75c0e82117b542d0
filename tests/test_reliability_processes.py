"""Real train.py processes for the workdir lock and disk faults (issue 14).

Disk faults are real filesystem conditions, made from the test side with no hook in the
library: `unshare --user --map-root-user --mount` gives the test an unprivileged mount
namespace in which (a) the workdir is bind-mounted read-only (EROFS) and (b) the checkpoints
folder is a size-limited tmpfs that fills up during a save (ENOSPC from the kernel, through
orbax and tensorstore). An I/O error (EIO) on the manifest write is in
test_reliability_inputs.py's neighbour below, in-process, where `open` can be made to fail.
Every run starts from the reference run's saved checkpoints (tests/_robustness_util.py).
"""

from __future__ import annotations

import builtins
import errno
import os
import shlex
import shutil
import subprocess
import sys

import _robustness_util as U
import pytest

from transformer_jax.train import workdir as wd
from transformer_jax.train.checkpoints import Checkpoints, CheckpointSaveError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return U.reference(tmp_path_factory)


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return probe.returncode == 0


needs_namespaces = pytest.mark.skipif(
    not _unshare_works(), reason="needs unprivileged user + mount namespaces (unshare -rm)"
)


def _status(directory: str) -> dict[int, str]:
    ckpt = Checkpoints(directory, async_save=False)
    try:
        return ckpt.step_status()
    finally:
        ckpt.close()


def _train_in_namespace(ref, workdir: str, setup: str, after: str = "", **overrides):
    """Runs `setup` (shell, as namespace root), then train.py on `workdir` (8 steps), then
    `after` (the namespace's mounts vanish with it: copy out what the test reads)."""
    flags = U.config_flags(ref.corpus, 8, **overrides)
    train = shlex.join([sys.executable, U.TRAIN_PY, f"--workdir={workdir}", *flags])
    script = f"set -e\n{setup}\nset +e\n{train}\nrc=$?\n{after}\nexit $rc\n"
    # Without TF's logging variables (U.env sets one): train.py must quiet TF by itself.
    env = {k: v for k, v in U.env().items() if not k.startswith("TF_")}
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=U.TIMEOUT,
        cwd=U.ROOT,
    )


def _last_line(out) -> str:
    lines = out.stderr.strip().splitlines()
    return lines[-1] if lines else ""


# ----------------------------------------------------------------------------- the lock


def test_second_train_on_a_held_workdir_exits_2_naming_the_holder(ref):
    """This test's process holds the lock (WorkdirLock, as a running train.py does); a real
    train.py on the workdir is refused before reading any checkpoint, and readers still read.
    (A lock left by a SIGKILLed train.py is taken over: test_robustness_train.py's sigkill
    test checks the restart's warning.)"""
    workdir = ref.new_workdir("lock", checkpoints=[6])
    with wd.WorkdirLock(workdir):
        out = ref.train(workdir)
        assert out.returncode == U.EXIT_INVALID, out.stderr[-2000:]
        assert "Traceback" not in out.stderr and "Resumed" not in out.stderr
        line = _last_line(out)
        assert line.startswith(f"train.py: invalid configuration or input: {workdir} is in use by "
                               f"another train.py: pid {os.getpid()} on host ")  # fmt: skip
        assert line.endswith("(sample.py and export.py may read it meanwhile).")
        assert wd.load_params(workdir)[2] == 6  # readers take no lock
    assert not os.path.exists(os.path.join(workdir, "metrics.jsonl"))  # nothing written


# ----------------------------------------------------------------------------- disk faults


@needs_namespaces
def test_read_only_workdir_on_resume_exits_2_before_any_compute(ref):
    workdir = ref.new_workdir("readonly", checkpoints=[4])
    q = shlex.quote(workdir)
    out = _train_in_namespace(
        ref, workdir, f"mount --bind {q} {q}\nmount -o remount,ro,bind {q} {q}"
    )
    assert out.returncode == U.EXIT_INVALID, out.stderr[-2000:]
    assert _last_line(out) == (
        f"train.py: invalid configuration or input: --workdir {workdir!r}: {workdir} is not "
        "writable (Read-only file system); train.py writes checkpoints, metrics and its lock "
        "there. Fix its permissions or mount, or give another --workdir (sample.py and "
        "export.py read a read-only workdir)."
    )
    assert "compiling" not in out.stderr and "Resumed" not in out.stderr
    assert not os.path.exists(os.path.join(workdir, "metrics.jsonl"))


def _disk_usage(directory: str) -> int:
    """Bytes a copy of `directory` takes on tmpfs (whole 4 KiB pages per file)."""
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            total += -(-os.path.getsize(os.path.join(root, name)) // 4096) * 4096
    return total


@needs_namespaces
def test_disk_full_during_a_save_exits_74_naming_the_step_and_keeps_earlier_steps(ref):
    workdir = ref.new_workdir("enospc", checkpoints=[2, 4])
    ckpt, kept = os.path.join(workdir, "checkpoints"), os.path.join(workdir, "kept")
    after = os.path.join(workdir, "after", "checkpoints")
    os.rename(ckpt, kept)
    step_bytes = _disk_usage(os.path.join(kept, "4"))
    size = _disk_usage(kept) + step_bytes // 2  # room for half of step 6
    q = shlex.quote
    out = _train_in_namespace(
        ref,
        workdir,
        f"mkdir {q(ckpt)}\nmount -t tmpfs -o size={size} tmpfs {q(ckpt)}\n"
        f"cp -a {q(kept)}/. {q(ckpt)}/",
        f"mkdir -p {q(after)}\ncp -a {q(ckpt)}/. {q(after)}/",
        async_checkpoints=False,  # the error at step 6's save, not at the next one (the
    )  # background save's error path: the EIO test below)
    assert out.returncode == 74, out.stderr[-3000:]
    # Ours is the one train.py line (orbax's writer threads log their own tracebacks around it).
    # (A thread's message may share the start of the line: the line is taken from "train.py:".)
    (line,) = [x[x.index("train.py: ") :] for x in out.stderr.splitlines() if "train.py: " in x]
    assert line.startswith(f"train.py: Saving checkpoint step 6 in {ckpt} failed: "), line
    assert "No space left on device" in line
    assert line.endswith("rerun the same command to resume from the latest of them.")
    assert [r["step"] for r in U.records(workdir) if r["split"] == "train"][-1] == 6
    assert "oneDNN" not in out.stderr and "cpu_feature_guard" not in out.stderr  # TF is quiet
    assert _status(after) == {2: "trusted", 4: "trusted"}
    saved = U.load_state(os.path.dirname(after), 4)[1]
    U.assert_trees_equal(saved, U.load_state(ref.workdir, 4)[1])


def test_io_error_on_the_manifest_leaves_the_step_untrusted_and_the_resave_trusted(
    ref, tmp_path, monkeypatch
):
    """EIO where the manifest is written (orbax has finalized the step): the save fails naming
    the step, the step is never trusted, and saving it again moves it to untrusted/ first."""
    directory = str(tmp_path / "checkpoints")
    shutil.copytree(os.path.join(ref.workdir, "checkpoints"), directory)
    for name in os.listdir(directory):
        if name.isdigit() and int(name) > 4:
            shutil.rmtree(os.path.join(directory, name))
    state = U.load_state(ref.workdir, 6)[1]
    real_open = builtins.open

    def failing_open(path, mode="r", *args, **kwargs):
        if "w" in mode and os.path.basename(str(path)).startswith("checksums.json.tmp"):
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
        return real_open(path, mode, *args, **kwargs)

    ckpt = Checkpoints(directory, async_save=True, max_to_keep=10)
    try:
        monkeypatch.setattr(builtins, "open", failing_open)
        ckpt.save(6, state)
        with pytest.raises(CheckpointSaveError) as e:
            ckpt.wait()
        monkeypatch.setattr(builtins, "open", real_open)
        assert str(e.value).startswith(f"Saving checkpoint step 6 in {directory} failed: OSError:")
        assert "Input/output error" in str(e.value) and e.value.step == 6
        assert ckpt.step_status() == {2: "trusted", 4: "trusted", 6: "no_manifest"}
        assert ckpt.latest_step() == 4
        ckpt.save(6, state)
        ckpt.wait()
    finally:
        ckpt.close()
    assert _status(directory) == {2: "trusted", 4: "trusted", 6: "trusted"}
    moved = os.listdir(os.path.join(directory, "untrusted"))
    assert len(moved) == 1 and moved[0].startswith("6-replaced-")
    U.assert_trees_equal(U.load_state(str(tmp_path), 6)[1], state)
