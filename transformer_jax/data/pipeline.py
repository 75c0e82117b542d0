"""`make_datasets`: config -> (train BatchSource, eval BatchSource, Tokenizer).

Steps: validate the config (before any work) -> build/locate the TFDS dataset -> train or
reuse `WORKDIR/tokenizer.model` on the train split -> tokenize + pack each split once into
int32 arrays cached as `.npy` under `WORKDIR/data_cache/<key>/` (key = hash of dataset
identity, tokenizer, max_length, objective) -> memory-map them. Objectives that draw random
corruption (MLM, NSP, denoising, span corruption) store the clean rows and corrupt them per
(seed, step, row). Span corruption's sentinels are the tokenizer's own `<extra_id_k>` (an HF
T5 tokenizer's), else the 100 ids after its vocabulary (the model's vocabulary is then that
much larger, run_config.model_config).

Text edge cases: files are decoded as UTF-8 with invalid bytes replaced by U+FFFD; empty
documents are skipped (a split of only empty files is "empty": ValueError); lines of any
length are encoded in full (long documents are split into rows of max_length); see
`tokenizer.py` for the rest.

Config fields read (others are ignored):
  dataset ('stdlib' if absent), data_dir, objective, vocab_size, max_length, per_device_batch_size,
  eval_batch_size, seed, num_eval_batches, mlm_probability (0.15), denoise_ratio (0.3),
  poisson_lambda (3.0), noise_density (0.15), mean_noise_span_length (3.0), plm_k (6); for
  'text_files': train_files, eval_files (None or "": hold out part of train_files,
  `builders.text_files_splits`); for 'parallel_text': train_source, train_target,
  eval_source, eval_target; optional: validation_fraction (0.03), reverse_translation
  (False), tokenizer_max_sentences (100_000), max_train_examples (None = all).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator

import numpy as np

from transformer_jax.data import builders, objectives, packing, sources
from transformer_jax.data import tokenizer as tok_lib
from transformer_jax.data.sources import BatchSource, unigram_entropy

__all__ = [
    "OBJECTIVES",
    "LOCAL_DATASETS",
    "make_datasets",
    "read_pairs",
    "unigram_entropy",
    "validate_config",
]

log = logging.getLogger(__name__)

OBJECTIVES = ("clm", "mlm", "mlm_nsp", "denoise", "span_corruption", "seq2seq", "plm")
LOCAL_DATASETS = ("stdlib", "text_files", "parallel_text")
MIN_MAX_LENGTH = 8
_CACHE_FORMAT = 2  # 2: empty documents are skipped (they used to give an EOS-only row)
_ENCODE_BATCH = 256


# ----------------------------------------------------------------------------- validation


def _get(config, name: str, default=None):
    return config.get(name, default) if hasattr(config, "get") else getattr(config, name, default)


def _check_int(name: str, value, low: int, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"config.{name}={value!r} must be an integer >= {low}{hint}")


def validate_config(config) -> None:
    """ValueError naming the field and its allowed values for any bad data field."""
    objective = _get(config, "objective")
    if objective not in OBJECTIVES:
        raise ValueError(f"config.objective={objective!r} is unknown; use one of {OBJECTIVES}")
    dataset = _get(config, "dataset", "stdlib")
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(
            f"config.dataset={dataset!r}; use one of {LOCAL_DATASETS} or a TFDS catalog "
            f"name such as {sorted(builders.CATALOG)} or 'wmt14_translate/de-en'"
        )
    if dataset == "parallel_text":
        parallel = True
        for field in ("train_source", "train_target", "eval_source", "eval_target"):
            if not _get(config, field):
                raise ValueError(f"dataset 'parallel_text' needs config.{field} (a file path)")
    elif dataset in LOCAL_DATASETS:
        parallel = False
        if dataset == "text_files" and not _get(config, "train_files"):
            raise ValueError("dataset 'text_files' needs config.train_files (a glob)")
    else:
        try:
            spec = builders.catalog_spec(dataset, bool(_get(config, "reverse_translation")))
        except ValueError as e:
            raise ValueError(
                f"config.dataset={dataset!r} is unknown; use one of {LOCAL_DATASETS} or a "
                f"TFDS catalog name with known text features ({e})"
            ) from None
        parallel = spec.is_parallel
    if (objective == "seq2seq") != parallel:
        need = "a parallel dataset" if objective == "seq2seq" else "a text (non-parallel) dataset"
        raise ValueError(f"config.objective={objective!r} needs {need}; got dataset={dataset!r}")
    if _get(config, "init_from") is None:  # else the checkpoint's tokenizer is used
        tok_lib.check_vocab_size(_get(config, "vocab_size"))
    _check_int("max_length", _get(config, "max_length"), MIN_MAX_LENGTH)
    _check_int("per_device_batch_size", _get(config, "per_device_batch_size"), 1)
    _check_int("eval_batch_size", _get(config, "eval_batch_size"), 1, " (per device)")
    _check_int("seed", _get(config, "seed"), 0)
    num_eval = _get(config, "num_eval_batches")
    if num_eval is not None:
        _check_int("num_eval_batches", num_eval, 1, ", or None for the whole eval split")
    max_train = _get(config, "max_train_examples")
    if max_train is not None:
        _check_int("max_train_examples", max_train, 1, ", or None for all")
    for name, default, low, high in (
        ("mlm_probability", 0.15, 0.0, 1.0),
        ("denoise_ratio", 0.3, 0.0, 1.0),
        ("validation_fraction", 0.03, 0.0, 1.0),
        ("noise_density", 0.15, 0.0, 1.0),
    ):
        value = _get(config, name, default)
        if not isinstance(value, float | int) or not low < value < high:
            raise ValueError(f"config.{name}={value!r} must be in ({low}, {high})")
    span = _get(config, "mean_noise_span_length", 3.0)
    if not isinstance(span, float | int) or span < 1:
        raise ValueError(f"config.mean_noise_span_length={span!r} must be >= 1")
    lam = _get(config, "poisson_lambda", 3.0)
    if not isinstance(lam, float | int) or lam <= 0:
        raise ValueError(f"config.poisson_lambda={lam!r} must be > 0")
    _check_int("plm_k", _get(config, "plm_k", 6), 1, " (plm: predict the last 1/K of each order)")


# ----------------------------------------------------------------------------- datasets


@dataclasses.dataclass(frozen=True)
class _Dataset:
    name: str
    builder: object  # tfds.core.DatasetBuilder, prepared
    train_split: str
    eval_split: str
    keys: tuple[str, ...]  # (text,) or (source, target)
    identity: str


def _resolve_dataset(config, workdir: str) -> _Dataset:
    name = _get(config, "dataset", "stdlib")
    data_dir = _get(config, "data_dir")
    local_dir = data_dir or os.path.join(workdir, "tfds")
    fraction = _get(config, "validation_fraction", 0.03)
    if name == "stdlib":
        builder = builders.stdlib_builder(local_dir, fraction)
    elif name == "text_files":
        splits = builders.text_files_splits(
            config.train_files, _get(config, "eval_files"), fraction
        )
        builder = builders.text_files_builder(splits, local_dir)
    elif name == "parallel_text":
        splits = {
            "train": (config.train_source, config.train_target),
            "validation": (config.eval_source, config.eval_target),
        }
        builder = builders.parallel_text_builder(splits, local_dir)
    else:
        spec = builders.catalog_spec(name, bool(_get(config, "reverse_translation")))
        builder = builders.catalog_builder(name, data_dir)
        keys = (spec.source_key, spec.target_key) if spec.is_parallel else (spec.text_key,)
        identity = f"{name}:{builder.version}:{builder.data_dir}:{keys}"
        ds = _Dataset(name, builder, spec.train_split, spec.eval_split, keys, identity)
        _check_not_empty(ds)
        return ds
    builders.prepare(builder)
    keys = ("source", "target") if name == "parallel_text" else ("text",)
    identity = f"{builder.name}:{builder.builder_config.name}:{builder.version}"
    ds = _Dataset(name, builder, "train", "validation", keys, identity)
    _check_not_empty(ds)
    return ds


def _check_not_empty(ds: _Dataset) -> None:
    splits = ds.builder.info.splits
    for split in (ds.train_split, ds.eval_split):
        if split not in splits or splits[split].num_examples == 0:
            raise ValueError(f"split {split!r} of dataset {ds.name!r} is empty")


def _read(ds: _Dataset, split: str, limit: int | None = None) -> Iterator[tuple[str, ...]]:
    """Examples of `split` as tuples of str (`ds.keys` order), in the stored order."""
    builders.hide_gpus_from_tensorflow()
    data = ds.builder.as_dataset(split=split, shuffle_files=False)
    if limit is not None:
        data = data.take(limit)
    keys = ds.keys
    data = data.map(lambda ex: tuple(ex[k] for k in keys)).batch(_ENCODE_BATCH).prefetch(2)
    for batch in data.as_numpy_iterator():
        for fields in zip(*batch, strict=True):
            yield tuple(f.decode("utf-8", errors="replace") for f in fields)


def _tokenizer_texts(ds: _Dataset, limit: int | None) -> Iterator[str]:
    for fields in _read(ds, ds.train_split, limit):
        yield from fields  # both sides of parallel data: one shared vocabulary


def read_pairs(config, workdir: str, split: str = "eval", limit: int | None = None):
    """The first `limit` (source, target) text pairs of a parallel dataset's train or eval
    split, in the stored order (what BLEU is computed on). ValueError for a dataset of plain
    text (it has no targets)."""
    if split not in ("train", "eval"):
        raise ValueError(f"split={split!r}: choose 'train' or 'eval'.")
    ds = _resolve_dataset(config, workdir)
    if len(ds.keys) != 2:
        raise ValueError(
            f"dataset {ds.name!r} has no (source, target) pairs: BLEU needs parallel text "
            "(dataset='parallel_text' or a translation catalog set)."
        )
    name = ds.eval_split if split == "eval" else ds.train_split
    return [(s, t) for s, t in _read(ds, name, limit)]


# ----------------------------------------------------------------------------- stores


def _encoded(ds: _Dataset, split: str, tok: tok_lib.Tokenizer, limit: int | None):
    """Yields encoded examples (tuples of id lists), encoding `_ENCODE_BATCH` at a time. A
    parallel set's target column goes through the tokenizer's target model when it has one
    (Marian's target.spm: `encode_target`)."""
    buffer: list[tuple[str, ...]] = []
    encode_target = getattr(tok, "encode_target", None)

    def encode(column: int, texts: list[str]) -> list[list[int]]:
        if column == 1 and encode_target is not None:  # (source, target): the target side
            return [encode_target(t) for t in texts]
        return tok.encode_batch(texts)

    def flush():
        columns = [encode(i, [b[i] for b in buffer]) for i in range(len(ds.keys))]
        buffer.clear()
        return zip(*columns, strict=True)

    for fields in _read(ds, split, limit):
        buffer.append(fields)
        if len(buffer) == _ENCODE_BATCH:
            yield from flush()
    if buffer:
        yield from flush()


def _build_store(
    ds: _Dataset,
    split: str,
    tok: tok_lib.Tokenizer,
    objective: str,
    max_length: int,
    limit: int | None,
) -> dict[str, np.ndarray]:
    ids = objectives.SpecialIds.from_tokenizer(tok)
    examples = _encoded(ds, split, tok, limit)
    if objective == "seq2seq":
        pairs = (objectives.seq2seq_example(s, t, max_length, ids) for s, t in examples)
        return packing.pack_pairs(pairs, max_length)
    if objective == "mlm_nsp":
        flat, chunks, chunk_docs, offset = [], [], [], 0
        for doc_index, (doc,) in enumerate(examples):
            doc = np.asarray(doc, np.int32)
            for start, end in objectives.line_chunks(doc, (max_length - 3) // 2, ids.newline):
                chunks.append((offset + start, offset + end))
                chunk_docs.append(doc_index)
            flat.append(doc)
            offset += len(doc)
        return {
            "stream": np.concatenate(flat) if flat else np.zeros(0, np.int32),
            "chunks": np.asarray(chunks, np.int64).reshape(-1, 2),  # [C, 2] (start, end)
            "chunk_docs": np.asarray(chunk_docs, np.int32),  # [C]
        }
    make = {
        "clm": objectives.clm_examples,
        "plm": objectives.clm_examples,  # `chunk EOS`: orders and targets are drawn per step
        "mlm": objectives.mlm_examples,
        "denoise": objectives.denoise_examples,
        "span_corruption": objectives.denoise_examples,  # `chunk EOS`, corrupted per step
    }[objective]
    packer = packing.Packer(max_length)
    for (doc,) in examples:
        if not doc:  # an empty file: nothing to learn (and a split of them stays empty)
            continue
        for example in make(doc, max_length, ids):
            packer.add(example)
    return packer.finish()[0]


def _cache_dir(workdir: str, ds: _Dataset, tok: tok_lib.Tokenizer, config) -> tuple[str, dict]:
    key = {
        "format": _CACHE_FORMAT,
        "dataset": ds.identity,
        "splits": [ds.train_split, ds.eval_split],
        "tokenizer": tok.digest,
        "max_length": int(config.max_length),
        "objective": config.objective,
        "max_train_examples": _get(config, "max_train_examples"),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(workdir, "data_cache", digest), key


def _load_or_build_stores(workdir: str, ds: _Dataset, tok: tok_lib.Tokenizer, config):
    cache, key = _cache_dir(workdir, ds, tok, config)
    if not os.path.exists(os.path.join(cache, "meta.json")):
        log.info("Tokenizing and packing %s into %s", ds.name, cache)
        tmp = f"{cache}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        meta = {"key": key, "arrays": {}}
        for prefix, split, limit in (
            ("train", ds.train_split, _get(config, "max_train_examples")),
            ("eval", ds.eval_split, None),
        ):
            store = _build_store(ds, split, tok, config.objective, config.max_length, limit)
            for name, array in store.items():
                np.save(os.path.join(tmp, f"{prefix}.{name}.npy"), array)
            meta["arrays"][prefix] = {k: list(v.shape) for k, v in store.items()}
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        try:
            os.rename(tmp, cache)  # atomic publish; another process may have won the race
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    with open(os.path.join(cache, "meta.json")) as f:
        meta = json.load(f)
    return tuple(
        {
            name: np.load(os.path.join(cache, f"{prefix}.{name}.npy"), mmap_mode="r")
            for name in meta["arrays"][prefix]
        }
        for prefix in ("train", "eval")
    )


# ----------------------------------------------------------------------------- sources


def _num_items(store: dict[str, np.ndarray], objective: str) -> int:
    if objective == "mlm_nsp":
        return int(len(_nsp_anchors(store)))
    first = "inputs" if objective == "seq2seq" else "tokens"
    return int(store[first].shape[0])


def _nsp_anchors(store: dict[str, np.ndarray]) -> np.ndarray:
    docs = np.asarray(store["chunk_docs"])
    return np.flatnonzero(docs[:-1] == docs[1:])  # chunks with a next chunk in the same doc


def _make_rows(store, objective: str, ids: objectives.SpecialIds, config, stream: int):
    seed, max_length = int(config.seed), int(config.max_length)
    mlm_p = float(_get(config, "mlm_probability", 0.15))
    ratio = float(_get(config, "denoise_ratio", 0.3))
    lam = float(_get(config, "poisson_lambda", 3.0))
    density = float(_get(config, "noise_density", 0.15))
    span = float(_get(config, "mean_noise_span_length", 3.0))
    plm_k = int(_get(config, "plm_k", 6))
    if objective == "mlm_nsp":
        anchors = _nsp_anchors(store)
        nsp_store = {k: np.asarray(v) for k, v in store.items()}
        return lambda items, step, rows: objectives.nsp_batch(
            nsp_store, anchors[items], ids, max_length, seed, step, rows, mlm_p, stream
        )
    take = lambda items: sources.take_rows(store, items)  # noqa: E731
    return {
        "clm": lambda items, step, rows: objectives.clm_batch(take(items), ids),
        "seq2seq": lambda items, step, rows: objectives.seq2seq_batch(take(items), ids),
        "plm": lambda items, step, rows: objectives.plm_batch(
            take(items), seed, step, rows, plm_k, stream
        ),
        "mlm": lambda items, step, rows: objectives.mlm_batch(
            take(items), ids, seed, step, rows, mlm_p, stream
        ),
        "denoise": lambda items, step, rows: objectives.denoise_batch(
            take(items), ids, seed, step, rows, ratio, lam, stream
        ),
        "span_corruption": lambda items, step, rows: objectives.span_corruption_batch(
            take(items), ids, seed, step, rows, density, span, stream
        ),
    }[objective]


def _target_counts(store, objective: str, ids: objectives.SpecialIds):
    def counts(vocab_size: int) -> np.ndarray:
        if objective == "mlm_nsp":
            flat = np.asarray(store["stream"])
            return sources.counts_of(flat, ~ids.is_special(flat), vocab_size)
        if objective == "seq2seq":
            tokens, keep = store["targets"], np.asarray(store["targets_segment_ids"]) > 0
        else:
            tokens, keep = store["tokens"], np.asarray(store["segment_ids"]) > 0
        tokens = np.asarray(tokens)
        if objective == "mlm":  # only non-special tokens are ever MLM targets
            keep = keep & ~ids.is_special(tokens)
        return sources.counts_of(tokens, keep, vocab_size)

    return counts


def make_datasets(
    config,
    workdir: str,
    *,
    process_index: int = 0,
    process_count: int = 1,
    num_devices: int | None = None,
    num_local_devices: int | None = None,
    tokenizer=None,
) -> tuple[BatchSource, BatchSource, tok_lib.Tokenizer]:
    """Train and eval `BatchSource`s for this process, and the tokenizer: `tokenizer` (any
    TextTokenizer, e.g. a checkpoint's own) if given, else WORKDIR/tokenizer.model (trained
    on the train split if absent).

    Global batch = per_device_batch_size * num_devices (default `jax.device_count()`); this
    process gets rows [process_index * local, (process_index + 1) * local) of every global
    batch, local = per_device_batch_size * num_local_devices (default
    `jax.local_device_count()`). Eval batches likewise with eval_batch_size.
    """
    validate_config(config)
    if num_devices is None or num_local_devices is None:
        import jax

        num_devices = jax.device_count() if num_devices is None else num_devices
        num_local_devices = (
            jax.local_device_count() if num_local_devices is None else num_local_devices
        )
    _check_int("process_count", process_count, 1)
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must be in [0, {process_count})")
    if num_local_devices < 1 or num_local_devices * process_count != num_devices:
        raise ValueError(
            f"num_local_devices={num_local_devices} * process_count={process_count} must "
            f"equal num_devices={num_devices}"
        )
    os.makedirs(workdir, exist_ok=True)

    ds = _resolve_dataset(config, workdir)
    max_sentences = int(_get(config, "tokenizer_max_sentences", 100_000))
    tok = tokenizer or tok_lib.get_or_train_tokenizer(
        workdir,
        lambda: _tokenizer_texts(ds, limit=None),
        int(config.vocab_size),
        max_sentences=max_sentences,
        seed=int(config.seed),
    )
    ids = objectives.SpecialIds.from_tokenizer(tok)
    if config.objective == "span_corruption" and not ids.sentinels:  # none of its own
        ids = dataclasses.replace(ids, sentinels=objectives.after_vocab_sentinels(tok.vocab_size))
    missing = ids.missing(config.objective)
    if missing:
        raise ValueError(
            f"config.objective={config.objective!r} needs the {' and '.join(missing)} token(s), "
            "which the tokenizer does not have; choose an objective this model was made for."
        )
    train_store, eval_store = _load_or_build_stores(workdir, ds, tok, config)
    objective = config.objective
    result = []
    for split, store, stream, per_device in (
        (ds.train_split, train_store, objectives.TRAIN_STREAM, config.per_device_batch_size),
        (ds.eval_split, eval_store, objectives.EVAL_STREAM, config.eval_batch_size),
    ):
        n = _num_items(store, objective)
        if n == 0:
            detail = (
                " (NSP needs documents longer than one segment, and at least two documents)"
                if objective == "mlm_nsp"
                else " (no tokens after tokenization)"
            )
            raise ValueError(f"split {split!r} of dataset {ds.name!r} is empty{detail}")
        if objective == "mlm_nsp" and len(np.unique(store["chunk_docs"])) < 2:
            raise ValueError(
                f"split {split!r} of dataset {ds.name!r} has one document; NSP needs >= 2"
            )
        train = stream == objectives.TRAIN_STREAM
        global_batch = int(per_device) * num_devices
        if train and n < global_batch:
            raise ValueError(
                f"split {split!r} of dataset {ds.name!r} is too small for one batch: it holds "
                f"{n} row(s) of up to max_length={config.max_length} tokens, but a batch takes "
                f"{global_batch} (per_device_batch_size={per_device} x {num_devices} "
                "device(s)); add text, or lower per_device_batch_size or max_length"
            )
        result.append(
            BatchSource(
                n,
                _make_rows(store, objective, ids, config, stream),
                global_batch_size=global_batch,
                process_index=process_index,
                process_count=process_count,
                seed=int(config.seed),
                train=train,
                num_eval_batches=None if train else _get(config, "num_eval_batches"),
                target_counts=_target_counts(store, objective, ids),
            )
        )
        log.info("%s split %r: %d items", ds.name, split, n)
    return result[0], result[1], tok
