"""orbax checkpoints of the train state, with the checks orbax does not make.

Layout of DIR (= WORKDIR/checkpoints):

    DIR/<step>/                 orbax: state/, _CHECKPOINT_METADATA, commit_success.txt
    DIR/<step>/checksums.json   ours: sha256 of every file of the step and (host saves) of
                                every array
    DIR/checksums_format.json   ours: written before the first save of this code
    DIR/untrusted/              step directories moved aside (never deleted by this code)

A step is TRUSTED, i.e. a candidate for resuming, only if
  * its directory carries orbax's commit marker `commit_success.txt` (a save killed half-way
    leaves `<step>.orbax-checkpoint-tmp-*`, a half-copied folder may lack the marker), and
  * it has its `checksums.json`, written atomically (temp file + rename) only after orbax
    finalized the step; a step killed in between is not trusted. Directories written before
    checksums existed (listed as `legacy_steps` in `checksums_format.json`, or any directory
    without that file) are trusted without checksums, with a warning.
On restore, before any array is read: every parameter path must exist with the config's shape
and dtype (`CheckpointMismatchError` names the path and both shapes/dtypes; orbax itself would
cast dtypes silently); every file listed in the manifest must exist with its size and sha256
(`CheckpointCorruptError` names the step and the file). After reading, the sha256 of every
array's bytes must match the manifest (else the error names the step and parameter path).
`restore_latest` falls back to the previous trusted step on corruption, or fails, as asked.

Parameter layouts: each manifest records the parameter layout of the code that wrote it
(`transformer_jax.migrate.PARAM_LAYOUT`; steps without one are layout 1). A step in an older
layout is renamed to today's paths as it is read (`migrate.migration`, decided by the stored
paths alone), the parameters and every optimizer slot alike, after the checksums of the stored
arrays were verified under their stored paths. A layout this code cannot read is a
CheckpointMismatchError naming the step, the layout and what to do.

Saves run in one background thread (one process; with several, on the caller's thread, since
orbax's barriers are device collectives): the state is copied to host on the caller's thread, then
the thread writes it with orbax (synchronously, so the rename that finalizes the step is done
when it returns), writes the manifest, and only then deletes steps beyond `max_to_keep`
(so a kill at any moment leaves the previous trusted step in place). `wait()` and `close()`
join the thread and re-raise its errors; the trainer calls `close()` on every exit path.

Sharded states (mesh mode: `is_sharded`) are never gathered: orbax's async save copies each
process's own shards to its host and returns, every process writes its part, and the thread
waits for orbax to finalize the step (after all processes finished) before the primary
writes the manifest: the sha256 of every file, all processes' files included, and each
array's shape and dtype without a whole-array hash (`"sharded": true`). Such a step is read
back with the target shardings when given (each process reads only its shards, on any mesh
or device count), else as numpy arrays; host (pmap-mode) saves are written as before.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from transformer_jax import models
from transformer_jax.migrate import PARAM_LAYOUT, LayoutError, migration
from transformer_jax.train.run_config import ConfigError

log = logging.getLogger(__name__)

COMMIT_MARKER = "commit_success.txt"
MANIFEST_FILE = "checksums.json"
FORMAT_FILE = "checksums_format.json"
UNTRUSTED_DIR = "untrusted"
ORBAX_TMP_MARKER = ".orbax-checkpoint-tmp"
ON_CORRUPT = ("fallback", "fail")
_FORMAT = 1
_CHUNK = 1 << 23  # file hashing reads 8 MiB at a time


class CheckpointSaveError(RuntimeError):
    """Writing a checkpoint failed (disk full, I/O error, ...); every earlier step is as it
    was, and the failed one is never trusted (it has no manifest). train.py: exit 74."""

    def __init__(self, step: int, directory: str, error: BaseException):
        self.step = step
        text = str(error).strip().splitlines()
        what = f"{type(error).__name__}: {text[0] if text else ''}"
        if len(what) > 600:  # tensorstore's cause (e.g. "No space left on device") is last
            what = f"{what[:250]} ... {what[-350:]}"
        super().__init__(
            f"Saving checkpoint step {step} in {directory} failed: {what}. "
            f"The checkpoints saved before it are intact and trusted; free space or fix the "
            f"disk, then rerun the same command to resume from the latest of them."
        )


class CheckpointMismatchError(ConfigError):
    """A checkpoint does not fit the model/optimizer built from the current config."""


class CheckpointCorruptError(ConfigError):
    """A checkpoint's files or arrays do not match its checksum manifest, or cannot be read."""

    def __init__(self, step: int, directory: str, problems: list[str]):
        self.step = step
        self.problems = problems
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        super().__init__(
            f"Checkpoint step {step} in {directory} is corrupt: {shown}. Restore that step "
            "directory from a backup, or move it away to resume from an older step "
            "(corrupt_checkpoint='fallback' resumes from the newest intact step by itself)."
        )


