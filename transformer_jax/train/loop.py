"""train_and_evaluate(config, workdir): the training loop behind train.py.

Exit behaviour (train.py maps these to exit codes; see README "Resume, preemption and NaN
handling"):
  * finished: the last step is checkpointed and all saves are on disk;
  * SIGTERM while training (compilation and evaluation included): the current step is saved
    (an interrupted evaluation is skipped), the save waited for, then `Preempted` is raised;
    SIGTERM before training starts (data preparation, restore) raises `Preempted` at once, as
    there is nothing new to save; Ctrl-C (SIGINT) does the same, and a second Ctrl-C during
    that save exits at once (status 130) leaving every finished checkpoint intact;
  * a resumed run first drops the metrics.jsonl rows past its checkpoint (no duplicates);
  * a NaN/Inf loss or gradient: `NonFiniteError` names the step; no non-finite state is ever
    saved (metrics are checked before every save), so the last checkpoint is the last good one;
  * a bad config, or a checkpoint that does not fit it or is corrupt: `ValueError` before
    any training step;
  * any exception: the pending checkpoint save is finished before it propagates.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from transformer_jax import models
from transformer_jax.train import checkpoints, flops, metrics, run_config, steps
from transformer_jax.train import workdir as wd
from transformer_jax.train.optimizer import make_optimizer
from transformer_jax.train.parallel import PmapRunner
from transformer_jax.train.run_config import ConfigError
from transformer_jax.train.schedules import make_schedule

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """A NaN/Inf loss or gradient (with config.skip_nonfinite=False)."""


class Preempted(RuntimeError):
    """SIGTERM or Ctrl-C (SIGINT) received; the state at `step` is on disk (or reproducible:
    step 0)."""

    def __init__(self, step: int | None, signame: str = "SIGTERM"):
        what = "Interrupted (Ctrl-C)" if signame == "SIGINT" else f"Preempted by {signame}"
        if not step:  # None: before training started; 0: no step taken yet
            msg = f"{what} before training started; nothing new to save."
        else:
            msg = f"{what}; state saved at step {step}."
        super().__init__(msg + " Rerun the same command to resume.")
        self.step = step
        self.signame = signame


class _SigtermGuard:
    """SIGTERM and SIGINT (Ctrl-C) handling for one train_and_evaluate call (main thread only;
    elsewhere nothing is installed). Before `training()`: raises Preempted at once (nothing to
    save). After: sets `event`, which the loop checks between steps and evaluation batches,
    and the loop saves and raises Preempted. A second SIGINT while that save runs exits the
    process at once (status 130): the save in flight is left unfinished, which the next start
    removes, and every earlier checkpoint stays as it was (saves never touch them)."""

    def __init__(self):
        self.event = threading.Event()
        self.signame = "SIGTERM"
        self._raise = True
        self._previous: dict[int, Any] = {}

    def training(self) -> None:
        self._raise = False

    def _handler(self, signum, frame) -> None:
        del frame
        first = not self.event.is_set()
        if first:
            self.signame = signal.Signals(signum).name
        elif signum == signal.SIGINT:
            import sys

            print(
                "Second Ctrl-C: exiting now, without finishing the checkpoint being saved; "
                "earlier checkpoints are intact. Rerun the same command to resume.",
                file=sys.stderr,
                flush=True,
            )
            os._exit(130)
        self.event.set()
        if first and self._raise:
            raise Preempted(None, self.signame)

    def __enter__(self) -> _SigtermGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


def _row_lengths(config: ml_collections.ConfigDict, model_cfg) -> tuple[int, int | None]:
    return config.max_length, (config.max_length if model_cfg.arch == "encoder_decoder" else None)


def evaluate(
    runner,
    params,
    eval_source,
    stop: threading.Event | None = None,
) -> dict | None:
    """Sums the eval stats over the eval split (`eval_source` yields at most
    config.num_eval_batches batches) and returns means, or None when `stop` is set between
    batches (SIGTERM: the evaluation is abandoned). Sums stay on device; one fetch at the end."""
    totals = None
    for batch in eval_source.iterate_eval():
        if stop is not None and stop.is_set():
            return None
        stats = runner.eval(params, batch)  # summed stats (pmap: one copy per device)
        totals = stats if totals is None else jax.tree_util.tree_map(jnp.add, totals, stats)
    if totals is None:
        raise ValueError("The validation split produced no batches; check the eval data.")
    host = jax.device_get(runner.single(totals))
    return steps.summarize({k: float(v) for k, v in host.items()})


def _translation_eval(data, config, workdir: str, model_cfg, tokenizer, is_chief: bool):
    """The BLEU/chrF evaluator of a seq2seq run on parallel text (process 0 only), or None."""
    n = config.get("bleu_sentences", 0)
    if not (is_chief and n and config.objective == "seq2seq"):
        return None
    from transformer_jax.eval.translation import TRANSLATIONS_DIR, TranslationEval

    return TranslationEval(
        model_cfg,
        tokenizer,
        data.read_pairs(config, workdir, "eval", limit=n),
        os.path.join(workdir, TRANSLATIONS_DIR),
        beam_size=config.get("bleu_beam_size", 4),
        alpha=0.6,
        max_new_tokens=config.max_length,
    )


def _datasets(data, config: ml_collections.ConfigDict, workdir: str, tokenizer=None):
    """make_datasets on every process; with several processes, process 0 first prepares the
    shared files (TFDS build, tokenizer, token caches) and the others then only read them."""
    kw = dict(
        process_index=jax.process_index(), process_count=jax.process_count(), tokenizer=tokenizer
    )
    if jax.process_count() == 1:
        return data.make_datasets(config, workdir, **kw)
    from jax.experimental import multihost_utils

    if jax.process_index() == 0:
        result = data.make_datasets(config, workdir, **kw)
    multihost_utils.sync_global_devices("transformer_jax:data_prepared")
    if jax.process_index() != 0:
        result = data.make_datasets(config, workdir, **kw)
    return result


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains `config` in `workdir`, resuming from its latest intact trusted checkpoint."""
    from transformer_jax import data  # TF import deferred: not needed to build models

    # Every check that needs no data happens before anything is written or compiled.
    try:
        run_config.validate(config)
        data.validate_config(config)
        if config.get("init_from") is None:  # else checked once the checkpoint is read
            run_config.model_config(config, config.vocab_size)  # position limit, objective
    except ValueError as e:
        raise ConfigError(str(e)) from e
    workdir = os.path.abspath(workdir)
    lock = _lock_workdir(workdir, config.get("lock_stale_seconds", 3600.0))
    try:
        with _SigtermGuard() as guard:
            return _train(config, workdir, data, guard)
    finally:
        if lock is not None:
            lock.release()


