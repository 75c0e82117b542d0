"""Checkpoint files: config.json and safetensors (one file or shards with an index), read one
tensor at a time with clear errors for what is missing, pickled or corrupt."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import ml_dtypes  # noqa: F401 - registers bfloat16 / float8 with NumPy
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def read_json(path: str, what: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            value = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: {what} is not valid JSON ({e}).") from e
    if not isinstance(value, dict):
        raise ValueError(f"{path}: {what} must hold a JSON object, not {type(value).__name__}.")
    return value


def read_config(directory: str) -> dict[str, Any]:
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"No checkpoint directory {directory!r}.")
    path = os.path.join(directory, CONFIG)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{directory!r} has no {CONFIG}: a Hugging Face checkpoint directory holds "
            f"{CONFIG} and {SINGLE} (or {INDEX} with its shards)."
        )
    return read_json(path, CONFIG)


def _weight_files(directory: str) -> dict[str, str]:
    """Tensor name -> file path, from the index or the single file's header."""
    index = os.path.join(directory, INDEX)
    if os.path.isfile(index):
        weight_map = read_json(index, INDEX).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: has no 'weight_map' object naming each tensor's shard.")
        return {name: os.path.join(directory, shard) for name, shard in weight_map.items()}
    single = os.path.join(directory, SINGLE)
    if os.path.isfile(single):
        return {name: single for name in _open(single).keys()}
    pickled = [f for f in PICKLED if os.path.isfile(os.path.join(directory, f))]
    if pickled:
        raise ValueError(
            f"{directory!r} holds only pickled PyTorch weights ({pickled[0]}); pickles are not "
            "loaded (they can run code). Convert them once with transformers: "
            "`AutoModel...from_pretrained(dir).save_pretrained(out, safe_serialization=True)`, "
            f"which writes {SINGLE}."
        )
    raise FileNotFoundError(f"{directory!r} has no {SINGLE} and no {INDEX}.")


def _open(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Missing safetensors file {path!r} (named by the index).")
    try:
        return safe_open(path, framework="numpy")
    except Exception as e:  # safetensors raises its own SafetensorError
        raise ValueError(
            f"{path}: cannot read this safetensors file ({e}); it is truncated or corrupt: "
            "download or convert it again."
        ) from e


class TensorReader:
    """Reads tensors by name, one at a time, from the checkpoint's safetensors file(s); the
    open handles serve names and shapes (headers only)."""

    def __init__(self, directory: str, handles: dict[str, Any], files: dict[str, str]):
        self.directory = directory
        self._handles = handles
        self.files = files  # name -> path
        self._stored = {name: name for name in files}  # name -> its name in the file
        self._headers: dict[str, tuple[int, dict]] = {}  # path -> (data start, header)

    def rename(self, rules: tuple[tuple[str, str], ...]) -> None:
        """Reads older spellings under today's names (regex, replacement), e.g. BERT's
        `LayerNorm.gamma` -> `LayerNorm.weight`."""
        if not rules:
            return
        files, stored = {}, {}
        for name, path in self.files.items():
            new = name
            for pattern, replacement in rules:
                new = re.sub(pattern, replacement, new)
            if new in files:
                raise ValueError(f"{path}: both {stored[new]!r} and {name!r} hold {new!r}.")
            files[new], stored[new] = path, self._stored[name]
        self.files, self._stored = files, stored

    def names(self) -> set[str]:
        return set(self.files)

    def shape(self, name: str) -> tuple[int, ...]:
        handle = self._handles[self.files[name]]
        return tuple(handle.get_slice(self._stored[name]).get_shape())

    def get(self, name: str) -> np.ndarray:
        """A copy of one tensor. The file is mapped just for this read: the pages of a mapping
        count as the process's memory until it closes, so a long-lived one would double the
        peak (params + the whole file); this way the peak is params + one tensor."""
        path = self.files[name]
        try:
            with safe_open(path, framework="numpy") as f:
                return f.get_tensor(self._stored[name])
        except Exception as e:
            raise ValueError(f"{path}: cannot read tensor {name!r} ({e}).") from e

    def get_mapped(self, name: str) -> np.ndarray:
        """One tensor as a read-only view of its bytes in the memory-mapped file: nothing is
        read until it is indexed, and then only the pages of the part indexed (a process
        placing its shards of a large model reads only those)."""
        path = self.files[name]
        try:
            if path not in self._headers:
                with open(path, "rb") as f:
                    size = int.from_bytes(f.read(8), "little")
                    self._headers[path] = (8 + size, json.loads(f.read(size)))
            start, header = self._headers[path]
            info = header[self._stored[name]]
            begin, end = info["data_offsets"]
            dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
            shape = tuple(info["shape"])
        except Exception as e:
            raise ValueError(f"{path}: cannot map tensor {name!r} ({e!r}).") from e
        if end - begin != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
            raise ValueError(
                f"{path}: tensor {name!r} has {end - begin} bytes for shape {list(shape)} "
                f"{dtype}; the file is corrupt: download or convert it again."
            )
        if not shape or end == begin:  # np.memmap maps no empty or 0-d arrays
            return self.get(name)
        return np.memmap(path, dtype, "r", offset=start + begin, shape=shape)


# safetensors dtype names -> NumPy (bfloat16 and float8 through ml_dtypes, as JAX has them)
_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
}  # fmt: skip


