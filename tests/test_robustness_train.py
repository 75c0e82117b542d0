"""train.py under kills, preemption, exceptions, NaNs and device-count changes (issue #4).

Every run is a process of its own running train.py on a tiny GPT (faults are injected by
tests/_robustness_util.py, which monkeypatches library functions and then runs train.py's own
main); the processes are forked from a server that has imported JAX and the library
(tests/_forkserver.py), while the one straight reference run that they are all compared with
is a fresh `python train.py`: parameters, optimizer state and per-step losses must be bitwise
equal (np.array_equal / ==) after any interruption.
"""

from __future__ import annotations

import glob
import json
import os
import re
import time

import _robustness_util as U
import jax
import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return U.reference(tmp_path_factory)


def _latest(workdir: str) -> int | None:
    trusted = [s for s, v in U.checkpoint_status(workdir).items() if v == "trusted"]
    return trusted[-1] if trusted else None


def _resumed_from(out) -> int | None:
    lines = [line for line in out.stderr.splitlines() if "Resumed from step" in line]
    return int(lines[-1].split("Resumed from step")[1].split()[0]) if lines else None


@pytest.mark.serial  # signals / a timed save in flight
def test_sigkill_and_restart_is_bitwise_identical(ref):
    workdir = ref.new_workdir("sigkill")
    # Synchronous saves make the kill point exact: step 4 is on disk when step 5 is asked for.
    killed = ref.train(workdir, faults={"kill_at_step": 5}, overrides={"async_checkpoints": False})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert _latest(workdir) == 4
    assert [r["step"] for r in U.records(workdir) if r["split"] == "train"] == [1, 2, 3, 4, 5]
    first_loss_5 = U.train_losses(workdir)[5]
    # The killed run's workdir lock (issue 14) still names it; the restart takes it over.
    with open(os.path.join(workdir, "train.lock")) as f:
        killed_pid = json.load(f)["pid"]

    out = ref.train(workdir)
    assert out.returncode == 0, out.stderr[-2000:]
    assert _resumed_from(out) == 4
    assert f"Took over the workdir lock of pid {killed_pid} on host" in out.stderr
    steps = [r["step"] for r in U.records(workdir) if r["split"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]  # step 5 done twice: its first row was dropped
    assert U.train_losses(workdir)[5] == first_loss_5
    U.assert_same_as_reference(ref, workdir)
    U.assert_trees_equal(U.load_state(workdir, 6)[1], U.load_state(ref.workdir, 6)[1])


@pytest.mark.serial  # signals / a timed save in flight
def test_sigkill_during_async_save_resumes_from_newest_complete_step(ref):
    workdir = ref.new_workdir("savekill")
    keep = {"keep_checkpoints": 2}
    tmp = os.path.join(workdir, "checkpoints", "4.orbax-checkpoint-tmp*")
    for moment in ("tmp_created", "data_written", "before_rename"):
        out = ref.train(workdir, faults={"kill_in_save": [4, moment]}, overrides=keep)
        assert out.returncode == -9, (moment, out.stderr[-2000:])
        assert _resumed_from(out) in (None, 2), moment
        assert glob.glob(tmp), moment  # the partial save is there ...
        assert U.checkpoint_status(workdir) == {2: "trusted"}, (
            moment
        )  # ... and never taken as a step
    out = ref.train(workdir, faults={"kill_in_save": [4, "before_manifest"]}, overrides=keep)
    assert out.returncode == -9 and _resumed_from(out) == 2
    assert "Removed 4.orbax-checkpoint-tmp" in out.stderr
    # orbax finished step 4 (commit marker, renamed) but its checksums were never written.
    assert os.path.exists(os.path.join(workdir, "checkpoints", "4", "commit_success.txt"))
    assert U.checkpoint_status(workdir) == {2: "trusted", 4: "no_manifest"}

    out = ref.train(workdir, faults={"kill_in_save": [6, "in_retention"]}, overrides=keep)
    assert out.returncode == -9 and _resumed_from(out) == 2
    assert "Ignoring checkpoint step 4" in out.stderr
    assert glob.glob(os.path.join(workdir, "checkpoints", "untrusted", "4-replaced-*"))
    assert U.checkpoint_status(workdir) == {4: "trusted", 6: "trusted"}  # 2 was being deleted

    out = ref.train(workdir, overrides=keep)
    assert out.returncode == 0, out.stderr[-2000:]
    assert _resumed_from(out) == 6
    assert U.checkpoint_status(workdir) == {6: "trusted", 8: "trusted"}
    assert not glob.glob(os.path.join(workdir, "checkpoints", ".deleting-*"))
    U.assert_same_as_reference(ref, workdir)


@pytest.mark.serial  # signals / a timed save in flight
def test_sigterm_saves_the_current_step_and_exits_75(ref):
    workdir = ref.new_workdir("sigterm")
    # Before training (data preparation): nothing new to save, exit at once.
    out = ref.train(workdir, faults={"sigterm_in_setup": 1})
    assert out.returncode == U.EXIT_PREEMPTED, out.stderr[-2000:]
    assert "before training started" in out.stderr and _latest(workdir) is None

    expected = [("sigterm_in_compile", None, 1), ("sigterm_in_eval", 1, 4)]
    expected.append(("sigterm_at_step", 4, 7))  # asked for step 6's batch: finishes it, saves 7
    for fault, resumed, saved in expected:
        start = time.monotonic()
        value = 6 if fault == "sigterm_at_step" else 1
        out = ref.train(workdir, faults={fault: value})
        assert out.returncode == U.EXIT_PREEMPTED, (fault, out.stderr[-2000:])
        assert time.monotonic() - start < 120, fault  # bounded: no hang after the signal
        assert f"state saved at step {saved}" in out.stderr, fault
        assert _resumed_from(out) == resumed, fault
        assert _latest(workdir) == saved, fault
    # The evaluation interrupted at step 4 was skipped, not written half-done.
    assert 4 not in [r["step"] for r in U.records(workdir) if r["split"] == "eval"]

    out = ref.train(workdir)
    assert out.returncode == 0 and _resumed_from(out) == 7, out.stderr[-2000:]
    U.assert_same_as_reference(ref, workdir)


def _assert_lines(text: str, patterns: list[str]) -> None:
    """Every line of `text` matches its pattern (re.fullmatch), in order, none more."""
    lines = text.splitlines()
    assert len(lines) == len(patterns), text
    for line, pattern in zip(lines, patterns, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)


@pytest.mark.serial  # signals / a timed save in flight
def test_ctrl_c_saves_and_a_second_one_exits_at_once_and_output_is_quiet(ref):
    """Ctrl-C saves the current step and exits 75 with one line; a second Ctrl-C during that
    save exits at once (130) leaving the earlier checkpoints intact. Each run prints exactly
    its own lines (no absl/orbax/TF/TFDS INFO, no traceback, one line per evaluation)."""
    workdir = ref.new_workdir("sigint")
    data = [r"text_files split 'train': \d+ items", r"text_files split 'validation': \d+ items"]
    mfu = re.escape("MFU peak per device: 1e+12 FLOP/s (config.peak_flops)")
    compiling = r"Step {}: compiling the train step \(rate and ETA start after it\)"
    evaluation = r"Step {} eval: loss \d+\.\d{{4}}, perplexity \d+\.\d\d, accuracy 0\.\d{{3}}"
    out = ref.train(workdir, faults={"sigint_at_step": 2})  # asked for step 2's batch
    assert out.returncode == U.EXIT_PREEMPTED, out.stderr[-2000:]
    assert out.stdout == ""
    _assert_lines(out.stderr, [*data, mfu, compiling.format(1), re.escape(
        "train.py: Interrupted (Ctrl-C); state saved at step 3. Rerun the same command to resume."
    )])  # fmt: skip
    assert _latest(workdir) == 3

    out = ref.train(workdir, faults={"sigint_at_step": 4, "sigint_in_save": 5})
    assert out.returncode == 130, out.stderr[-2000:]
    resumed = re.escape(f"Resumed from step 3 in {workdir}/checkpoints")
    _assert_lines(out.stderr, [*data, resumed, mfu, compiling.format(4), evaluation.format(4),
                               "Second Ctrl-C: exiting now, without finishing the checkpoint "
                               "being saved; earlier checkpoints are intact. Rerun the same "
                               "command to resume."])  # fmt: skip
    assert U.checkpoint_status(workdir) == {
        2: "trusted",
        3: "trusted",
        4: "trusted",
        5: "no_manifest",
    }

    # The last good checkpoint is bitwise the reference's (resuming past a step without its
    # manifest is test_sigkill_during_async_save_resumes_from_newest_complete_step's).
    U.assert_trees_equal(U.load_state(workdir, 4)[1], U.load_state(ref.workdir, 4)[1])


@pytest.mark.serial  # signals / a timed save in flight
def test_exception_waits_for_the_async_save_and_exits_nonzero(ref):
    # From the reference's step 2 (the start is not the point: steps 3-4 and the save of 4 are
    # this run's, and no earlier slow save of step 2 holds the run up).
    workdir = ref.new_workdir("exception", checkpoints=[2])
    # Each background write first sleeps 2 s, so step 4's save is still in flight when the
    # exception is raised at step 5: only the wait on the exit path can finish it.
    out = ref.train(workdir, faults={"raise_at_step": 5, "slow_save": 2.0})
    assert out.returncode == 1, out.stderr[-2000:]
    assert "injected failure at step 5" in out.stderr
    assert _latest(workdir) == 4
    U.assert_trees_equal(U.load_state(workdir, 4)[1], U.load_state(ref.workdir, 4)[1])


def test_nonfinite_loss_stops_with_the_step_and_exit_3(ref):
    workdir = ref.new_workdir("nan")
    out = ref.train(workdir, faults={"nan_at_step": 5})  # the update 5 -> 6 gets a NaN loss
    assert out.returncode == U.EXIT_NONFINITE, out.stderr[-2000:]
    assert "Non-finite loss or gradient at step 6" in out.stderr
    assert "last checkpoint: step 4" in out.stderr
    assert U.checkpoint_status(workdir) == {
        2: "trusted",
        4: "trusted",
    }  # nothing after the NaN saved
    for step in (2, 4):
        _, state = U.load_state(workdir, step)
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(state))
        U.assert_trees_equal(state, U.load_state(ref.workdir, step)[1])