def _lock_workdir(workdir: str, stale_after: float) -> wd.WorkdirLock | None:
    """Checks that the workdir is a writable directory, then takes its lock (process 0 of a
    multi-process run; all processes then agree, so that all exit 2 if it is held).
    ConfigError naming the path, or the holder, and the fix."""
    chief = jax.process_index() == 0
    lock, error = None, None
    try:
        wd.check_writable(workdir)
        if chief:
            lock = wd.WorkdirLock(workdir, stale_after).acquire()
    except ValueError as e:
        error = str(e)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        failed = multihost_utils.process_allgather(np.int32(error is not None))
        if error is None and np.any(failed):
            error = "Another process of this run could not use the workdir (see its output)."
    if error is not None:
        if lock is not None:
            lock.release()
        raise ConfigError(error)
    return lock


def _before_training(fn, *args, **kwargs):
    """Runs a set-up stage; a ValueError there is a config/input/checkpoint problem."""
    try:
        return fn(*args, **kwargs)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from e


def _init_from_tokenizer(workdir: str, init_from: str):
    """The checkpoint's tokenizer: the copy an earlier start recorded, else the checkpoint's."""
    if os.path.isdir(os.path.join(workdir, wd.HF_TOKENIZER_DIR)):
        return wd.load_tokenizer(workdir)
    from transformer_jax import hf

    return hf.load_tokenizer(init_from)


def _init_from_model(workdir: str, init_from: str, config):
    """(the checkpoint's ModelConfig, its params or None). A restart reads the config the
    first start recorded (the checkpoint directory may be gone by then) and leaves the
    weights unread: they are read only if no training checkpoint exists yet. Mesh mode:
    each tensor is placed on the mesh as it is read (no host holds the whole model)."""
    if os.path.exists(os.path.join(workdir, wd.INIT_FROM_FILE)):
        return wd.read_model_config(workdir), None
    from transformer_jax import hf

    return hf.load(init_from, mesh=_mesh(config))


def _mesh(config):
    """Mesh mode: the run's device mesh; pmap mode: None."""
    if config.get("parallelism", "pmap") == "pmap":
        return None
    from transformer_jax.train import sharding

    return sharding.make_mesh(**config.mesh.to_dict())


