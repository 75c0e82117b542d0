"""Run settings: every field a recipe in configs/ may set, with defaults, and their checks.

Model hyperparameters are NOT here: `model` names a preset (transformer_jax.presets) and
`model_overrides` changes fields of it (root fields, `group.field` paths such as
`attention.num_heads`, nested groups, or the flat names of version 1 such as `num_heads`: see
`ModelConfig.override`); the vocabulary size comes from the tokenizer.
"""

from __future__ import annotations

import math
import os

import ml_collections
from ml_collections.config_dict import placeholder

from transformer_jax import presets
from transformer_jax.config import REMATS, ModelConfig
from transformer_jax.train.schedules import SCHEDULES
from transformer_jax.train.steps import OBJECTIVES

CORRUPT_CHECKPOINT = ("fallback", "fail")  # see checkpoints.Checkpoints.restore_latest
PARALLELISM = ("pmap", "mesh")  # see transformer_jax.train.sharding


class ConfigError(ValueError):
    """A bad config, input or checkpoint, found before training started (train.py: exit 2)."""


# Which objectives each architecture trains with.
ARCH_OBJECTIVES = {
    "decoder": ("clm",),
    "encoder": ("mlm", "mlm_nsp"),
    "encoder_decoder": ("denoise", "span_corruption", "seq2seq"),
    "two_stream": ("plm",),
}


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # Model.
    c.model = "gpt-tiny"  # a preset name: transformer_jax.presets.names()
    # e.g. {'num_layers': 4, 'attention': {'num_heads': 8}} (see ModelConfig.override)
    c.model_overrides = ml_collections.ConfigDict()
    c.dtype = "float32"  # compute dtype: float32 | bfloat16 (params stay float32)
    # A Hugging Face checkpoint directory to fine-tune (config.json + safetensors + tokenizer):
    # the model and its tokenizer come from there (model, vocab_size are not used; overrides
    # may change dropout and the like). None: train `model` from scratch.
    c.init_from = placeholder(str)
    # Data (transformer_jax.data).
    c.dataset = "stdlib"  # stdlib | text_files | parallel_text | a TFDS catalog name
    c.data_dir = placeholder(str)  # TFDS data_dir (None: WORKDIR/tfds)
    c.train_files = ""  # text_files: a file, a folder or a glob of training files
    c.eval_files = ""  # text_files: validation files, likewise ("" = hold out part of train)
    c.train_source = ""  # parallel_text: aligned source/target line files
    c.train_target = ""
    c.eval_source = ""
    c.eval_target = ""
    c.objective = "clm"  # clm | mlm | mlm_nsp | denoise | span_corruption | seq2seq | plm
    c.vocab_size = 2048  # sentencepiece vocabulary (trained on the train split)
    c.max_length = 128  # tokens per row (packed)
    c.validation_fraction = 0.03  # stdlib / text_files without eval_files: held out (README)
    c.reverse_translation = False  # '<wmt>_translate/xx-yy' catalog sets: True = yy -> xx
    c.tokenizer_max_sentences = 100_000  # lines sampled to train sentencepiece
    c.max_train_examples = placeholder(int)  # cap on train documents/pairs (None: all)
    c.mlm_probability = 0.15  # mlm: share of tokens chosen (then 80/10/10 mask/random/keep)
    c.denoise_ratio = 0.3  # denoise: share of tokens in infilled spans
    c.poisson_lambda = 3.0  # denoise: mean span length
    c.noise_density = 0.15  # span_corruption (T5): share of tokens in noise spans
    c.mean_noise_span_length = 3.0  # span_corruption: mean noise span length
    c.plm_k = 6  # plm (XLNet): predict the last 1/K of each example's factorisation order
    # Batches.
    c.per_device_batch_size = 16
    c.eval_batch_size = 16  # per device
    c.grad_accum_steps = 1  # micro-batches per update (per_device_batch_size must divide)
    # Optimisation.
    c.num_train_steps = 1000
    c.schedule = "rsqrt"  # rsqrt (paper) | linear_rsqrt | constant
    c.learning_rate = 1.0  # rsqrt: scale of d_model^-0.5·min(...); else the peak
    c.warmup_steps = 100
    c.b1 = 0.9
    c.b2 = 0.98
    c.eps = 1e-9
    c.weight_decay = 0.0
    c.grad_clip_norm = 1.0  # 0 or None: no clipping
    c.label_smoothing = 0.0
    # Tokens per chunk of the chunked cross-entropy (losses.chunked_token_stats: [B, T, V]
    # logits never exist, at the cost of recomputing each chunk's logits in the backward
    # pass); 0: the plain loss over the full logits. -1 (auto): chunks of 1024 tokens once the
    # float32 logits of a device's micro-batch would pass 1 GiB (32 MiB on CPUs, where the
    # chunked loss is also faster: steps.resolve_loss_chunk_size), else plain.
    c.loss_chunk_size = -1
    c.skip_nonfinite = False  # True: skip updates with a NaN/Inf loss or gradient
    # Loop.
    c.seed = 0
    c.log_every_steps = 10
    c.eval_every_steps = 200
    c.num_eval_batches = ml_collections.FieldReference(20, field_type=int)  # None: whole split
    # seq2seq on parallel text: BLEU and chrF (sacrebleu) of beam-search translations of the
    # first bleu_sentences eval pairs at every evaluation (0: off); WORKDIR/translations/.
    c.bleu_sentences = 64
    c.bleu_beam_size = 4
    c.checkpoint_every_steps = 200
    c.keep_checkpoints = 3  # newest trusted checkpoints kept (older ones are deleted)
    c.async_checkpoints = True  # write checkpoints in a background thread (one process only)
    # A checkpoint whose files or arrays fail their sha256 check on resume: 'fallback' resumes
    # from the previous intact one (with a warning); 'fail' stops (train.py exit code 2).
    c.corrupt_checkpoint = "fallback"
    # train.py locks WORKDIR/train.lock; a lock naming a holder on another host (a shared
    # filesystem) whose heartbeat is older than this many seconds is taken over.
    c.lock_stale_seconds = 3600.0
    c.peak_flops = placeholder(float)  # per-device peak FLOP/s (None: datasheet/measured)
    # Scaling out (README "Scaling out"). pmap: the state replicated on every device (the
    # default); mesh: one jit step over a Mesh (data, fsdp, tensor), parameters and optimizer
    # state sharded by transformer_jax.train.sharding.RULES. -1 = the rest of the devices.
    c.parallelism = "pmap"  # pmap | mesh
    c.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
    c.scan_layers = False  # one nn.scan over the layers (params stacked on a `layers` axis)
    c.remat = "none"  # none | full | dots: jax.checkpoint per layer (memory for compute)
    c.progress_bar = True
    return c


