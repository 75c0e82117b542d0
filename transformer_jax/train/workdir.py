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
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections

from transformer_jax import models
from transformer_jax.config import ModelConfig

CONFIG_FILE = "config.json"
MODEL_CONFIG_FILE = "model_config.json"
TOKENIZER_FILE = "tokenizer.model"
HF_TOKENIZER_DIR = "tokenizer"
INIT_FROM_FILE = "init_from.json"
CHECKPOINT_DIR = "checkpoints"


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