def test_checkpoint_of_another_model_exits_2_naming_the_parameter(ref):
    workdir = ref.new_workdir("mismatch", checkpoints=True)
    with open(os.path.join(workdir, "model_config.json")) as f:
        before = f.read()
    out = ref.train(workdir, overrides={"model_overrides.d_model": 32})
    assert out.returncode == U.EXIT_INVALID, out.stderr[-2000:]
    assert "Checkpoint step 8, parameter params/" in out.stderr
    assert "has shape (128, 64) dtype float32" in out.stderr
    assert "expects shape (128, 32) dtype float32" in out.stderr
    assert not [r for r in U.records(workdir) if r["split"] == "train"]  # no step was run
    # The workdir still describes its checkpoints: sample.py keeps working.
    with open(os.path.join(workdir, "model_config.json")) as f:
        assert f.read() == before and '"d_model": 64' in before


def test_invalid_config_exits_2_before_any_work(ref, tmp_path):
    workdir = str(tmp_path / "never")
    out = ref.train(workdir, steps=0)
    assert out.returncode == U.EXIT_INVALID, out.stderr[-2000:]
    assert "config.num_train_steps=0" in out.stderr and "positive integer" in out.stderr
    assert not os.path.exists(workdir)


def _assert_close_losses(a: dict, b: dict, steps) -> None:
    for step in steps:
        assert a[step] == pytest.approx(b[step], rel=1e-5), step


