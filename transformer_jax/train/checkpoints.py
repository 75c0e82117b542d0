"""orbax checkpoints of the train state, with the checks orbax does not make.

* Only FINALIZED steps count: a step directory without orbax's `commit_success.txt` (a save
  killed half-way, a half-copied folder) is never taken as the latest step.
* Restores are checked against the expected tree (the model built from the config): every
  parameter path must exist with the same shape and dtype, else a `CheckpointMismatchError`
  names the path and both shapes/dtypes (orbax would silently cast dtypes).
* Saves are asynchronous; `close()` (always called by the trainer, on every exit path)
  waits for them.
"""

from __future__ import annotations

import os
from typing import Any

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp

COMMIT_MARKER = "commit_success.txt"


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model/optimizer built from the current config."""


def _path_str(path: tuple) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def to_host_tree(state: Any) -> dict:
    """TrainState (or any flax struct) -> nested dict of numpy arrays."""
    return jax.tree_util.tree_map(np.asarray, flax.serialization.to_state_dict(state))


def check_compatible(expected: Any, found: Any, step: int) -> None:
    """Raises CheckpointMismatchError naming the first path whose shape/dtype differ."""
    exp = {_path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(expected)[0]}
    got = {_path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(found)[0]}
    missing = sorted(set(exp) - set(got))
    extra = sorted(set(got) - set(exp))
    if missing or extra:
        raise CheckpointMismatchError(
            f"Checkpoint step {step} does not match the config's model: missing paths "
            f"{missing[:5]}, unexpected paths {extra[:5]}. Restore with the config it was "
            "trained with, or start in a new workdir."
        )
    for path, e in exp.items():
        g = got[path]
        if tuple(e.shape) != tuple(g.shape) or np.dtype(e.dtype) != np.dtype(g.dtype):
            raise CheckpointMismatchError(
                f"Checkpoint step {step}, parameter {path}: checkpoint has shape "
                f"{tuple(g.shape)} dtype {np.dtype(g.dtype)}, the config expects shape "
                f"{tuple(e.shape)} dtype {np.dtype(e.dtype)}. Use the config the checkpoint "
                "was trained with (see config.json in the workdir) or a new workdir."
            )


class Checkpoints:
    """Save/restore the train state in `directory` (one sub-directory per step)."""

    def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def finalized_steps(self) -> list[int]:
        """Steps whose directory carries orbax's commit marker, ascending."""
        self._manager.reload()
        steps = []
        for step in self._manager.all_steps():
            if os.path.exists(os.path.join(self.directory, str(step), COMMIT_MARKER)):
                steps.append(int(step))
        return sorted(steps)

    def latest_step(self) -> int | None:
        steps = self.finalized_steps()
        return steps[-1] if steps else None

    def save(self, step: int, state: Any, *, force: bool = False) -> None:
        """Starts an async save of `state` (a host tree or a TrainState) at `step`."""
        tree = state if isinstance(state, dict) else to_host_tree(state)
        self._manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree)), force=force
        )

    def restore(self, step: int, target: Any) -> Any:
        """Restores `step` into the structure of `target` (a TrainState or dict), checked."""
        expected = to_host_tree(target) if not isinstance(target, dict) else target
        metadata = self._manager.item_metadata(step)
        found = metadata["state"] if metadata is not None and "state" in metadata else None
        if found is not None:
            check_compatible(expected, found, step)
        abstract = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), expected
        )
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )["state"]
        check_compatible(expected, restored, step)
        if isinstance(target, dict):
            return restored
        return flax.serialization.from_state_dict(target, restored)

    def restore_params(self, step: int, expected_params: Any) -> Any:
        """Only the parameters of `step` (numpy), checked against `expected_params` (a tree of
        arrays or ShapeDtypeStructs) — for inference, where no optimizer exists."""
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore())
        )["state"]
        if "params" not in restored:
            raise CheckpointMismatchError(f"Checkpoint step {step} holds no 'params'.")
        check_compatible(expected_params, restored["params"], step)
        return restored["params"]

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