@contextmanager
def open_tensors(directory: str) -> Iterator[TensorReader]:
    files = _weight_files(directory)
    with ExitStack() as stack:
        handles = {}
        for path in sorted(set(files.values())):
            handle = stack.enter_context(_open(path))
            present = set(handle.keys())
            listed = {n for n, p in files.items() if p == path}
            if listed - present:
                raise ValueError(
                    f"{path}: the index lists {sorted(listed - present)[:5]} in this shard, "
                    "but the file does not hold them."
                )
            handles[path] = handle
        yield TensorReader(directory, handles, files)


def _shards(tensors: dict[str, np.ndarray], max_bytes: int) -> list[list[str]]:
    """Tensor names in groups of at most `max_bytes` (in the given order, like transformers;
    a tensor larger than the limit gets a shard of its own)."""
    groups: list[list[str]] = [[]]
    size = 0
    for name, value in tensors.items():
        if groups[-1] and size + value.nbytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += value.nbytes
    return groups


def write_checkpoint(
    directory: str,
    config: dict[str, Any],
    generation_config: dict[str, Any] | None,
    tensors: dict[str, np.ndarray],
    max_shard_size: int | None = None,
) -> list[str]:
    """Writes config.json, generation_config.json and the weights: one model.safetensors, or
    shards `model-0000i-of-0000n.safetensors` of at most `max_shard_size` bytes and the index
    transformers reads. Returns the names written."""
    bad = isinstance(max_shard_size, bool) or not isinstance(max_shard_size, int | None)
    if bad or (max_shard_size is not None and max_shard_size < 1):
        raise ValueError(f"max_shard_size={max_shard_size!r} must be a number of bytes >= 1.")
    os.makedirs(directory, exist_ok=True)
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    total = sum(v.nbytes for v in tensors.values())
    groups = _shards(tensors, max_shard_size) if max_shard_size else [list(tensors)]
    written = []
    for stale in [SINGLE, INDEX]:  # an earlier save in another layout must not be read instead
        if os.path.exists(os.path.join(directory, stale)):
            os.remove(os.path.join(directory, stale))
    if len(groups) == 1:
        save_file(tensors, os.path.join(directory, SINGLE), metadata={"format": "pt"})
        written.append(SINGLE)
    else:
        weight_map = {}
        for i, names in enumerate(groups, 1):
            shard = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
            part = {n: tensors[n] for n in names}
            save_file(part, os.path.join(directory, shard), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(names, shard))
            written.append(shard)
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        _write_json(os.path.join(directory, INDEX), index)
        written.append(INDEX)
    _write_json(os.path.join(directory, CONFIG), config)
    written.append(CONFIG)
    if generation_config is not None:
        _write_json(os.path.join(directory, GENERATION_CONFIG), generation_config)
        written.append(GENERATION_CONFIG)
    return written


def _write_json(path: str, value: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")