def test_resume_on_another_device_count(ref):
    """Saved on 2 devices, resumed on 1, and the reverse, with the global batch kept at 4.
    Summation order differs across device counts, so losses agree to float32 rounding (not
    bitwise); within one device count resumes are bitwise (the tests above)."""
    no_dropout = {"model_overrides.dropout_rate": 0.0}  # dropout masks are per device
    one = {**no_dropout, "per_device_batch_size": 4, "eval_batch_size": 4}
    two = {**no_dropout, "per_device_batch_size": 2, "eval_batch_size": 2}
    straight = ref.new_workdir("devices-straight")
    assert ref.train(straight, overrides=one).returncode == 0
    base = U.train_losses(straight)

    two_then_one = ref.new_workdir("devices-2to1")
    out = ref.train(two_then_one, steps=4, overrides=two, devices=2)
    assert out.returncode == 0, out.stderr[-2000:]
    out = ref.train(two_then_one, overrides=one, devices=1)
    assert out.returncode == 0 and _resumed_from(out) == 4, out.stderr[-2000:]

    one_then_two = U.copy_workdir(straight, straight + "-1to2", checkpoints=[4])
    out = ref.train(one_then_two, overrides=two, devices=2)
    assert out.returncode == 0 and _resumed_from(out) == 4, out.stderr[-2000:]

    _, final = U.load_state(straight)
    for workdir, steps in ((two_then_one, range(1, 9)), (one_then_two, range(5, 9))):
        _assert_close_losses(U.train_losses(workdir), base, steps)
        _, state = U.load_state(workdir)
        assert int(state["step"]) == 8
        for a, b in zip(
            jax.tree.leaves(state["params"]), jax.tree.leaves(final["params"]), strict=True
        ):
            # Adam divides by sqrt(v): on parameters whose gradients are near zero, rounding
            # differences become full-size steps, so the bound is absolute, ~ lr / 10.
            np.testing.assert_allclose(a, b, rtol=0, atol=5e-4)
    # The state is stored unreplicated: the same paths, shapes and dtypes on 1 and 2 devices.
    _, saved_on_two = U.load_state(two_then_one, 4)
    _, saved_on_one = U.load_state(straight, 4)
    shapes = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype), t)  # noqa: E731
    assert shapes(saved_on_two) == shapes(saved_on_one)
