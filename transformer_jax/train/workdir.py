"""The workdir layout, so that sampling needs nothing but the workdir:

WORKDIR/config.json         the run config (ml_collections, as JSON)
WORKDIR/model_config.json   the ModelConfig the parameters belong to
WORKDIR/tokenizer.model     the sentencepiece model (transformer_jax.data), or
WORKDIR/tokenizer/          a copy of the checkpoint's own tokenizer (runs with init_from)
WORKDIR/init_from.json      where an init_from run started: the checkpoint directory and the
                            sha256 of its config and tokenizer
WORKDIR/checkpoints/<step>/ orbax checkpoints of the train state
WORKDIR/metrics.jsonl       one JSON record per logged step and split
WORKDIR/tensorboard/        TensorBoard event files
WORKDIR/train.lock          held by the one train.py writing this workdir (see WorkdirLock)
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import socket
import threading
import time
from typing import Any

import jax
import ml_collections

from transformer_jax import models
from transformer_jax.config import ModelConfig

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
MODEL_CONFIG_FILE = "model_config.json"
TOKENIZER_FILE = "tokenizer.model"
HF_TOKENIZER_DIR = "tokenizer"
INIT_FROM_FILE = "init_from.json"
CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = "train.lock"


def load_tokenizer(workdir: str):
    """The run's TextTokenizer: the checkpoint's own (copied at the start of an init_from
    run) or this library's sentencepiece model."""
    hf_copy = os.path.join(workdir, HF_TOKENIZER_DIR)
    if os.path.isdir(hf_copy):
        from transformer_jax.hf import load_tokenizer

        return load_tokenizer(hf_copy)
    from transformer_jax.data.tokenizer import Tokenizer

    return Tokenizer.load(os.path.join(workdir, TOKENIZER_FILE))


def record_init_from(workdir: str, init_from: str, tokenizer) -> None:
    """Copies the checkpoint's tokenizer into the workdir and writes init_from.json, once:
    restarts keep what the first start recorded."""
    import hashlib

    path = os.path.join(workdir, INIT_FROM_FILE)
    if os.path.exists(path):
        return
    copy = os.path.join(workdir, HF_TOKENIZER_DIR)
    if not os.path.isdir(copy):
        tmp = f"{copy}.tmp{os.getpid()}"
        os.makedirs(tmp, exist_ok=True)
        tokenizer.save(tmp)
        os.replace(tmp, copy)
    with open(os.path.join(init_from, "config.json"), "rb") as f:
        config_sha = hashlib.sha256(f.read()).hexdigest()
    record = {
        "init_from": os.path.abspath(init_from),
        "config_sha256": config_sha,
        "tokenizer_sha256": tokenizer.digest,
    }
    _atomic_write(path, json.dumps(record, indent=2))