# ----------------------------------------------------------------------------- trees


def _path_str(path: tuple) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def abstract_tree(state: Any) -> dict:
    """TrainState/dict of arrays or ShapeDtypeStructs -> nested dict of ShapeDtypeStructs."""
    tree = state if isinstance(state, dict) else flax.serialization.to_state_dict(state)
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.dtype(x.dtype)), tree
    )


def _flat(tree: Any) -> dict[str, Any]:
    return {_path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _set_path(tree: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split("/")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def _remap_tree(tree: Any, rename: Callable[[str], str]) -> dict:
    """A nested dict with every leaf (and empty dict) moved from path p to rename(p)."""
    out: dict = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict) and node:
            for key, child in node.items():
                walk(child, f"{path}/{key}" if path else str(key))
        else:
            _set_path(out, rename(path), node)

    walk(tree, "")
    return out


def _nest(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for path, x in flat.items():
        _set_path(out, path, x)
    return out


def _layer_layout(paths) -> str | None:
    """'scanned' (a `layers` stack), 'per_layer' (layer_0, layer_1, ...) or None."""
    for p in paths:
        parts = p.split("/")
        if "layers" in parts[:-1]:
            return "scanned"
        if any(re.fullmatch(r"layer_\d+", k) for k in parts[:-1]):
            return "per_layer"
    return None


def _layer_converter(expected_paths, found_paths) -> Callable[[dict], dict] | None:
    """Converts a checkpoint tree between the scanned and per-layer layouts (ModelConfig
    .scan_layers) when it was written in the other one; None when the layouts agree."""
    want, have = _layer_layout(expected_paths), _layer_layout(found_paths)
    if want is None or have is None or want == have:
        return None
    return models.stack_layers if want == "scanned" else models.unstack_layers


def _params_first(path: str) -> tuple[int, str]:
    return (0 if path.startswith("params/") else 1, path)


def check_compatible(expected: Any, found: Any, step: int) -> None:
    """Raises CheckpointMismatchError naming the first path (parameters first) whose presence,
    shape or dtype differ between `expected` (from the config) and `found` (the checkpoint)."""
    exp, got = _flat(expected), _flat(found)
    hint = (
        "Use the config the checkpoint was trained with (WORKDIR/config.json and "
        "model_config.json), or start in a new workdir."
    )
    missing = sorted(set(exp) - set(got), key=_params_first)
    extra = sorted(set(got) - set(exp), key=_params_first)
    if missing or extra:
        raise CheckpointMismatchError(
            f"Checkpoint step {step} does not match the config's model: parameter paths the "
            f"config expects but the checkpoint lacks: {missing[:5]} ({len(missing)} in all); "
            f"paths in the checkpoint the config lacks: {extra[:5]} ({len(extra)} in all). " + hint
        )
    bad = []
    for path in sorted(exp, key=_params_first):
        e, g = exp[path], got[path]
        if tuple(e.shape) != tuple(g.shape) or jnp.dtype(e.dtype) != jnp.dtype(g.dtype):
            bad.append((path, e, g))
    if bad:
        path, e, g = bad[0]
        more = f" ({len(bad) - 1} more paths differ)" if len(bad) > 1 else ""
        raise CheckpointMismatchError(
            f"Checkpoint step {step}, parameter {path}: the checkpoint has shape "
            f"{tuple(g.shape)} dtype {jnp.dtype(g.dtype)}, the config expects shape "
            f"{tuple(e.shape)} dtype {jnp.dtype(e.dtype)}{more}. " + hint
        )


def is_sharded(tree: Any) -> bool:
    """Whether a leaf is a jax.Array split over devices or spread over processes (mesh mode):
    such a state is saved shard by shard, never gathered."""
    return any(
        isinstance(x, jax.Array) and not (x.is_fully_addressable and x.is_fully_replicated)
        for x in jax.tree_util.tree_leaves(tree)
    )


def _array_sha256(x: np.ndarray) -> str:
    data = np.ascontiguousarray(x).reshape(-1).view(np.uint8)  # no copy when contiguous
    return hashlib.sha256(data).hexdigest()


def array_digests(tree: Any) -> dict[str, dict]:
    """{path: {shape, dtype, sha256 of the array's bytes}} of a host tree."""
    return {
        path: {"shape": list(np.shape(x)), "dtype": str(x.dtype), "sha256": _array_sha256(x)}
        for path, x in _flat(tree).items()
    }


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_digests(step_dir: str) -> dict[str, dict]:
    """{relative path: {size, sha256}} of every file under `step_dir` except the manifest."""
    out = {}
    for root, dirs, files in os.walk(step_dir):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, step_dir)
            if rel == MANIFEST_FILE or rel.startswith(MANIFEST_FILE + "."):
                continue
            out[rel] = {"size": os.path.getsize(path), "sha256": _file_sha256(path)}
    return out


def verify_files(step_dir: str, files: dict[str, dict]) -> list[str]:
    """Problems (missing, truncated/extended, changed files) against a manifest's file list."""
    problems = []
    for rel, want in sorted(files.items()):
        path = os.path.join(step_dir, rel)
        if not os.path.isfile(path):
            problems.append(f"file {rel} is missing")
            continue
        size = os.path.getsize(path)
        if size != want["size"]:
            problems.append(f"file {rel} has {size} bytes, {want['size']} were written")
        elif _file_sha256(path) != want["sha256"]:
            problems.append(f"file {rel} does not match its sha256 (changed on disk)")
    return problems


def _atomic_write_json(path: str, obj: Any) -> None:
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# ----------------------------------------------------------------------------- manager


class Checkpoints:
    """Save/restore the train state in `directory` (one sub-directory per step).

    `primary`: whether this process writes manifests and deletes old steps (default: process
    0). Every process must call `save` for the same steps (orbax saves are collective).
    """

    def __init__(
        self,
        directory: str,
        *,
        max_to_keep: int = 3,
        async_save: bool = True,
        primary: bool | None = None,
    ):
        self.directory = os.path.abspath(directory)
        self.max_to_keep = max_to_keep
        self.primary = jax.process_index() == 0 if primary is None else primary
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None, enable_async_checkpointing=False, create=True
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            item_handlers={"state": ocp.StandardCheckpointHandler()},
            options=options,
        )
        self._lock = threading.Lock()  # orbax manager calls: main thread and save thread
        # With several processes, saves run on the caller's thread: orbax's barriers are
        # device collectives, which in a background thread interleave with the train step's
        # (and the loop's) collectives in a different order on each process: a mismatch
        # error or a hang.
        async_save = async_save and jax.process_count() == 1
        self._executor = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="checkpoint-save")
            if async_save
            else None
        )
        self._pending: concurrent.futures.Future | None = None
        self._async_manager: ocp.CheckpointManager | None = None

    # --------------------------------------------------------------------- listing

    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _legacy_steps(self) -> set[int] | None:
        """Steps trusted without a manifest; None: the directory predates manifests."""
        path = os.path.join(self.directory, FORMAT_FILE)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return set(json.load(f).get("legacy_steps", []))

    def step_status(self) -> dict[int, str]:
        """Every step directory -> 'trusted', 'legacy' (trusted without checksums),
        'no_commit_marker' or 'no_manifest' (both untrusted)."""
        legacy = self._legacy_steps()
        out = {}
        names = os.listdir(self.directory) if os.path.isdir(self.directory) else []
        for name in names:
            path = os.path.join(self.directory, name)
            if not name.isdigit() or not os.path.isdir(path):
                continue  # orbax tmp dirs, untrusted/, our files
            step = int(name)
            if not os.path.exists(os.path.join(path, COMMIT_MARKER)):
                out[step] = "no_commit_marker"
            elif os.path.exists(os.path.join(path, MANIFEST_FILE)):
                out[step] = "trusted"
            elif legacy is None or step in legacy:
                out[step] = "legacy"
            else:
                out[step] = "no_manifest"
        return dict(sorted(out.items()))

    def finalized_steps(self) -> list[int]:
        """Steps whose directory carries orbax's commit marker, ascending."""
        return [s for s, v in self.step_status().items() if v != "no_commit_marker"]

    def trusted_steps(self) -> list[int]:
        """Finalized steps with a checksum manifest (or legacy ones), ascending."""
        return [s for s, v in self.step_status().items() if v in ("trusted", "legacy")]

    def latest_step(self) -> int | None:
        steps = self.trusted_steps()
        return steps[-1] if steps else None

    def remove_partial_saves(self) -> list[str]:
        """Deletes orbax temp directories left by killed saves (primary only; call when no
        save is running). Returns the removed names."""
        if not self.primary or not os.path.isdir(self.directory):
            return []
        removed = []
        for name in sorted(os.listdir(self.directory)):
            if ORBAX_TMP_MARKER in name:
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
                removed.append(name)
        return removed

    # --------------------------------------------------------------------- saving

    def save(self, step: int, state: Any) -> None:
        """Saves `state` (a TrainState, or a dict of arrays that is not mutated afterwards) as
        `step`: host copy now, the writing in the background (or now, if not async). Waits for
        the previous save first and re-raises its error.

        A state holding sharded arrays (mesh mode: a jax.Array split over devices or held by
        several processes) is not gathered: orbax copies each process's own shards to its host
        now (so the caller may donate the buffers at once) and every process writes its part;
        see `_save_sharded`."""
        self.wait()
        tree = state if isinstance(state, dict) else flax.serialization.to_state_dict(state)
        if is_sharded(tree):
            self._save_sharded(step, tree)
            return
        tree = jax.tree_util.tree_map(np.asarray, tree)
        if self._executor is None:
            self._write(step, tree)
        else:
            self._pending = self._executor.submit(self._write, step, tree)

    def _save_sharded(self, step: int, tree: dict) -> None:
        """orbax writes the jax.Arrays shard by shard (each process its own, replicas once);
        its `save` returns once the shards are copied to host memory. The manifest then lists
        each array's shape and dtype without a whole-array sha256 (computing one would gather
        the array on one host): integrity rests on the sha256 of every file, which the primary
        process computes once orbax finalized the step, i.e. after every process finished
        writing (orbax's finalization waits at a barrier for all of them)."""
        arrays = {
            path: {"shape": list(np.shape(x)), "dtype": str(jnp.dtype(x.dtype))}
            for path, x in _flat(tree).items()
        }
        try:
            with self._lock:
                self._prepare_step_dir(step)
                manager = self._sharded_manager()
                manager.reload()
                manager.save(
                    step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree)), force=True
                )
        except Exception as e:
            raise CheckpointSaveError(step, self.directory, e) from e

        def finish() -> None:
            try:
                manager.wait_until_finished()
                self._finish_step(step, arrays, sharded=True)
            except Exception as e:
                raise CheckpointSaveError(step, self.directory, e) from e

        if self._executor is None:
            finish()
        else:
            self._pending = self._executor.submit(finish)

    def _sharded_manager(self) -> ocp.CheckpointManager:
        """An orbax manager with async saving (its blocking part copies device buffers to
        host); made on the first sharded save. Same handler and layout as `_manager`."""
        if self._async_manager is None:
            self._async_manager = ocp.CheckpointManager(
                self.directory,
                item_handlers={"state": ocp.StandardCheckpointHandler()},
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=None, enable_async_checkpointing=True, create=True
                ),
            )
        return self._async_manager

    def _ensure_format_file(self) -> None:
        path = os.path.join(self.directory, FORMAT_FILE)
        if self.primary and not os.path.exists(path):
            legacy = [s for s, v in self.step_status().items() if v == "legacy"]
            os.makedirs(self.directory, exist_ok=True)
            _atomic_write_json(path, {"format": _FORMAT, "legacy_steps": legacy})

    def _move_aside(self, step: int, reason: str) -> str:
        """Moves a step directory into DIR/untrusted/ (kept for inspection, never deleted)."""
        target = os.path.join(
            self.directory, UNTRUSTED_DIR, f"{step}-{reason}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.exists(target):
            target += f"-{uuid.uuid4().hex[:6]}"
        os.rename(self._step_dir(step), target)
        log.warning("Moved checkpoint step %d (%s) to %s", step, reason, target)
        return target

    def _prepare_step_dir(self, step: int) -> None:
        """(primary) The format file exists; a leftover directory of `step` is moved aside.
        With several processes all wait here until it is gone, so that no process lists the
        steps (orbax does, in `save`) while the primary is still moving the leftover."""
        if self.primary:
            self._ensure_format_file()
            if os.path.exists(self._step_dir(step)):  # an untrusted or corrupt leftover
                self._move_aside(step, "replaced")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"transformer_jax:save_{step}")

    def _finish_step(self, step: int, arrays: dict, *, sharded: bool = False) -> None:
        """(primary, once orbax finalized `step`) The manifest, then retention."""
        if not self.primary:
            return
        manifest = {
            "format": _FORMAT,
            "layout": PARAM_LAYOUT,
            "step": step,
            "arrays": arrays,
            "files": file_digests(self._step_dir(step)),
        }
        if sharded:
            manifest["sharded"] = True
        _atomic_write_json(os.path.join(self._step_dir(step), MANIFEST_FILE), manifest)
        self._apply_retention()

    def _write(self, step: int, tree: dict) -> None:
        try:
            arrays = array_digests(tree) if self.primary else None
            with self._lock:
                self._prepare_step_dir(step)
                self._manager.reload()
                self._manager.save(
                    step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree)), force=True
                )
            self._finish_step(step, arrays)
        except Exception as e:
            raise CheckpointSaveError(step, self.directory, e) from e

    def _apply_retention(self) -> None:
        """Deletes trusted steps older than the newest `max_to_keep` trusted ones."""
        if not self.max_to_keep:
            return
        old = self.trusted_steps()[: -self.max_to_keep]
        for step in old:
            # Rename first (orbax ignores non-numeric names), so a kill mid-delete never
            # leaves a half-deleted directory that looks like a step.
            doomed = os.path.join(self.directory, f".deleting-{step}-{uuid.uuid4().hex[:8]}")
            os.rename(self._step_dir(step), doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        if old:
            with self._lock:
                self._manager.reload()
        for name in os.listdir(self.directory):  # leftovers of a delete that was killed
            if name.startswith(".deleting-"):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    def wait(self) -> None:
        """Blocks until the pending save is on disk (manifest included); re-raises its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def raise_if_failed(self) -> None:
        """Re-raises the error of a background save that has already failed (without waiting
        for one in flight), so that a run stops at the next step instead of training on
        until its next save finds out."""
        pending = self._pending
        if pending is not None and pending.done() and pending.exception() is not None:
            self.wait()

    def close(self) -> None:
        """Waits for the pending save and releases the manager."""
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            self._manager.close()
            if self._async_manager is not None:
                self._async_manager.close()

    # --------------------------------------------------------------------- restoring

    def _manifest(self, step: int) -> dict | None:
        path = os.path.join(self._step_dir(step), MANIFEST_FILE)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                manifest = json.load(f)
            manifest["arrays"], manifest["files"]  # noqa: B018 - presence check
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointCorruptError(
                step, self.directory, [f"{MANIFEST_FILE} is unreadable ({e})"]
            ) from None
        return manifest

    def _found_tree(self, step: int, manifest: dict | None) -> Any:
        """Shapes/dtypes stored for `step` (from the manifest, else orbax's metadata)."""
        if manifest is not None:
            return {
                path: jax.ShapeDtypeStruct(tuple(a["shape"]), jnp.dtype(a["dtype"]))
                for path, a in manifest["arrays"].items()
            }
        try:
            with self._lock:
                metadata = self._manager.item_metadata(step)["state"]
        except Exception as e:  # noqa: BLE001 - any failure to read is corruption here
            raise CheckpointCorruptError(
                step, self.directory, [f"orbax metadata is unreadable ({_first_line(e)})"]
            ) from e
        return _flat(getattr(metadata, "tree", metadata))

    def _renamer(self, step: int, manifest: dict | None, paths) -> Callable[[str], str] | None:
        """path -> today's path for `step`'s parameter layout (None: already today's)."""
        layout = 1 if manifest is None else manifest.get("layout", 1)
        if layout == PARAM_LAYOUT:
            return None
        try:
            return migration(paths, layout)
        except LayoutError as e:
            raise CheckpointMismatchError(
                f"Checkpoint step {step} in {self.directory}: {e}"
            ) from None

    def _read_sharded(self, step: int, shardings: dict[str, Any] | None) -> dict:
        """A step written by `_save_sharded`, read onto any devices: each array straight into
        its sharding in `shardings` ({path: Sharding}; every process reads only the shards it
        holds), else whole into host memory (numpy). The sharding it was saved with is never
        needed, so the mesh shape and device count may differ from the writer's."""
        with self._lock:
            metadata = self._manager.item_metadata(step)["state"]
        stored = getattr(metadata, "tree", metadata)

        def restore_args(path, leaf):
            sharding = None if shardings is None else shardings.get(_path_str(path))
            if sharding is None:
                return ocp.RestoreArgs(restore_type=np.ndarray)
            return ocp.ArrayRestoreArgs(sharding=sharding)

        item = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), stored)
        args = ocp.args.PyTreeRestore(
            item, restore_args=jax.tree_util.tree_map_with_path(restore_args, stored)
        )
        with ocp.PyTreeCheckpointer() as reader:
            return reader.restore(os.path.join(self._step_dir(step), "state"), args=args)

    def _read(
        self, step: int, expected: dict, prefix: str | None, shardings: dict | None = None
    ) -> dict:
        """Checks, reads and verifies `step`; returns the host tree (or its `prefix` subtree),
        checked against `expected` (a tree of arrays or ShapeDtypeStructs). A sharded step
        stored in `expected`'s layout is read straight onto `shardings` ({path: Sharding})."""
        step_dir = self._step_dir(step)
        if not os.path.isdir(step_dir):
            raise FileNotFoundError(f"No checkpoint step {step} in {self.directory}")
        manifest = self._manifest(step)
        found = self._found_tree(step, manifest)
        rename = self._renamer(step, manifest, found)
        if rename is not None:
            found = {rename(p): x for p, x in found.items()}
        relayer = _layer_converter(_flat(expected), found)
        if relayer is not None:  # written with the other scan_layers setting
            found = _flat(relayer(_nest(found)))
        if prefix is not None:
            found = {
                p[len(prefix) + 1 :]: x for p, x in found.items() if p.startswith(prefix + "/")
            }
        check_compatible(_flat(expected), found, step)  # before reading any array
        problems = verify_files(step_dir, manifest["files"]) if manifest is not None else []
        if rename is not None or relayer is not None or prefix is not None:
            shardings = None  # placed by the caller, after the conversion on the host
        try:
            if manifest is not None and manifest.get("sharded"):
                restored = self._read_sharded(step, shardings)
            else:
                with self._lock:
                    restored = self._manager.restore(
                        step, args=ocp.args.Composite(state=ocp.args.StandardRestore())
                    )["state"]
        except Exception as e:  # noqa: BLE001 - a failed read of a checked layout is corruption
            raise CheckpointCorruptError(
                step, self.directory, problems + [f"orbax could not read it ({_first_line(e)})"]
            ) from e
        if manifest is not None:  # under the stored paths, before any migration
            for path, x in _flat(restored).items():
                stored = manifest["arrays"].get(path)
                if stored is None:
                    problems.append(f"parameter {path} is not in {MANIFEST_FILE}")
                elif "sha256" in stored and _array_sha256(x) != stored["sha256"]:
                    problems.append(f"parameter {path} does not match its sha256")
        else:
            log.warning("Checkpoint step %d has no checksums (written before they existed).", step)
        if rename is not None:
            restored = _remap_tree(restored, rename)
        if relayer is not None:
            restored = relayer(restored)
        if prefix is not None:
            if prefix not in restored:
                raise CheckpointMismatchError(f"Checkpoint step {step} holds no {prefix!r}.")
            restored = restored[prefix]
        check_compatible(expected, restored, step)
        if problems:
            raise CheckpointCorruptError(step, self.directory, problems)
        return restored

    def restore(self, step: int, target: Any, shardings: Any = None) -> Any:
        """Restores `step` into the structure of `target` (a TrainState or dict, of arrays or
        ShapeDtypeStructs): numpy arrays, checked and verified (see the module docstring).

        `shardings` (a tree like `target` of jax Shardings, mesh mode): a step saved sharded
        in the target's layout is read straight onto them, each process reading only its
        shards (on any mesh shape or device count); other steps come back as numpy arrays
        for the caller to place."""
        if shardings is not None:
            tree = shardings if isinstance(shardings, dict) else (
                flax.serialization.to_state_dict(shardings))  # fmt: skip
            shardings = _flat(tree)
        restored = self._read(step, abstract_tree(target), None, shardings)
        if isinstance(target, dict):
            return restored
        return flax.serialization.from_state_dict(target, restored)

    def restore_latest(
        self, target: Any, *, on_corrupt: str = "fallback", shardings: Any = None
    ) -> tuple[int | None, Any]:
        """(step, state) of the newest intact trusted step, or (None, None) if there is none.

        A corrupt step raises (on_corrupt='fail') or is skipped with a warning, falling back
        to the previous trusted step ('fallback'); if every trusted step is corrupt, raises.
        Untrusted steps (no commit marker, no manifest) are skipped with a warning.
        """
        if on_corrupt not in ON_CORRUPT:
            raise ValueError(f"on_corrupt={on_corrupt!r} must be one of {ON_CORRUPT}")
        status = self.step_status()
        trusted = [s for s, v in status.items() if v in ("trusted", "legacy")]
        newest = trusted[-1] if trusted else -1
        for step, why in status.items():
            if why not in ("trusted", "legacy") and step > newest:
                log.warning(
                    "Ignoring checkpoint step %d in %s: %s (an interrupted save or copy).",
                    step, self.directory, why.replace("_", " "),
                )  # fmt: skip
        errors = []
        for step in reversed(trusted):
            try:
                return step, self.restore(step, target, shardings)
            except CheckpointCorruptError as e:
                if on_corrupt == "fail":
                    raise
                log.warning("%s Falling back to the previous checkpoint.", e)
                errors.append(e)
        if errors:
            raise CheckpointCorruptError(
                errors[-1].step,
                self.directory,
                [f"every checkpoint ({', '.join(str(e.step) for e in errors)}) is corrupt"]
                + [p for e in errors for p in e.problems],
            )
        return None, None

    def restore_params(self, step: int, expected_params: Any) -> Any:
        """Only the parameters of `step` (numpy), checked against `expected_params` (a tree of
        arrays or ShapeDtypeStructs) and verified — for inference, where no optimizer exists."""
        return self._read(step, abstract_tree(expected_params), "params")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:500]
