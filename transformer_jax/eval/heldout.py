"""Held-out metrics of a trained model, as evaluate.py reports them.

`heldout_metrics` runs the training run's own eval step (train/steps.py, pmapped through
train/loop.evaluate) over every batch of an eval split that the data pipeline builds exactly
as training does (same framing, packing and MLM corruption):
  * decoder-only and encoder-decoder models: nll (nats per target token) and
    perplexity = exp(mean nll), with token accuracy;
  * encoder-only models (MLM): accuracy of the masked-token predictions (and their nll).

`data_config` says which split: the run's own eval split, a plain text file, a TFDS catalog
dataset, or a (source file, reference file) pair for translation.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any

import ml_collections

from transformer_jax.train import workdir as wd

# The objective a checkpoint without a run config (a Hugging Face directory) is scored with.
ARCH_OBJECTIVE = {"decoder": "clm", "encoder": "mlm", "encoder_decoder": "seq2seq"}


def run_config(workdir: str | None) -> ml_collections.ConfigDict:
    """The run config a workdir was trained with (WORKDIR/config.json), else the defaults."""
    from transformer_jax.train import default_config

    if workdir is None:
        return default_config()
    path = os.path.join(workdir, wd.CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {workdir!r} is not a transformer_jax workdir (train.py writes "
            "it at start-up)."
        )
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def data_config(
    base: ml_collections.ConfigDict,
    arch: str,
    *,
    text_file: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    source_file: str | None = None,
    reference_file: str | None = None,
    own_split: bool = False,
    batch_size: int = 8,
    max_batches: int | None = None,
    max_length: int | None = None,
) -> ml_collections.ConfigDict:
    """A copy of the run config `base` that makes the data pipeline read the chosen split
    (exactly one of: text_file, dataset, source_file + reference_file, own_split)."""
    chosen = [
        n
        for n, v in (
            ("--text_file", text_file),
            ("--dataset", dataset),
            ("--source_file", source_file),
            ("--own split", own_split or None),
        )
        if v
    ]
    if len(chosen) != 1:
        raise ValueError(f"Choose exactly one evaluation set; got {chosen or 'none'}.")
    if (source_file is None) != (reference_file is None):
        raise ValueError("--source_file and --reference_file go together (aligned lines).")
    c = ml_collections.ConfigDict(base.to_dict())
    objective = c.get("objective") or ARCH_OBJECTIVE[arch]
    if source_file is not None:
        if arch != "encoder_decoder":
            raise ValueError(
                f"--source_file/--reference_file score translations, but the model is {arch}, "
                "not encoder-decoder; use --text_file."
            )
        c.dataset = "parallel_text"
        c.train_source = c.eval_source = source_file
        c.train_target = c.eval_target = reference_file
        objective = "seq2seq"
    elif text_file is not None:
        if objective == "seq2seq":
            raise ValueError(
                "A translation model is scored on aligned sentences: give --source_file and "
                "--reference_file instead of --text_file."
            )
        if not os.path.isfile(text_file):
            raise FileNotFoundError(f"--text_file {text_file!r} does not exist.")
        c.dataset = "text_files"
        c.train_files = c.eval_files = text_file
    elif dataset is not None:
        from transformer_jax.data import catalog_spec

        spec = catalog_spec(dataset, bool(c.get("reverse_translation")))
        if spec.is_parallel != (objective == "seq2seq"):
            raise ValueError(
                f"--dataset {dataset!r} is {'parallel' if spec.is_parallel else 'plain'} text, "
                f"but the model is scored with objective {objective!r}."
            )
        c.dataset, c.data_dir = dataset, data_dir
    if not own_split:
        c.max_train_examples = 1  # the pipeline reads a train split too: keep it tiny
    c.objective = objective
    c.per_device_batch_size = 1
    c.eval_batch_size = int(batch_size)
    c.num_eval_batches = None if max_batches is None else int(max_batches)
    c.max_length = int(max_length or c.get("max_length") or 128)
    c.seed = int(c.get("seed") or 0)
    return c


def heldout_metrics(
    model_cfg, params: Any, tokenizer, config: ml_collections.ConfigDict, data_workdir: str | None
) -> dict[str, float]:
    """Means over the split `config` names (see data_config): loss, nll, perplexity, accuracy,
    tokens (+ nsp_loss, nsp_accuracy for mlm_nsp). `data_workdir`: where the data pipeline
    keeps its files (the run's workdir for its own split: its token cache is reused); None: a
    temporary directory, removed afterwards."""

    from transformer_jax import data, models
    from transformer_jax.train import loop, steps
    from transformer_jax.train.parallel import PmapRunner

    with contextlib.ExitStack() as stack:
        if data_workdir is None:
            data_workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="evaluate-"))
        _, eval_source, _ = data.make_datasets(config, data_workdir, tokenizer=tokenizer)
        eval_step = steps.make_eval_step(models.build(model_cfg), objective=config.objective)
        runner = PmapRunner(None, eval_step)
        return loop.evaluate(runner, runner.place(params), eval_source)