def _fail(field: str, value, rule: str) -> None:
    raise ValueError(f"config.{field}={value!r}: {rule}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def unknown_field(config: ml_collections.ConfigDict | None, path: str) -> str | None:
    """None if `path` ('field' or 'group.field', model_overrides excepted: ModelConfig checks
    those) names a field of `config` (default: default_config()), else the one-line message
    naming it and the closest known names (difflib)."""
    import difflib

    node = default_config() if config is None else config
    parts = path.split(".")
    for i, part in enumerate(parts):
        if i == 1 and parts[0] == "model_overrides":
            return None
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            known = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            close = difflib.get_close_matches(part, known, n=3, cutoff=0.0)
            hint = f"the closest known names: {', '.join(close)}" if close else "no fields here"
            return (
                f"config.{path}: unknown field {part!r}; {hint} (every field is listed, with "
                "its default, in transformer_jax/train/run_config.py)"
            )
        node = node[part]
    return None


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks run settings before any data or compile work; ValueError names field and range.

    (The data fields are checked by `transformer_jax.data.validate_config`, the model by
    `model_config`; train_and_evaluate runs all three before doing any work.)"""
    known = default_config()
    for field in config.keys():  # a recipe's typo must not be silently ignored
        if field not in known:
            raise ValueError(unknown_field(known, field))
    init_from = config.get("init_from")
    if init_from is not None and not os.path.isfile(os.path.join(init_from, "config.json")):
        _fail("init_from", init_from, "is not a Hugging Face checkpoint directory (no config.json)")
    if init_from is None and config.model not in presets.PRESETS:
        _fail("model", config.model, f"unknown preset; choose one of {presets.names()}")
    for field in ("per_device_batch_size", "eval_batch_size", "num_train_steps", "max_length"):
        value = config[field]
        if not _is_int(value) or value <= 0:
            _fail(field, value, "must be a positive integer (>= 1)")
    for field in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
        if not _is_int(config[field]) or config[field] <= 0:
            _fail(field, config[field], "must be a positive integer (steps)")
    if not _is_int(config.vocab_size) or config.vocab_size <= 0:
        _fail("vocab_size", config.vocab_size, "must be a positive integer (>= 512 in practice)")
    if not _is_int(config.warmup_steps) or config.warmup_steps < 0:
        _fail("warmup_steps", config.warmup_steps, "must be an integer >= 0")
    if config.schedule not in SCHEDULES:
        _fail("schedule", config.schedule, f"must be one of {SCHEDULES}")
    if config.schedule != "constant" and config.warmup_steps == 0:
        _fail("warmup_steps", 0, f"schedule {config.schedule!r} needs warmup_steps >= 1")
    if not _is_number(config.learning_rate) or not config.learning_rate > 0:
        _fail("learning_rate", config.learning_rate, "must be a finite number > 0")
    for field in ("b1", "b2"):
        if not _is_number(config[field]) or not 0.0 <= config[field] < 1.0:
            _fail(field, config[field], "must be in [0, 1)")
    if not _is_number(config.eps) or not config.eps > 0:
        _fail("eps", config.eps, "must be a finite number > 0")
    if not _is_number(config.weight_decay) or config.weight_decay < 0:
        _fail("weight_decay", config.weight_decay, "must be a finite number >= 0")
    clip = config.grad_clip_norm
    if clip is not None and (not _is_number(clip) or clip < 0):
        _fail("grad_clip_norm", clip, "must be a finite number > 0, or 0/None for no clipping")
    if config.objective not in OBJECTIVES:
        _fail("objective", config.objective, f"must be one of {OBJECTIVES}")
    if config.dtype not in ("float32", "bfloat16"):
        _fail("dtype", config.dtype, "must be 'float32' or 'bfloat16'")
    if not _is_int(config.grad_accum_steps) or config.grad_accum_steps <= 0:
        _fail("grad_accum_steps", config.grad_accum_steps, "must be a positive integer")
    if config.per_device_batch_size % config.grad_accum_steps:
        _fail(
            "grad_accum_steps",
            config.grad_accum_steps,
            f"must divide per_device_batch_size={config.per_device_batch_size}",
        )
    chunk = config.get("loss_chunk_size", -1)
    if not _is_int(chunk) or chunk < -1:
        _fail("loss_chunk_size", chunk, "must be an int: -1 (auto), 0 (plain loss) or > 0")
    if not _is_number(config.label_smoothing) or not 0.0 <= config.label_smoothing < 1.0:
        _fail("label_smoothing", config.label_smoothing, "must be in [0, 1)")
    if not _is_int(config.keep_checkpoints) or config.keep_checkpoints < 1:
        _fail("keep_checkpoints", config.keep_checkpoints, "must be an integer >= 1")
    if config.num_eval_batches is not None and (
        not _is_int(config.num_eval_batches) or config.num_eval_batches <= 0
    ):
        _fail("num_eval_batches", config.num_eval_batches, "must be > 0 or None (whole split)")
    bleu = config.get("bleu_sentences", 0)
    if not _is_int(bleu) or bleu < 0:
        _fail("bleu_sentences", bleu, "must be an integer >= 0 (0: no BLEU/chrF)")
    beam = config.get("bleu_beam_size", 1)
    if not _is_int(beam) or beam < 1:
        _fail("bleu_beam_size", beam, "must be a positive integer (1: greedy)")
    if config.corrupt_checkpoint not in CORRUPT_CHECKPOINT:
        _fail(
            "corrupt_checkpoint", config.corrupt_checkpoint, f"must be one of {CORRUPT_CHECKPOINT}"
        )
    stale = config.get("lock_stale_seconds", 3600.0)
    if not _is_number(stale) or stale <= 0:
        _fail("lock_stale_seconds", stale, "must be a number of seconds > 0")
    parallelism = config.get("parallelism", "pmap")
    if parallelism not in PARALLELISM:
        _fail("parallelism", parallelism, f"must be one of {PARALLELISM}")
    if parallelism == "mesh":
        import jax

        from transformer_jax.train.sharding import mesh_shape

        mesh = config.mesh
        mesh_shape(mesh.data, mesh.fsdp, mesh.tensor, jax.device_count())
    if config.get("remat", "none") not in REMATS:
        _fail("remat", config.remat, f"must be one of {REMATS}")
    if not isinstance(config.get("scan_layers", False), bool):
        _fail("scan_layers", config.scan_layers, "must be True or False")
    if config.peak_flops is not None and (
        not _is_number(config.peak_flops) or config.peak_flops <= 0
    ):
        _fail("peak_flops", config.peak_flops, "must be a FLOP/s number > 0, or None")


def model_config(
    config: ml_collections.ConfigDict,
    vocab_size: int,
    base: ModelConfig | None = None,
    *,
    own_sentinels: bool = False,
) -> ModelConfig:
    """The preset (or `base`, a checkpoint's config for init_from runs) with overrides, the
    tokenizer's vocabulary and the run's dtype; checked against the objective and max_length.
    `own_sentinels`: the tokenizer holds span corruption's sentinels (an HF T5 tokenizer's
    `<extra_id_k>`), so the model needs no ids after its vocabulary."""
    overrides = dict(config.model_overrides.to_dict()) if config.model_overrides else {}
    from transformer_jax.data.objectives import NUM_SENTINELS  # (data imports TFDS: lazily)

    needed = vocab_size  # the tokenizer's ids, then span corruption's sentinels after them
    if config.objective == "span_corruption" and not own_sentinels:
        needed += NUM_SENTINELS
    if base is None:
        overrides.setdefault("vocab_size", needed)
    overrides.setdefault("dtype", config.dtype)
    overrides.setdefault("scan_layers", config.get("scan_layers", False))
    overrides.setdefault("remat", config.get("remat", "none"))
    name = config.model if base is None else config.init_from
    try:
        model_cfg = (
            presets.get(config.model, **overrides) if base is None else base.override(overrides)
        )
    except (ValueError, TypeError) as e:
        raise ValueError(f"config.model={name!r} with model_overrides={overrides}: {e}") from None
    if model_cfg.vocab_size < needed:
        sentinels = f" + {NUM_SENTINELS} span-corruption sentinels" if needed > vocab_size else ""
        _fail(
            "model_overrides.vocab_size",
            model_cfg.vocab_size,
            f"is smaller than the tokenizer's vocabulary ({vocab_size}{sentinels})",
        )
    allowed = ARCH_OBJECTIVES[model_cfg.arch]
    if config.objective not in allowed:
        _fail(
            "objective",
            config.objective,
            f"model {name!r} is {model_cfg.arch}; use one of {allowed}",
        )
    if config.objective == "mlm_nsp" and model_cfg.heads.num_labels != 2:
        _fail(
            "objective", "mlm_nsp", "needs a 2-way classifier: model_overrides.heads.num_labels=2"
        )
    if config.get("parallelism", "pmap") == "mesh":
        import jax

        from transformer_jax.train.sharding import check_model, mesh_shape

        mesh = config.mesh
        data, fsdp, tensor = mesh_shape(mesh.data, mesh.fsdp, mesh.tensor, jax.device_count())
        check_model(model_cfg, tensor)
        for field in ("per_device_batch_size", "eval_batch_size"):
            rows = config[field] * jax.device_count()
            if rows % (data * fsdp):
                _fail(
                    field,
                    config[field],
                    f"x {jax.device_count()} devices = {rows} rows "
                    f"does not split over data x fsdp = {data * fsdp}",
                )
    if config.max_length > model_cfg.max_len:
        _fail(
            "max_length",
            config.max_length,
            f"exceeds the model's position limit max_len={model_cfg.max_len}; lower it or "
            "set model_overrides.max_len",
        )
    return model_cfg