def write_configs(workdir: str, config: ml_collections.ConfigDict, model_cfg: ModelConfig) -> None:
    os.makedirs(workdir, exist_ok=True)
    _atomic_write(os.path.join(workdir, CONFIG_FILE), config.to_json_best_effort(indent=2))
    _atomic_write(
        os.path.join(workdir, MODEL_CONFIG_FILE), json.dumps(model_cfg.to_dict(), indent=2)
    )


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_model_config(workdir: str) -> ModelConfig:
    path = os.path.join(workdir, MODEL_CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {workdir!r} is not a transformer_jax workdir (train.py writes "
            "it at start-up)."
        )
    with open(path) as f:
        return ModelConfig.from_dict(json.load(f))


def load_params(workdir: str, step: int | None = None) -> tuple[ModelConfig, Any, int]:
    """(model config, float32 params, step) of the latest finalized checkpoint (or `step`);
    configs and checkpoints written by earlier versions are migrated as they are read."""
    from transformer_jax.train.checkpoints import CheckpointCorruptError, Checkpoints

    model_cfg = read_model_config(workdir)
    ckpt = Checkpoints(os.path.join(workdir, CHECKPOINT_DIR), async_save=False)
    try:
        latest = step is None
        step = ckpt.latest_step() if latest else step
        if step is None:
            raise FileNotFoundError(f"No finalized checkpoint in {ckpt.directory}.")
        expected = jax.eval_shape(lambda r: models.init_params(model_cfg, r), jax.random.key(0))
        try:
            params = ckpt.restore_params(step, expected)
        except CheckpointCorruptError as e:
            older = [s for s in ckpt.trusted_steps() if s < step] if latest else []
            if older:  # name the step to read instead
                e.args = (
                    f"{e} The newest older checkpoint is step {older[-1]}: read it with "
                    f"step={older[-1]} (sample.py and export.py: --step {older[-1]}).",
                )
            raise
    finally:
        ckpt.close()
    return model_cfg, jax.device_put(params), step  # on device once, not at every call


def load_workdir(workdir: str, step: int | None = None):
    """(ModelConfig, params, tokenizer) of a train.py workdir: the latest finalized checkpoint
    (or `step`), its float32 parameters on the default device, and the run's TextTokenizer
    (`encode(text) -> ids`, `decode(ids) -> text`, `bos_id`, `eos_id`, `vocab_size`, ...).
    Older workdirs are migrated as they are read; a corrupt checkpoint raises
    CheckpointCorruptError naming the older step to read instead."""
    model_cfg, params, _ = load_params(workdir, step)
    return model_cfg, params, load_tokenizer(workdir)


# ----------------------------------------------------------------------------- the writer


def check_writable(workdir: str) -> None:
    """ValueError naming the path and the fix unless `workdir` is (or can be made) a directory
    that this process can write, its checkpoints folder included; nothing else is written."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(
            f"--workdir {workdir!r} is a file, not a directory; give a directory (created if "
            "missing) or move the file away."
        )
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise ValueError(
            f"--workdir {workdir!r} cannot be created ({e.strerror}: {e.filename}); give a "
            "path under a writable directory."
        ) from None
    for path in (workdir, os.path.join(workdir, CHECKPOINT_DIR)):
        if not os.path.isdir(path):
            continue
        probe = os.path.join(path, f".write-test-{socket.gethostname()}-{os.getpid()}")
        try:  # a real write: access() says yes to root and on read-only mounts alike
            with open(probe, "w") as f:
                f.write("ok")
            os.remove(probe)
        except OSError as e:
            raise ValueError(
                f"--workdir {workdir!r}: {path} is not writable ({e.strerror}); train.py "
                "writes checkpoints, metrics and its lock there. Fix its permissions or mount, "
                "or give another --workdir (sample.py and export.py read a read-only workdir)."
            ) from None


class WorkdirLockedError(ValueError):
    """Another live train.py holds the workdir (train.py: exit 2)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _describe(holder: dict) -> str:
    if not holder:
        return "a process that has not written its name yet"
    return (
        f"pid {holder.get('pid')} on host {holder.get('host')!r} (started "
        f"{holder.get('started')})"
    )


class WorkdirLock:
    """One writer per workdir: an exclusive `flock` on WORKDIR/train.lock, which holds the
    holder's host, pid and start time (JSON).

    * A second train.py on the workdir gets WorkdirLockedError naming the holder.
    * The kernel drops a flock when its process dies, however it dies, so on a local
      filesystem a lock left by a dead process is free: it is taken over with a warning that
      names the old holder.
    * On a shared filesystem whose locks do not reach across hosts, the file still names a
      holder on another host: that holder is taken as alive while its heartbeat (the file's
      mtime, refreshed every `stale_after / 4` seconds, at most a minute apart) is younger
      than `stale_after` seconds (config.lock_stale_seconds), else taken over with a warning.
      On the holder's own host a pid that no longer exists is dead at once.
    Readers (sample.py, export.py, workdir.load_params) take no lock: they only read steps
    whose checksum manifest was written (atomically) after orbax finalized them.
    """

    def __init__(self, workdir: str, stale_after: float = 3600.0):
        self.path = os.path.join(workdir, LOCK_FILE)
        self.stale_after = float(stale_after)
        self._fd: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    @staticmethod
    def read(path: str) -> dict:
        try:
            with open(path) as f:
                text = f.read()
            return json.loads(text) if text.strip() else {}
        except (OSError, ValueError):
            return {}

    def _refuse(self, holder: dict, why: str) -> None:
        raise WorkdirLockedError(
            f"{os.path.dirname(self.path)} is in use by another train.py: {_describe(holder)}"
            f"{why}. One run writes a workdir at a time: wait for it to end, stop it, or give "
            f"another --workdir (sample.py and export.py may read it meanwhile)."
        )

    def acquire(self) -> WorkdirLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self._refuse(self.read(self.path), "")
        except BaseException:
            os.close(fd)
            raise
        try:
            self._take_over(self.read(self.path))
            me = {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            }
            data = json.dumps(me).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        except BaseException:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise
        self._fd = fd
        self._beat = threading.Thread(target=self._heartbeat, name="workdir-lock", daemon=True)
        self._beat.start()
        return self

    def _take_over(self, holder: dict) -> None:
        """We hold the flock; decide about a holder the file still names (see the class)."""
        if not holder:
            return
        host, pid = holder.get("host"), holder.get("pid")
        if host == socket.gethostname():
            if isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid):
                log.warning(
                    "Workdir lock %s names pid %d on this host, which is alive but holds no "
                    "lock (another PID namespace, or a reused pid); taking the lock over.",
                    self.path, pid,
                )  # fmt: skip
            else:
                log.warning(
                    "Took over the workdir lock of %s: that process is no longer running.",
                    _describe(holder),
                )
            return
        age = time.time() - os.stat(self.path).st_mtime
        if age < self.stale_after:
            self._refuse(
                holder,
                f", heartbeat {age:.0f} s ago (a lock on another host is stale after "
                f"config.lock_stale_seconds={self.stale_after:g} s)",
            )
        log.warning(
            "Took over the workdir lock of %s: no heartbeat for %.0f s (> "
            "config.lock_stale_seconds=%g).",
            _describe(holder), age, self.stale_after,
        )  # fmt: skip

    def _heartbeat(self) -> None:
        interval = min(60.0, max(self.stale_after / 4, 0.05))
        while not self._stop.wait(interval):
            try:
                os.utime(self.path)
            except OSError:  # a vanished or read-only file: the flock still holds
                pass

    def release(self) -> None:
        """Empties the file (a later run sees no holder) and drops the flock; the file stays,
        so that a process which opened it meanwhile locks the same inode."""
        if self._fd is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
