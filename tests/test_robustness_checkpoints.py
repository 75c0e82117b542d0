"""Which checkpoint steps are trusted, corruption and mismatch detection, skip_nonfinite
(issue #4, points 5-7 and 9). In-process: copies of the reference run's workdir (see
tests/_robustness_util.py), read with Checkpoints or resumed with train_and_evaluate."""

from __future__ import annotations

import logging
import os
import shutil

import _robustness_util as U
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from transformer_jax.train import checkpoints, steps, train_and_evaluate
from transformer_jax.train.checkpoints import (
    CheckpointCorruptError,
    CheckpointMismatchError,
    Checkpoints,
)

# When a read fails inside orbax (a damaged file), orbax leaves an asyncio callback behind.
pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.slow,  # the reference run (train.py) and resumed runs
]


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return U.reference(tmp_path_factory)


def _ckpt_copy(ref, tmp_path, steps_=None) -> Checkpoints:
    """A copy of the reference run's checkpoint directory (all or the given steps)."""
    directory = str(tmp_path / "checkpoints")
    shutil.copytree(os.path.join(ref.workdir, "checkpoints"), directory)
    for name in os.listdir(directory):
        if name.isdigit() and steps_ is not None and int(name) not in steps_:
            shutil.rmtree(os.path.join(directory, name))
    return Checkpoints(directory, async_save=False)


def _target(ref, step=8) -> dict:
    return U.load_state(ref.workdir, step)[1]


def _largest_data_file(step_dir: str) -> str:
    files = [
        os.path.join(root, f)
        for root, _, names in os.walk(os.path.join(step_dir, "state"))
        for f in names
        if os.sep + "d" + os.sep in os.path.join(root, f)
    ]
    return max(files, key=os.path.getsize)


def _copy_step(ckpt: Checkpoints, src: int, dst: int) -> str:
    path = os.path.join(ckpt.directory, str(dst))
    shutil.copytree(os.path.join(ckpt.directory, str(src)), path)
    return path


# ----------------------------------------------------------------------------- point 5


def test_only_finalized_steps_with_a_manifest_are_trusted(ref, tmp_path):
    ckpt = _ckpt_copy(ref, tmp_path)
    assert ckpt.step_status() == {s: "trusted" for s in (2, 4, 6, 8)}
    # A half-copied step: no commit marker.
    os.remove(os.path.join(_copy_step(ckpt, 8, 10), checkpoints.COMMIT_MARKER))
    # orbax's temp directory of a killed save, complete up to the rename.
    shutil.copytree(
        os.path.join(ckpt.directory, "8"),
        os.path.join(ckpt.directory, "12.orbax-checkpoint-tmp-1234"),
    )
    # Finalized by orbax, killed before its checksums were written.
    os.remove(os.path.join(_copy_step(ckpt, 8, 14), checkpoints.MANIFEST_FILE))
    assert ckpt.step_status() == {
        2: "trusted", 4: "trusted", 6: "trusted", 8: "trusted",
        10: "no_commit_marker", 14: "no_manifest",
    }  # fmt: skip
    assert ckpt.finalized_steps() == [2, 4, 6, 8, 14]
    assert ckpt.trusted_steps() == [2, 4, 6, 8] and ckpt.latest_step() == 8
    step, state = ckpt.restore_latest(_target(ref))
    assert step == 8
    U.assert_trees_equal(state, _target(ref))
    assert ckpt.remove_partial_saves() == ["12.orbax-checkpoint-tmp-1234"]
    ckpt.close()


def test_a_marker_without_its_data_files_is_corruption_not_a_step(ref, tmp_path, caplog):
    ckpt = _ckpt_copy(ref, tmp_path, steps_=[6, 8])
    copy = _copy_step(ckpt, 8, 10)  # marker and manifest copied, one data file not
    missing = _largest_data_file(copy)
    os.remove(missing)
    assert ckpt.latest_step() == 10  # listed as trusted; the restore checks its files
    rel = os.path.relpath(missing, copy)
    with pytest.raises(CheckpointCorruptError, match=f"step 10 .*file {rel} is missing"):
        ckpt.restore_latest(_target(ref), on_corrupt="fail")
    with caplog.at_level(logging.WARNING, logger="transformer_jax"):
        step, state = ckpt.restore_latest(_target(ref), on_corrupt="fallback")
    assert step == 8 and "Falling back" in caplog.text and rel in caplog.text
    U.assert_trees_equal(state, _target(ref))
    ckpt.close()