def _init_from_state(init_from: str, params, abstract, tx, config):
    """The train state that starts from the checkpoint's weights (host -> device once)."""
    if params is None:
        from transformer_jax import hf

        params = hf.load(init_from, mesh=_mesh(config))[1]
    expected = jax.tree_util.tree_structure(abstract.params)
    if jax.tree_util.tree_structure(params) != expected:  # config.scan_layers: stack them
        params = models.stack_layers(params)
    if jax.tree_util.tree_structure(params) != expected:
        raise ValueError(
            f"config.init_from={init_from!r} holds a model without the heads training needs "
            "(a bare backbone such as BertModel); start from a class with its LM head "
            "(BertForMaskedLM, BertForPreTraining, GPT2LMHeadModel, ...)."
        )
    params = jax.tree.map(lambda a, s: jnp.asarray(a, s.dtype), params, abstract.params)
    return steps.init_train_state(params, tx)


def _train(config, workdir: str, data, guard: _SigtermGuard) -> dict[str, Any]:
    is_chief = jax.process_index() == 0

    init_from = config.get("init_from")
    base, hf_params, tokenizer = None, None, None
    if init_from is not None:
        tokenizer = _before_training(_init_from_tokenizer, workdir, init_from)
    train_source, eval_source, tokenizer = _before_training(
        _datasets, data, config, workdir, tokenizer
    )
    if init_from is not None:
        base, hf_params = _before_training(_init_from_model, workdir, init_from, config)
    model_cfg = _before_training(
        run_config.model_config,
        config,
        tokenizer.vocab_size,
        base,
        own_sentinels=bool(tokenizer.sentinel_ids),
    )
    model = models.build(model_cfg)

    schedule = make_schedule(
        config.schedule,
        d_model=model_cfg.d_model,
        warmup_steps=config.warmup_steps,
        learning_rate=config.learning_rate,
    )
    tx = make_optimizer(
        schedule,
        b1=config.b1,
        b2=config.b2,
        eps=config.eps,
        weight_decay=config.weight_decay,
        grad_clip_norm=config.grad_clip_norm,
    )
    base_rng = jax.random.key(config.seed)
    init_rng = jax.random.fold_in(base_rng, 0)

    def init_state():
        return steps.init_train_state(models.init_params(model_cfg, init_rng), tx)

    ckpt = checkpoints.Checkpoints(
        os.path.join(workdir, wd.CHECKPOINT_DIR),
        max_to_keep=config.keep_checkpoints,
        async_save=config.async_checkpoints,
        primary=is_chief,
    )
    writer = metrics.MetricWriter(workdir, enabled=is_chief)
    try:
        for name in ckpt.remove_partial_saves():
            log.warning("Removed %s: a checkpoint save that was interrupted.", name)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("transformer_jax:checkpoints_cleaned")
        # Shapes and dtypes only: a checkpoint is checked against them before any compute.
        abstract = jax.eval_shape(init_state)
        latest, state = _before_training(
            ckpt.restore_latest,
            abstract,
            on_corrupt=config.corrupt_checkpoint,
            shardings=_state_shardings(config, model_cfg, abstract),
        )
        if latest is None and init_from is not None:
            state = _before_training(_init_from_state, init_from, hf_params, abstract, tx, config)
            log.info("Starting from the weights in %s", init_from)
        elif latest is None:
            state = None  # created by the runner, in place (sharded in mesh mode)
        else:
            log.info("Resumed from step %d in %s", latest, ckpt.directory)
        writer.resume_at(latest or 0)  # rows past the checkpoint are redone: no duplicates
        del hf_params
        # Only now, with the checkpoint known to fit: a mismatched rerun must not overwrite
        # the config files that describe the checkpoints already in this workdir.
        if is_chief:
            wd.write_configs(workdir, config, model_cfg)
            if init_from is not None:
                wd.record_init_from(workdir, init_from, tokenizer)
        translation_eval = _before_training(
            _translation_eval, data, config, workdir, model_cfg, tokenizer, is_chief
        )
        guard.training()
        return _run(
            config, model, model_cfg, tx, schedule, state, base_rng, train_source,
            eval_source, ckpt, writer, is_chief, guard, init_state, abstract, translation_eval,
        )  # fmt: skip
    finally:
        try:
            ckpt.close()  # waits for the pending save on every exit path
        finally:
            writer.close()


def _state_shardings(config, model_cfg, abstract):
    """Mesh mode: where each state array lives (a sharded checkpoint is read straight into
    it, each process reading only its shards); pmap mode: None."""
    mesh = _mesh(config)
    if mesh is None:
        return None
    from transformer_jax.train import sharding

    return sharding.state_shardings(abstract, sharding.param_shardings(model_cfg, mesh), mesh)


