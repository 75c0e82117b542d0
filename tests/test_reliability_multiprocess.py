"""Preemption, resume and a replaced untrusted step in a two-process run (issue 14).

One module-scoped scenario of three launches, each a real `train.py` (jax.distributed on
127.0.0.1, gloo collectives):
  1. two processes of one CPU device each; only process 1 gets SIGTERM (the fault runner of
     tests/_robustness_util.py sends it while the loop asks for step 2's batch);
  2. two processes resume in the same workdir, which also holds a leftover step directory
     without its manifest (a save killed before its checksums, made from the reference run's
     step 4) at a step the run saves again. Process 0 sleeps before each save, so process 1
     always reaches the save first: the order in which a race between them would show;
  3. meanwhile, the uninterrupted reference: one process with two devices. Same global batch,
     same replica indices (dropout), and an all-reduce over two replicas is a sum of two
     numbers, the same in any order: the two-process run must equal it bitwise.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import types

import _robustness_util as U
import pytest

from transformer_jax.train import workdir as wd
from transformer_jax.train.checkpoints import MANIFEST_FILE, UNTRUSTED_DIR

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # binds a port; signals; 3 processes

STEPS = 6
TINY = {  # one layer of width 32: the point is the processes, not the model
    "model_overrides.d_model": 32,
    "model_overrides.num_heads": 2,
    "model_overrides.d_ff": 64,
    "model_overrides.num_layers": 1,
    "per_device_batch_size": 2,  # global batch 4 on two devices (two processes, or one)
    "eval_batch_size": 2,
    "num_eval_batches": 1,
    "eval_every_steps": STEPS,  # one evaluation, at the end
    "checkpoint_every_steps": 2,
}


def _untrusted(workdir: str) -> list[str]:
    path = os.path.join(workdir, "checkpoints", UNTRUSTED_DIR)
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    ref = U.reference(tmp_path_factory)
    flags = U.config_flags(ref.corpus, STEPS, **TINY)
    straight = ref.new_workdir("mp-straight")
    reference = subprocess.Popen(
        [sys.executable, U.TRAIN_PY, f"--workdir={straight}", *flags],
        env=U.env(devices=2),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=U.ROOT,
    )
    try:
        workdir = ref.new_workdir("mp-sigterm")
        preempted = U.train_processes(workdir, flags, [None, {"sigterm_at_step": 2}])
        after_sigterm = (U.checkpoint_status(workdir), U.records(workdir), _untrusted(workdir))
        planted = os.path.join(workdir, "checkpoints", "4")
        shutil.copytree(os.path.join(ref.workdir, "checkpoints", "4"), planted)
        os.remove(os.path.join(planted, MANIFEST_FILE))
        planted_status = U.checkpoint_status(workdir)
        resumed = U.train_processes(workdir, flags, [{"slow_save": 0.5}, None])
    finally:
        _, err = reference.communicate(timeout=U.TIMEOUT)
    assert reference.returncode == 0, err[-3000:]
    return types.SimpleNamespace(
        ref=ref,
        workdir=workdir,
        straight=straight,
        preempted=preempted,
        after_sigterm=after_sigterm,
        planted_status=planted_status,
        resumed=resumed,
    )


def test_sigterm_to_one_process_saves_the_same_step_on_both_and_exits_75(runs):
    # Process 1 finishes step 2 -> 3; at the next step both learn of the signal (an
    # allgather) and both save step 3, then exit 75 with the same one line.
    for i, out in enumerate(runs.preempted):
        assert out.returncode == U.EXIT_PREEMPTED, (i, out.stderr[-3000:])
        assert "Tokenizing and packing" not in out.stderr  # the copied token cache was used
        assert out.stderr.count("Preempted by SIGTERM; state saved at step 3.") == 1, i
        assert "Traceback" not in out.stderr, (i, out.stderr[-3000:])
    status, records, untrusted = runs.after_sigterm
    assert status == {2: "trusted", 3: "trusted"} and untrusted == []
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3]
    assert not [r for r in records if r["split"] == "eval"]  # none was due


def test_two_process_resume_equals_the_uninterrupted_run_bitwise(runs):
    for i, out in enumerate(runs.resumed):
        assert out.returncode == 0, (i, out.stderr[-3000:])
        assert f"Resumed from step 3 in {runs.workdir}/checkpoints" in out.stderr, i
        assert "Traceback" not in out.stderr, (i, out.stderr[-3000:])
    steps = [r["step"] for r in U.records(runs.workdir) if r["split"] == "train"]
    assert steps == list(range(1, STEPS + 1))  # steps 1-3 from the first run, 4-6 resumed
    assert U.train_losses(runs.workdir) == U.train_losses(runs.straight)
    eval_losses = [
        [r["loss"] for r in U.records(w) if r["split"] == "eval"]
        for w in (runs.workdir, runs.straight)
    ]
    assert eval_losses[0] == eval_losses[1] and len(eval_losses[0]) == 1
    step, state = U.load_state(runs.workdir)
    assert step == STEPS
    U.assert_trees_equal(state, U.load_state(runs.straight)[1])  # params, optimizer, step
    # What sample.py reads (no lock, trusted steps only) from the two-process workdir.
    _, params, step = wd.load_params(runs.workdir)
    assert step == STEPS
    U.assert_trees_equal(params, state["params"])


def test_untrusted_step_is_moved_aside_once_and_saved_again_by_both_processes(runs):
    assert runs.planted_status == {2: "trusted", 3: "trusted", 4: "no_manifest"}
    untrusted = _untrusted(runs.workdir)
    assert len(untrusted) == 1 and untrusted[0].startswith("4-replaced-"), untrusted
    moved = [out.stderr.count("Moved checkpoint step 4 (replaced)") for out in runs.resumed]
    assert moved == [1, 0]  # by process 0 only
    moved_dir = os.path.join(runs.workdir, "checkpoints", UNTRUSTED_DIR, untrusted[0])
    leftover = os.listdir(os.path.join(runs.ref.workdir, "checkpoints", "4"))
    assert sorted(os.listdir(moved_dir)) == sorted(set(leftover) - {MANIFEST_FILE})  # intact
    assert U.checkpoint_status(runs.workdir) == {s: "trusted" for s in (2, 3, 4, 6)}
    assert not glob.glob(os.path.join(runs.workdir, "checkpoints", "*orbax-checkpoint-tmp*"))
    # The new step 4 passes every check of a restore (checksums included) and is the run's.
    _, state = U.load_state(runs.workdir, 4)
    U.assert_trees_equal(state, U.load_state(runs.straight, 4)[1])