def test_directory_from_before_checksums_is_trusted_as_legacy(ref, tmp_path, caplog):
    ckpt = _ckpt_copy(ref, tmp_path, steps_=[6, 8])
    os.remove(os.path.join(ckpt.directory, checkpoints.FORMAT_FILE))
    for step in (6, 8):
        os.remove(os.path.join(ckpt.directory, str(step), checkpoints.MANIFEST_FILE))
    assert ckpt.step_status() == {6: "legacy", 8: "legacy"}
    with caplog.at_level(logging.WARNING, logger="transformer_jax"):
        U.assert_trees_equal(ckpt.restore(8, _target(ref)), _target(ref))
    assert "no checksums" in caplog.text
    # The first save records which steps predate checksums; later steps need their manifest.
    ckpt.save(10, _target(ref))
    os.remove(os.path.join(_copy_step(ckpt, 10, 12), checkpoints.MANIFEST_FILE))
    assert ckpt.step_status() == {6: "legacy", 8: "legacy", 10: "trusted", 12: "no_manifest"}
    ckpt.close()


# ----------------------------------------------------------------------------- point 6


@pytest.mark.parametrize("damage", ["truncate", "delete", "flip_bit"])
def test_damaged_data_file_names_step_and_file(ref, tmp_path, damage):
    ckpt = _ckpt_copy(ref, tmp_path, steps_=[8])
    path = _largest_data_file(os.path.join(ckpt.directory, "8"))
    rel = os.path.relpath(path, os.path.join(ckpt.directory, "8"))
    size = os.path.getsize(path)
    if damage == "truncate":
        os.truncate(path, size // 2)
        expected = f"file {rel} has {size // 2} bytes, {size} were written"
    elif damage == "delete":
        os.remove(path)
        expected = f"file {rel} is missing"
    else:
        with open(path, "r+b") as f:
            f.seek(size // 2)
            byte = f.read(1)[0]
            f.seek(size // 2)
            f.write(bytes([byte ^ 0x10]))
        expected = f"file {rel} does not match its sha256"
    with pytest.raises(CheckpointCorruptError) as info:
        ckpt.restore(8, _target(ref))
    assert f"Checkpoint step 8 in {ckpt.directory} is corrupt" in str(info.value)
    assert expected in str(info.value)
    ckpt.close()


def test_reading_a_corrupt_latest_checkpoint_names_the_step_to_read_instead(ref):
    from transformer_jax.train import workdir as wd

    workdir = ref.new_workdir("corrupt-latest", checkpoints=[6, 8])
    os.truncate(_largest_data_file(os.path.join(workdir, "checkpoints", "8")), 10)
    with pytest.raises(CheckpointCorruptError, match=r"Checkpoint step 8 .* The newest older "
                       r"checkpoint is step 6: read it with step=6 \(sample.py and export.py: "
                       r"--step 6\)\."):  # fmt: skip
        wd.load_params(workdir)
    assert wd.load_params(workdir, 6)[2] == 6


def test_array_checksum_names_the_parameter(ref, tmp_path, monkeypatch):
    """Bytes written that differ from the bytes hashed (e.g. a bit flipped in memory on the
    way to disk) are caught by the per-array sha256, which names the parameter path."""
    ckpt = _ckpt_copy(ref, tmp_path, steps_=[8])
    good = _target(ref)
    bad = jax.tree.map(np.copy, good)
    kernel = bad["params"]["decoder"]["layer_0"]["ffn"]["wi"]["kernel"]
    kernel.view(np.uint32)[3, 5] ^= 1 << 20  # one flipped bit
    digests = checkpoints.array_digests
    monkeypatch.setattr(checkpoints, "array_digests", lambda tree: digests(good))
    ckpt.save(10, bad)
    with pytest.raises(CheckpointCorruptError) as info:
        ckpt.restore(10, good)
    message = str(info.value)
    assert "step 10" in message and "file " not in message  # every file is as written
    assert "parameter params/decoder/layer_0/ffn/wi/kernel does not match its sha256" in message
    ckpt.close()


def _poison_checkpoint(workdir: str, step: int) -> None:
    path = _largest_data_file(os.path.join(workdir, "checkpoints", str(step)))
    os.truncate(path, os.path.getsize(path) - 7)


def test_corrupt_latest_checkpoint_fails_or_falls_back_as_configured(ref, monkeypatch, caplog):
    workdir = ref.new_workdir("corrupt", checkpoints=[6, 8])
    _poison_checkpoint(workdir, 8)
    config = U.make_config(ref.corpus, 8, corrupt_checkpoint="fail")
    make_train_step = steps.make_train_step
    monkeypatch.setattr(steps, "make_train_step", _no_compute)
    with pytest.raises(CheckpointCorruptError, match=r"Checkpoint step 8 .* is corrupt: file "):
        train_and_evaluate(config, workdir)

    monkeypatch.setattr(steps, "make_train_step", make_train_step)
    config.corrupt_checkpoint = "fallback"
    with caplog.at_level(logging.INFO, logger="transformer_jax"):
        summary = train_and_evaluate(config, workdir)
    assert "Falling back to the previous checkpoint" in caplog.text
    assert "Resumed from step 6" in caplog.text and summary["step"] == 8
    assert os.listdir(os.path.join(workdir, "checkpoints", "untrusted"))[0].startswith("8-replaced")
    # Steps 7 and 8 redone in this process give the reference run's (train.py) bits.
    U.assert_trees_equal(U.load_state(workdir)[1], U.load_state(ref.workdir)[1])
    assert U.train_losses(workdir) == {s: U.train_losses(ref.workdir)[s] for s in (7, 8)}


def _no_compute(*args, **kwargs):
    raise AssertionError("a train step was built: the error must come before any compute")


# ----------------------------------------------------------------------------- point 7


def _bfloat16_params_checkpoint(workdir: str) -> None:
    ckpt = Checkpoints(os.path.join(workdir, "checkpoints"), async_save=False)
    _, state = U.load_state(workdir, 8)
    state["params"] = jax.tree.map(lambda x: x.astype(ml_dtypes.bfloat16), state["params"])
    ckpt.save(10, state)
    ckpt.close()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"model_overrides.d_model": 32},
            r"parameter params/decoder/embed/pos_embed/embedding: the checkpoint has shape "
            r"\(128, 64\) dtype float32, the config expects shape \(128, 32\) dtype float32",
        ),
        (
            {"model_overrides.num_layers": 2},
            r"the checkpoint lacks: \['params/decoder/layer_1/",
        ),
        (
            {"model_overrides.vocab_size": 520},
            r"parameter params/token_embed/embedding: the checkpoint has shape \(512, 64\) "
            r"dtype float32, the config expects shape \(520, 64\) dtype float32",
        ),
        (
            "bfloat16",
            r"Checkpoint step 10, parameter params/decoder/embed/pos_embed/embedding: the "
            r"checkpoint has shape \(128, 64\) dtype bfloat16, the config expects shape "
            r"\(128, 64\) dtype float32",
        ),
    ],
    ids=["d_model", "depth", "vocab_size", "param_dtype"],
)
def test_checkpoint_of_another_config_fails_before_compute(ref, monkeypatch, overrides, message):
    workdir = ref.new_workdir("mismatch", checkpoints=[8])
    steps_ = 8
    if overrides == "bfloat16":  # orbax would cast these back to float32 without a word
        _bfloat16_params_checkpoint(workdir)
        overrides, steps_ = {}, 12
    monkeypatch.setattr(steps, "make_train_step", _no_compute)
    with pytest.raises(CheckpointMismatchError, match=message):
        train_and_evaluate(U.make_config(ref.corpus, steps_, **overrides), workdir)


