"""Shared helpers of tests/test_robustness_*.py, and a fault-injecting runner of train.py.

Run as a script, `python tests/_robustness_util.py FAULTS_JSON [train.py flags...]` installs the
faults below by monkeypatching library functions (production code has no test hooks), then
runs train.py's own `main` exactly as `python train.py [flags...]` would:

  {"kill_at_step": N}        SIGKILL itself when the loop asks for the batch of step N
  {"sigterm_at_step": N}     SIGTERM itself likewise (handled by the loop: save, exit 75)
  {"sigint_at_step": N}      SIGINT (Ctrl-C) itself likewise (handled as SIGTERM is)
  {"sigint_in_save": N}      SIGINT again in the background save of step N, after orbax wrote
                             it and before its checksums (a second Ctrl-C: exit at once)
  {"raise_at_step": N}       raise RuntimeError there (an unexpected exception)
  {"sigterm_in_setup": 1}    SIGTERM while the datasets are being prepared (before training)
  {"sigterm_in_compile": 1}  SIGTERM while the train step is being traced for compilation
  {"sigterm_in_eval": 1}     SIGTERM after the first batch of the first evaluation
  {"nan_at_step": N}         NaN loss weights in the batch of step N (real step, real check)
  {"slow_save": SECONDS}     each background checkpoint write first sleeps (a save in flight)
  {"kill_in_save": [STEP, MOMENT]}   SIGKILL in the background save of STEP, at MOMENT:
      "tmp_created"      orbax made `STEP.orbax-checkpoint-tmp-*`, no array written yet
      "data_written"     arrays written into the tmp dir, orbax's finalize not yet run
      "before_rename"    finalized tmp dir, not yet renamed to STEP/
      "before_manifest"  STEP/ renamed (orbax considers it done), checksums.json not written
      "in_retention"     while deleting an old step after STEP's manifest was written
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import _forkserver as forkserver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_PY = os.path.join(ROOT, "train.py")
RUNNER = os.path.abspath(__file__)
TIMEOUT = 240  # seconds per subprocess: a hang fails the test instead of blocking the suite
EXIT_INVALID, EXIT_NONFINITE, EXIT_PREEMPTED = 2, 3, 75


def write_corpus(directory: str) -> tuple[str, str]:
    """~400 random letter-words in 300 train / 30 eval lines: enough for 512 sentencepieces."""
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 7))) for _ in range(400)]
    paths = []
    for name, lines in (("train.txt", 300), ("eval.txt", 30)):
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write("\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(lines)))
            f.write("\n")
        paths.append(path)
    return paths[0], paths[1]


def config_fields(corpus: tuple[str, str], steps: int, **overrides) -> dict:
    """Overrides of configs/gpt_tiny.py (train.py's default recipe) for the tiny runs: gpt-tiny,
    1 layer of width 64 (a second layer adds ~1.5 s of eager init and tracing to each of the
    suite's few dozen train.py processes and nothing to what they check), dropout on so that
    the dropout RNG takes part in every bitwise comparison, a checkpoint every 2 steps, all of
    them kept."""
    fields = {
        "model": "gpt-tiny",
        "model_overrides.d_model": 64,
        "model_overrides.num_heads": 4,
        "model_overrides.d_ff": 128,
        "model_overrides.num_layers": 1,
        "model_overrides.dropout_rate": 0.1,
        "dataset": "text_files",
        "train_files": corpus[0],
        "eval_files": corpus[1],
        "vocab_size": 512,
        "max_length": 32,
        "per_device_batch_size": 4,
        "eval_batch_size": 4,
        "num_eval_batches": 2,
        "num_train_steps": steps,
        "schedule": "linear_rsqrt",
        "learning_rate": 3e-3,
        "warmup_steps": 4,
        "log_every_steps": 1,
        "eval_every_steps": 4,
        "checkpoint_every_steps": 2,
        "keep_checkpoints": 10,
        "peak_flops": 1e12,  # skips the start-up matmul measurement
        "progress_bar": False,
    }
    fields.update(overrides)
    return fields


def config_flags(corpus: tuple[str, str], steps: int, **overrides) -> list[str]:
    """train.py flags of `config_fields`."""
    return [f"--config.{k}={v}" for k, v in config_fields(corpus, steps, **overrides).items()]


def make_config(corpus: tuple[str, str], steps: int, **overrides):
    """The ConfigDict train.py builds from `config_flags` (for in-process runs)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gpt_tiny", os.path.join(ROOT, "configs", "gpt_tiny.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for key, value in config_fields(corpus, steps, **overrides).items():
        node, *path = key.split(".")
        target = config
        for part in [node, *path][:-1]:
            target = target[part]
        target[([node, *path])[-1]] = value
    return config


class Reference:
    """The run's reference run: a straight 8-step run in train.py (subprocess), whose workdir
    also carries the prepared tokenizer, TFDS build and token cache for copies. Built once per
    pytest run (by whichever xdist worker asks first) and only read afterwards: tests work in
    copies made by `new_workdir`."""

    def __init__(self, root: str):
        self.root = root
        self.corpus = (os.path.join(root, "train.txt"), os.path.join(root, "eval.txt"))
        self.workdir = os.path.join(root, "reference")
        self.steps = 8
        self._worker = os.environ.get("PYTEST_XDIST_WORKER", "main")  # unique copy names
        self._count = 0

    def build(self, root: str) -> None:
        assert write_corpus(root) == self.corpus
        # A fresh interpreter (`python train.py`): every forked run is compared with this one.
        out = train(self.workdir, config_flags(self.corpus, self.steps), fresh=True)
        assert out.returncode == 0, out.stderr[-3000:]

    def new_workdir(self, name: str, checkpoints: bool | list[int] = False) -> str:
        self._count += 1
        return copy_workdir(
            self.workdir,
            os.path.join(self.root, f"{name}-{self._worker}-{self._count}"),
            checkpoints=checkpoints,
        )

    def train(
        self, workdir: str, steps: int | None = None, **kwargs
    ) -> subprocess.CompletedProcess:
        overrides = kwargs.pop("overrides", {})
        flags = config_flags(self.corpus, self.steps if steps is None else steps, **overrides)
        return train(workdir, flags, **kwargs)


_REFERENCE: list[Reference] = []


def reference(tmp_path_factory) -> Reference:
    """One Reference per pytest run, shared by every test_robustness_* module and worker."""
    if not _REFERENCE:
        from _session_fixtures import build_once, shared_dir

        ref = Reference(shared_dir(tmp_path_factory, "robustness"))
        forkserver.prestart(env(), ROOT)  # its imports overlap the reference run (or the wait)
        build_once(ref.root, ref.build)
        _REFERENCE.append(ref)
    return _REFERENCE[0]


# XLA compiles the tests' programs without its expensive optimisation passes: on this suite
# (hundreds of small programs, each run a few times) compiling is most of the CPU time, and
# level 0 cuts it by about a quarter (measured: user 4m08 -> 2m50 for test_sampling_generate
# and test_train_steps under -n 2) while every assertion stays the same (tolerances and
# bitwise comparisons hold: compared runs use the same flags). Subprocesses inherit the flags
# through XLA_FLAGS (see `xla_flags`). TRANSFORMER_JAX_TEST_XLA_FAST=0 runs the suite with
# XLA's default optimisation, as a user's program compiles.
FAST_COMPILE_FLAGS = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    " --xla_cpu_multi_thread_eigen=false"  # two xdist workers on two cores: no thread pools
    # XLA:CPU's newer fusion emitters (MLIR) compile a tiny model's train step in about twice
    # the time of the classic LLVM emitters (measured: 4.3-6.2 s -> 1.4-3.0 s for gpt-tiny).
    " --xla_cpu_use_fusion_emitters=false"
)


def xla_flags(devices: int | None = None) -> str:
    """XLA_FLAGS for a test process: the fast-compile flags (unless switched off) and, if
    given, a number of forced host devices."""
    flags = [] if os.environ.get("TRANSFORMER_JAX_TEST_XLA_FAST", "1") == "0" else [
        FAST_COMPILE_FLAGS
    ]  # fmt: skip
    if devices is not None:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    return " ".join(flags)


def env(devices: int = 1, compilation_cache: bool = True) -> dict[str, str]:
    """The test run's environment (with its JAX compilation cache, tests/_session_fixtures.py)
    for a CPU process with `devices` host devices; `compilation_cache=False` turns the cache
    off (it only saves time: results are identical, test_compilation_cache.py)."""
    out = dict(os.environ)
    out["XLA_FLAGS"] = xla_flags(devices)
    out["JAX_PLATFORMS"] = "cpu"  # forced host devices: also on a machine with a GPU
    out["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if not compilation_cache:
        out.pop("JAX_COMPILATION_CACHE_DIR", None)
        out["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    return out


def train(
    workdir: str,
    flags: list[str],
    *,
    faults: dict | None = None,
    devices: int = 1,
    compilation_cache: bool = True,
    extra_env: dict[str, str] | None = None,
    timeout: int = TIMEOUT,
    fresh: bool = False,
) -> subprocess.CompletedProcess:
    """Runs train.py (through the fault runner when `faults` is given) to its end, in a process
    forked from the suite's fork server (tests/_forkserver.py: JAX and the library already
    imported), or with `fresh`, in a new interpreter as `python train.py` on a command line."""
    prefix = [sys.executable, TRAIN_PY] if faults is None else [
        sys.executable, RUNNER, json.dumps(faults),
    ]  # fmt: skip
    argv = [*prefix, f"--workdir={workdir}", *flags]
    run_env = {**env(devices, compilation_cache), **(extra_env or {})}
    if fresh:
        return subprocess.run(
            argv, env=run_env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
        )
    return forkserver.run(argv, run_env, ROOT, timeout)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_processes(
    workdir: str,
    flags: list[str],
    faults: list[dict | None],
    *,
    devices: int = 1,
    timeout: int = TIMEOUT,
) -> list[subprocess.CompletedProcess]:
    """One train.py run of len(faults) processes (jax.distributed on 127.0.0.1 with gloo
    collectives, `devices` CPU devices each); process i runs through the fault runner when
    faults[i] is given. A hang kills every process and fails with their output."""
    port = free_port()
    procs = []
    for i, fault in enumerate(faults):
        prefix = [sys.executable, TRAIN_PY] if fault is None else [
            sys.executable, RUNNER, json.dumps(fault),
        ]  # fmt: skip
        distributed = [
            f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={len(faults)}",
            f"--process_id={i}", "--cpu_collectives=gloo",
        ]  # fmt: skip
        argv = [*prefix, f"--workdir={workdir}", *flags, *distributed]
        procs.append(forkserver.Popen(argv, env(devices), ROOT))
    outputs: dict[int, tuple[str, str]] = {}
    readers = [
        threading.Thread(target=lambda i=i, p=p: outputs.__setitem__(i, p.communicate()))
        for i, p in enumerate(procs)
    ]
    for reader in readers:
        reader.start()
    deadline, failed_at = time.monotonic() + timeout, None
    while any(p.poll() is None for p in procs):
        now = time.monotonic()
        if failed_at is None and any(p.poll() not in (None, 0) for p in procs):
            failed_at = now  # the others get a while to exit too, then count as hung
        if now > deadline or (failed_at is not None and now > failed_at + 30):
            for p in procs:
                p.kill()
            for reader in readers:
                reader.join()
            tails = [f"process {i} (exit {p.returncode}): {outputs[i][1][-2000:]}"
                     for i, p in enumerate(procs)]  # fmt: skip
            raise AssertionError("processes hung; their stderr:\n" + "\n".join(tails))
        time.sleep(0.1)
    for reader in readers:
        reader.join()
    return [
        subprocess.CompletedProcess(p.args, p.returncode, *outputs[i]) for i, p in enumerate(procs)
    ]


def copy_workdir(src: str, dst: str, *, checkpoints: bool | list[int] = False) -> str:
    """A workdir sharing `src`'s tokenizer, TFDS build and token cache (so no preparation
    reruns); with `checkpoints`, also its checkpoints (all, or only the listed steps)."""
    os.makedirs(dst)
    for name in ("tokenizer.model", "tfds", "data_cache"):
        path = os.path.join(src, name)
        (shutil.copytree if os.path.isdir(path) else shutil.copy2)(path, os.path.join(dst, name))
    if checkpoints:
        for name in ("config.json", "model_config.json"):  # what the checkpoints belong to
            shutil.copy2(os.path.join(src, name), os.path.join(dst, name))
        ckpt = os.path.join(src, "checkpoints")
        shutil.copytree(ckpt, os.path.join(dst, "checkpoints"), symlinks=True)
        if isinstance(checkpoints, list):
            for name in os.listdir(os.path.join(dst, "checkpoints")):
                if name.isdigit() and int(name) not in checkpoints:
                    shutil.rmtree(os.path.join(dst, "checkpoints", name))
    return dst


def train_losses(workdir: str) -> dict[int, float]:
    """step -> train loss from metrics.jsonl (a resumed run first drops the rows past its
    checkpoint, so each step has one record)."""
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if record["split"] == "train":
                out[record["step"]] = record["loss"]
    return out


def records(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def checkpoint_status(workdir: str) -> dict[int, str]:
    """{step: "trusted" / "no_manifest" / ...} of the workdir's checkpoints (Checkpoints'
    own verdict, read-only)."""
    from transformer_jax.train.checkpoints import Checkpoints

    ckpt = Checkpoints(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        return ckpt.step_status()
    finally:
        ckpt.close()


def load_state(workdir: str, step: int | None = None) -> tuple[int, dict]:
    """(step, host tree of the whole train state) of the latest trusted (or given) step,
    read back through orbax with every check of Checkpoints."""
    from transformer_jax.train.checkpoints import Checkpoints

    ckpt = Checkpoints(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        step = ckpt.latest_step() if step is None else step
        assert step is not None, f"no trusted checkpoint in {workdir}"
        from orbax import checkpoint as ocp

        with ckpt._lock:  # raw orbax read, no target: exactly the stored dtypes and values
            raw = ckpt._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore())
            )["state"]
        return step, raw
    finally:
        ckpt.close()


def assert_trees_equal(a, b) -> None:
    """Bitwise equality of two host trees (same paths, dtypes, shapes and bytes)."""
    import jax
    import numpy as np

    fa = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(a)[0]}
    fb = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(b)[0]}
    assert sorted(fa) == sorted(fb)
    for k in fa:
        x, y = np.asarray(fa[k]), np.asarray(fb[k])
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert np.array_equal(x, y), f"{k} differs"


# ----------------------------------------------------------------------------- fault runner


def _kill(sig: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), sig)


def _install(faults: dict) -> None:
    import numpy as np

    from transformer_jax.data import sources
    from transformer_jax.train import checkpoints, steps

    names = ("kill_at_step", "sigterm_at_step", "sigint_at_step", "raise_at_step", "nan_at_step")
    at = {k: faults[k] for k in names if k in faults}
    if at:
        iterate = sources.BatchSource.iterate

        def patched_iterate(self, start_step=0, prefetch=2):
            batches = iterate(self, start_step, prefetch)

            def generate():
                for step in itertools.count(start_step):
                    if at.get("kill_at_step") == step:
                        _kill(signal.SIGKILL)
                    if at.get("sigterm_at_step") == step:
                        _kill(signal.SIGTERM)
                    if at.get("sigint_at_step") == step:
                        _kill(signal.SIGINT)
                    if at.get("raise_at_step") == step:
                        raise RuntimeError(f"injected failure at step {step}")
                    batch = next(batches)
                    if at.get("nan_at_step") == step:  # on the host: the compiled step is
                        # the reference run's own program, so earlier steps stay bitwise equal
                        batch = {**batch, "weights": np.asarray(batch["weights"]) * np.nan}
                    yield batch

            return generate()

        sources.BatchSource.iterate = patched_iterate

    if "sigterm_in_eval" in faults:
        iterate_eval = sources.BatchSource.iterate_eval
        sent = []

        def patched_iterate_eval(self, prefetch=2):
            for i, batch in enumerate(iterate_eval(self, prefetch)):
                yield batch
                if i == 0 and not sent:
                    sent.append(1)
                    _kill(signal.SIGTERM)

        sources.BatchSource.iterate_eval = patched_iterate_eval

    if "sigterm_in_compile" in faults:
        make_train_step = steps.make_train_step

        def patched_make_train_step(*args, **kwargs):
            step_fn = make_train_step(*args, **kwargs)

            def wrapped(state, batch, rng):  # runs while jax traces the step (compilation)
                if "sigterm_in_compile" in faults:
                    _kill(signal.SIGTERM)
                return step_fn(state, batch, rng)

            return wrapped

        steps.make_train_step = patched_make_train_step

    if "sigterm_in_setup" in faults:
        from transformer_jax import data

        make_datasets = data.make_datasets

        def patched_make_datasets(*args, **kwargs):
            _kill(signal.SIGTERM)
            return make_datasets(*args, **kwargs)

        data.make_datasets = patched_make_datasets

    if "slow_save" in faults:
        write = checkpoints.Checkpoints._write

        def slow_write(self, step, tree):
            time.sleep(faults["slow_save"])
            return write(self, step, tree)

        checkpoints.Checkpoints._write = slow_write

    if "kill_in_save" in faults:
        _install_save_kill(*faults["kill_in_save"], checkpoints)

    if "sigint_in_save" in faults:
        digests = checkpoints.file_digests

        def interrupted_digests(step_dir):
            if os.path.basename(str(step_dir)) == str(faults["sigint_in_save"]):
                _kill(signal.SIGINT)
                time.sleep(30)  # the handler must end the process before the save finishes
            return digests(step_dir)

        checkpoints.file_digests = interrupted_digests


def _install_save_kill(step: int, moment: str, checkpoints) -> None:
    from orbax.checkpoint._src.checkpointers import checkpointer
    from orbax.checkpoint._src.handlers import base_pytree_checkpoint_handler as base
    from orbax.checkpoint._src.path import atomicity

    current = {"step": None}  # the step being written (orbax may run parts in other threads)
    write = checkpoints.Checkpoints._write

    def patched_write(self, s, tree):
        current["step"] = s
        return write(self, s, tree)

    checkpoints.Checkpoints._write = patched_write

    def armed() -> bool:
        return current["step"] == step

    if moment == "tmp_created":
        create = checkpointer.Checkpointer.create_temporary_path

        async def patched_create(self, *a, **k):
            result = await create(self, *a, **k)
            if armed():
                _kill(signal.SIGKILL)
            return result

        checkpointer.Checkpointer.create_temporary_path = patched_create
    elif moment == "data_written":
        finalize = base.BasePyTreeCheckpointHandler.finalize

        def patched_finalize(self, directory):
            if armed():
                _kill(signal.SIGKILL)
            return finalize(self, directory)

        base.BasePyTreeCheckpointHandler.finalize = patched_finalize
    elif moment == "before_rename":
        rename_finalize = atomicity.AtomicRenameTemporaryPath.finalize

        async def patched_rename_finalize(self, *a, **k):
            if armed():
                _kill(signal.SIGKILL)
            return await rename_finalize(self, *a, **k)

        atomicity.AtomicRenameTemporaryPath.finalize = patched_rename_finalize
    elif moment == "before_manifest":
        digests = checkpoints.file_digests

        def patched_digests(step_dir):
            if armed():
                _kill(signal.SIGKILL)
            return digests(step_dir)

        checkpoints.file_digests = patched_digests
    elif moment == "in_retention":
        rmtree = shutil.rmtree

        def patched_rmtree(path, *a, **k):
            if armed() and os.path.basename(str(path)).startswith(".deleting-"):
                _kill(signal.SIGKILL)
            return rmtree(path, *a, **k)

        shutil.rmtree = patched_rmtree
    else:
        raise ValueError(f"unknown save moment {moment!r}")


def _main() -> None:
    faults = json.loads(sys.argv[1])
    sys.argv = [TRAIN_PY, *sys.argv[2:]]
    sys.path.insert(0, ROOT)
    from transformer_jax import runtime

    runtime.tune_gc()  # as train.py does first thing; the faults import the library first
    _install(faults)
    import runpy

    runpy.run_path(TRAIN_PY, run_name="__main__")


if __name__ == "__main__":
    _main()


TIMINGS = ("steps_per_second", "tokens_per_second", "mfu")  # wall-clock, not results


def assert_same_as_reference(ref: Reference, workdir: str, every_metric: bool = False) -> None:
    """Final state (params, opt_state, step, skipped) and every step's loss are bitwise equal
    to the reference run's; with `every_metric`, also every logged number but the timings."""
    step, state = load_state(workdir)
    ref_step, ref_state = load_state(ref.workdir)
    assert step == ref_step == ref.steps
    assert_trees_equal(state, ref_state)
    assert train_losses(workdir) == train_losses(ref.workdir)
    if every_metric:
        for split in ("train", "eval"):
            keep = lambda r: {k: v for k, v in r.items() if k not in TIMINGS}
            ours = [keep(r) for r in records(workdir) if r["split"] == split]
            theirs = [keep(r) for r in records(ref.workdir) if r["split"] == split]
            assert ours == theirs, split