def _make_runner(config, model_cfg, train_step, eval_step, abstract):
    """pmap (the default) or mesh mode: the same pure steps, wrapped and placed differently."""
    if config.get("parallelism", "pmap") == "pmap":
        return PmapRunner(train_step, eval_step)
    from transformer_jax.train import sharding

    return sharding.MeshRunner(
        train_step, eval_step, abstract, model_cfg, sharding.make_mesh(**config.mesh.to_dict())
    )


def _run(
    config, model, model_cfg, tx, schedule, state, base_rng, train_source, eval_source,
    ckpt, writer, is_chief, guard, init_state, abstract, translation_eval=None,
) -> dict[str, Any]:  # fmt: skip
    sigterm = guard.event  # SIGTERM or SIGINT seen

    def run_eval(step: int) -> dict | None:
        """Eval-split means (None if stopped), with BLEU/chrF for a translation run."""
        result = evaluate(runner, replicated.params, eval_source, eval_stop)
        if result is not None and translation_eval is not None:
            result.update(translation_eval(runner.single(replicated.params), step))
        return result

    def signame() -> str:
        return guard.signame

    start_step = 0 if state is None else int(state.step)
    total_steps = config.num_train_steps
    mesh_mode = config.get("parallelism", "pmap") == "mesh"
    chunk = config.get("loss_chunk_size", -1)
    micro_rows = config.per_device_batch_size // config.grad_accum_steps
    train_step = steps.make_train_step(
        model,
        tx,
        schedule,
        objective=config.objective,
        label_smoothing=config.label_smoothing,
        grad_accum_steps=config.grad_accum_steps,
        skip_nonfinite=config.skip_nonfinite,
        axis_name=None if mesh_mode else "batch",
        loss_chunk_size=steps.resolve_loss_chunk_size(
            chunk, micro_rows * config.max_length, model_cfg.vocab_size
        ),
    )
    eval_step = steps.make_eval_step(
        model,
        objective=config.objective,
        label_smoothing=config.label_smoothing,
        axis_name=None if mesh_mode else "batch",
        loss_chunk_size=steps.resolve_loss_chunk_size(
            chunk, config.eval_batch_size * config.max_length, model_cfg.vocab_size
        ),
    )
    runner = _make_runner(config, model_cfg, train_step, eval_step, abstract)
    step_rng = jax.random.fold_in(base_rng, 1)

    global_batch = config.per_device_batch_size * jax.device_count()
    row_flops = flops.train_flops(model_cfg, *_row_lengths(config, model_cfg))
    peak, peak_source = metrics.peak_flops_per_device(config.dtype, config.peak_flops)
    if is_chief:
        log.info("MFU peak per device: %.3g FLOP/s (%s)", peak, peak_source)

    replicated = runner.init(init_state, abstract) if state is None else runner.place(state)
    del state
    pending: list[tuple[int, Any]] = []  # (step number after the update, device metrics)
    summary: dict[str, Any] = {"step": start_step, "compile_seconds": None}
    timer = {"time": None, "steps": 0}
    # The state at start_step is on disk, or (step 0) reproducible from the seed.
    last_saved = start_step

    def flush() -> dict[str, float] | None:
        """Fetches pending metrics, stops on non-finite, writes means; returns the last."""
        if not pending:
            return None
        fetched = jax.device_get([runner.single(m) for _, m in pending])
        done = [s for s, _ in pending]
        pending.clear()
        for s, m in zip(done, fetched, strict=True):
            if not m["finite"] and not config.skip_nonfinite:
                ckpt.wait()  # so that the last checkpoint named below is on disk
                raise NonFiniteError(
                    f"Non-finite loss or gradient at step {s} (the update from step {s - 1}; "
                    f"loss sum {m['loss']}, grad norm {m['grad_norm']}). Nothing after the "
                    f"last good checkpoint was saved; last checkpoint: step "
                    f"{ckpt.latest_step()}. Lower learning_rate, enable grad_clip_norm, or set "
                    "skip_nonfinite=True to skip such updates."
                )
        totals = {k: sum(float(m[k]) for m in fetched) for k in fetched[0]}
        out = steps.summarize(totals)
        last = fetched[-1]
        out["learning_rate"] = float(last["learning_rate"])
        out["grad_norm"] = float(last["grad_norm"])
        out["skipped"] = float(last["skipped"])
        if timer["time"] is not None and timer["steps"]:
            elapsed = time.perf_counter() - timer["time"]
            out["steps_per_second"] = timer["steps"] / elapsed
            out["tokens_per_second"] = out.pop("tokens") / elapsed
            out["mfu"] = (
                row_flops * global_batch * timer["steps"] / elapsed / (peak * jax.device_count())
            )
        else:
            out.pop("tokens")
        timer["time"], timer["steps"] = time.perf_counter(), 0
        writer.write(done[-1], "train", out)
        return out

    def save(step: int) -> None:
        nonlocal last_saved
        flush()  # raises before a non-finite state could be saved
        if last_saved != step:
            # Copied to host inside save (after the previous save finished), before the next
            # step donates these buffers; written in the background. Mesh mode: the sharded
            # state as it is (each process copies and writes only its own shards).
            ckpt.save(step, replicated if mesh_mode else runner.single(replicated))
            last_saved = step

    def preempt(step: int) -> None:
        save(step)
        ckpt.wait()
        writer.flush()
        raise Preempted(step, signame())  # its message is the one line printed

    def progress_bar(initial: int):
        """The console bar, made after the first (compiling) step so that its rate and ETA
        measure training only."""
        return tqdm.tqdm(
            total=total_steps,
            initial=initial,
            disable=not (is_chief and config.progress_bar),
            desc="train",
            unit="step",
            dynamic_ncols=True,
        )

    multi = jax.process_count() > 1
    eval_stop = None if multi else sigterm  # multi-process: evaluations run to the end
    if start_step >= total_steps:  # already done: report the final evaluation again
        result = run_eval(start_step)
        if result is None:
            raise Preempted(start_step, signame())
        summary["eval"] = result
        return summary

    def stop_requested(step: int) -> bool:
        """SIGTERM seen? With several processes all must stop at the same step (the save and
        the pmapped steps are collectives), so they agree every log_every_steps steps."""
        if not multi:
            return sigterm.is_set()
        if step % config.log_every_steps:
            return False
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.int32(sigterm.is_set()))
        return bool(np.any(flags))

    batches = train_source.iterate(start_step)
    progress = None
    postfix: dict[str, str] = {}  # the progress line: the last train log's numbers,
    bleu_postfix: dict[str, str] = {}  # and the last evaluation's BLEU/chrF
    with contextlib.ExitStack() as stack, contextlib.closing(batches):
        for step in range(start_step, total_steps):
            if stop_requested(step):
                preempt(step)
            ckpt.raise_if_failed()  # a failed save (disk full, I/O error) stops the run now
            batch = next(batches)
            if summary["compile_seconds"] is None:
                if is_chief:
                    log.info(
                        "Step %d: compiling the train step (rate and ETA start after it)",
                        step + 1,
                    )
                t0 = time.perf_counter()
                replicated, m = runner.train(replicated, batch, step_rng)
                jax.block_until_ready(m)
                summary["compile_seconds"] = time.perf_counter() - t0
                pending.append((step + 1, m))
                flush()  # the first step (with compilation) is not timed as throughput
                progress = stack.enter_context(progress_bar(step + 1))
            else:
                replicated, m = runner.train(replicated, batch, step_rng)
                pending.append((step + 1, m))
                timer["steps"] += 1
                progress.update(1)
            done = step + 1
            if done % config.log_every_steps == 0 or done == total_steps:
                out = flush()
                if out is not None:
                    summary["train"] = out
                    postfix = dict(
                        loss=f"{out['loss']:.3f}",
                        tok_s=f"{out.get('tokens_per_second', 0):.0f}",
                        lr=f"{out['learning_rate']:.2e}",
                    )
                    progress.set_postfix({**postfix, **bleu_postfix})
            if done % config.eval_every_steps == 0 or done == total_steps:
                flush()
                result = run_eval(done)
                if result is None:
                    log.warning("%s during the evaluation at step %d: skipped.", signame(), done)
                    preempt(done)
                summary["eval"] = result
                writer.write(done, "eval", result)
                if "bleu" in result:
                    bleu_postfix.update(bleu=f"{result['bleu']:.1f}", chrf=f"{result['chrf']:.1f}")
                    progress.set_postfix({**postfix, **bleu_postfix})
                progress.unpause()  # the bar's rate and ETA leave the evaluation's time out
                if is_chief:
                    log.info(
                        "Step %d eval: loss %.4f, perplexity %.2f, accuracy %.3f%s",
                        done, result["loss"], result["perplexity"], result["accuracy"],
                        "".join(f", {k} {result[k]:.2f}" for k in ("bleu", "chrf") if k in result),
                    )  # fmt: skip
                timer["time"], timer["steps"] = time.perf_counter(), 0
            if done % config.checkpoint_every_steps == 0 or done == total_steps:
                save(done)
            summary["step"] = done
    writer.flush()
    return summary