# ----------------------------------------------------------------------------- point 9


def test_skip_nonfinite_skips_the_update_and_counts_it(ref, monkeypatch):
    """The real step under a wrapper that gives the update from step 5 NaN loss weights (so
    its loss and gradients are NaN, as a diverged step's would be)."""
    make_train_step = steps.make_train_step

    def poisoned(*args, **kwargs):
        step_fn = make_train_step(*args, **kwargs)

        def wrapped(state, batch, rng):
            poison = jnp.where(state.step == 5, jnp.nan, 1.0)
            return step_fn(state, dict(batch, weights=batch["weights"] * poison), rng)

        return wrapped

    monkeypatch.setattr(steps, "make_train_step", poisoned)
    workdir = ref.new_workdir("skip")
    config = U.make_config(ref.corpus, 8, skip_nonfinite=True, checkpoint_every_steps=1)
    summary = train_and_evaluate(config, workdir)
    assert summary["step"] == 8 and np.isfinite(summary["eval"]["loss"])
    trains = {r["step"]: r for r in U.records(workdir) if r["split"] == "train"}
    assert [trains[s]["skipped"] for s in range(1, 9)] == [0, 0, 0, 0, 0, 1, 1, 1]
    assert np.isnan(trains[6]["loss"]) and np.isfinite(trains[7]["loss"])
    _, before = U.load_state(workdir, 5)
    _, after = U.load_state(workdir, 6)
    U.assert_trees_equal(after["params"], before["params"])  # the update was skipped
    U.assert_trees_equal(after["opt_state"], before["opt_state"])
    assert int(after["step"]) == 6 and int(after["skipped"]) == 1
    for step in range(1, 9):
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(U.load_state(workdir, step)[1]))
