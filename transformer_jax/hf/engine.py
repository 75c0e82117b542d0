"""The generic engine: a family's name table applied to a checkpoint, in either direction.

Loading fills the structure of `jax.eval_shape(init_params(config, heads=...))` one tensor at
a time; every tensor in the file must be used (or be a known buffer / tied copy) and every
parameter filled. Saving runs the same rows backwards.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

import jax
import numpy as np

from transformer_jax import models
from transformer_jax.config import ModelConfig
from transformer_jax.hf.files import TensorReader
from transformer_jax.hf.table import Entry, expand

Params = dict[str, Any]


def param_shapes(config: ModelConfig, heads: bool) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Parameter path -> shape, computed without allocating."""
    tree = jax.eval_shape(
        lambda rng: models.init_params(config, rng, heads=heads), jax.random.key(0)
    )
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {tuple(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def entries(family: ModuleType, config: ModelConfig, heads: bool, prefix: str) -> list[Entry]:
    depths = {"layers": config.num_layers, "decoder_layers": config.decoder_layers}
    return expand(family.hf_name_table(config, heads), depths, prefix)


def _set(tree: Params, path: tuple[str, ...], value: np.ndarray) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: Params, path: tuple[str, ...]) -> np.ndarray:
    for key in path:
        tree = tree[key]
    return tree


def _fmt(path: tuple[str, ...]) -> str:
    return "/".join(path)


def read_params(
    family: ModuleType,
    config: ModelConfig,
    heads: bool,
    reader: TensorReader,
    dtype: Any,
    place: Callable[[tuple[str, ...], np.ndarray, Any], Any] | None = None,
) -> Params:
    """Our parameters from `reader`'s tensors: NumPy arrays in `dtype` (None: as stored), or,
    with `place`, whatever `place(path, value, dtype)` makes of each value, which is then a
    lazy view of the memory-mapped file wherever the name table's transform allows (only
    what `place` indexes is read), e.g. a jax.Array built shard by shard."""
    shapes = param_shapes(config, heads)
    reader.rename(getattr(family, "HF_LEGACY_RENAMES", ()))
    names = reader.names()
    prefix = family.HF_PREFIX if heads else ""
    if prefix and not any(n.startswith(prefix) for n in names):
        prefix = ""  # older files name the backbone's tensors without the prefix
    table = entries(family, config, heads, prefix)
    ignored = [re.compile(p) for p in family.HF_IGNORED_TENSORS]
    used: set[str] = set()
    params: Params = {}
    filled: set[tuple[str, ...]] = set()
    where = reader.directory
    # placed mode: the values that tied copies are compared with (lazy views where possible)
    tied = {p for e in table if e.alias and e.hf in names for p in e.ours} if place else set()
    kept: dict[tuple[str, ...], np.ndarray] = {}

    for entry in (e for e in table if not e.alias):
        ours = [shapes.get(p) for p in entry.ours]
        missing_path = [p for p, s in zip(entry.ours, ours, strict=True) if s is None]
        if missing_path:  # a table/model disagreement: a bug, not a bad file
            raise ValueError(
                f"Name table row {entry.hf!r} fills {_fmt(missing_path[0])}, which the model "
                f"for this config does not have."
            )
        if entry.hf not in names:
            raise ValueError(
                f"{where}: tensor {entry.hf!r} (for {', '.join(map(_fmt, entry.ours))}) is "
                f"missing from {_file_hint(reader)}."
            )
        expected = entry.transform.hf_shape(ours)
        _check_shape(reader, entry.hf, expected)
        raw = reader.get(entry.hf) if place is None else reader.get_mapped(entry.hf)
        values = entry.transform.to_ours(raw, ours)
        for path, value in zip(entry.ours, values, strict=True):
            if place is not None:
                if path in tied:
                    kept[path] = value
                _set(params, path, place(path, value, dtype))
                filled.add(path)
                continue
            if dtype is not None:
                value = value.astype(dtype, copy=False)
            value = np.ascontiguousarray(value)
            _set(params, path, value)
            filled.add(path)
        used.add(entry.hf)

    for entry in (e for e in table if e.alias):
        if entry.hf not in names:
            continue
        ours = [shapes[p] for p in entry.ours]
        _check_shape(reader, entry.hf, entry.transform.hf_shape(ours))
        mine = entry.transform.to_hf([kept[p] if place else _get(params, p) for p in entry.ours])
        theirs = reader.get(entry.hf)
        if not np.array_equal(np.asarray(mine, theirs.dtype), theirs):
            raise ValueError(
                f"{reader.files[entry.hf]}: tensor {entry.hf!r} should be a tied copy of "
                f"{', '.join(map(_fmt, entry.ours))} but holds different values; an untied "
                "head is not supported for this family."
            )
        used.add(entry.hf)

    leftover = sorted(n for n in names - used if not any(p.search(n) for p in ignored))
    if leftover:
        raise ValueError(
            f"{where}: {len(leftover)} tensor(s) of {_file_hint(reader)} are not used by a "
            f"{family.HF_MODEL_TYPE} model with this config: {leftover[:8]}"
            + (" ..." if len(leftover) > 8 else "")
            + f" (e.g. {leftover[0]!r} in {reader.files[leftover[0]]}, "
            f"shape {list(reader.shape(leftover[0]))})."
        )
    unfilled = sorted(set(shapes) - filled)
    if unfilled:
        raise ValueError(
            f"The {family.HF_MODEL_TYPE} name table leaves parameters unfilled: "
            f"{[_fmt(p) for p in unfilled[:8]]}."
        )
    return params


def _file_hint(reader: TensorReader) -> str:
    files = sorted(set(reader.files.values()))
    return files[0] if len(files) == 1 else f"the {len(files)} shards in {reader.directory}"


def _check_shape(reader: TensorReader, name: str, expected: tuple[int, ...]) -> None:
    got = reader.shape(name)
    if tuple(got) != tuple(expected):
        raise ValueError(
            f"{reader.files[name]}: tensor {name!r} has shape {list(got)}; the config "
            f"(config.json) implies {list(expected)}."
        )


def write_params(
    family: ModuleType, config: ModelConfig, heads: bool, params: Params, dtype: Any
) -> dict[str, np.ndarray]:
    """HF tensor name -> array, for every non-alias row (tied copies are not written)."""
    shapes = param_shapes(config, heads)
    flat = {
        tuple(k.key for k in path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    if set(flat) != set(shapes):
        extra, missing = sorted(set(flat) - set(shapes)), sorted(set(shapes) - set(flat))
        raise ValueError(
            f"The parameters do not match the config's model (heads={heads}): "
            f"unexpected {[_fmt(p) for p in extra[:5]]}, missing {[_fmt(p) for p in missing[:5]]}."
        )
    for path, shape in shapes.items():
        if tuple(np.shape(flat[path])) != shape:
            raise ValueError(
                f"Parameter {_fmt(path)} has shape {list(np.shape(flat[path]))}; the config "
                f"implies {list(shape)}."
            )
    tensors = {}
    prefix = family.HF_PREFIX if heads else ""
    for entry in entries(family, config, heads, prefix):
        if entry.alias:
            continue
        values = [np.asarray(flat[p]) for p in entry.ours]
        if dtype is not None:
            values = [v.astype(dtype) for v in values]
        tensors[entry.hf] = entry.transform.to_hf(values)
    return tensors
