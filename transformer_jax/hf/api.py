"""`load` and `save`: Hugging Face checkpoint directories <-> (ModelConfig, params)."""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import jax
import numpy as np

from transformer_jax import models
from transformer_jax.config import ModelConfig
from transformer_jax.families import HF_FAMILIES
from transformer_jax.hf import engine, files, own_format
from transformer_jax.text_tokenizer import TextTokenizer

_GENERATION_KEYS = (
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
    "forced_eos_token_id",
    "bad_words_ids",  # Marian: [[pad]], as opus-mt ships it (hf.generation_defaults)
)


FORMATS = ("hf", "own", "auto")


class NotExpressible(ValueError):
    """No Hugging Face class expresses a ModelConfig (hf.save format='hf')."""


def family_of(hf_config: dict[str, Any], where: str) -> ModuleType:
    model_type = hf_config.get("model_type")
    if model_type not in HF_FAMILIES:
        raise ValueError(
            f"{where}: model_type={model_type!r} is not supported; transformer_jax reads "
            f"{sorted(HF_FAMILIES)}."
        )
    return HF_FAMILIES[model_type]


def _architecture(family: ModuleType, hf_config: dict[str, Any], where: str) -> str:
    archs = hf_config.get("architectures") or [next(iter(family.HF_ARCHITECTURES))]
    if len(archs) != 1 or archs[0] not in family.HF_ARCHITECTURES:
        raise ValueError(
            f"{where}: architectures={archs!r} is not supported for model_type "
            f"{family.HF_MODEL_TYPE!r}; supported: {list(family.HF_ARCHITECTURES)}."
        )
    return archs[0]


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_memory(
    config: ModelConfig, heads: bool, dtype: Any, where: str, available: int | None = None
) -> None:
    """ValueError before anything is allocated when the parameters of `config` (counted with
    jax.eval_shape) need more bytes than the memory available (`available`, default:
    available_memory()); `dtype` None (the stored dtypes) counts 2 bytes a value."""
    shapes = engine.param_shapes(config, heads)
    count = sum(int(np.prod(s, dtype=object)) for s in shapes.values())
    itemsize = 2 if dtype is None else np.dtype(dtype).itemsize
    needed = count * itemsize
    available = available_memory() if available is None else available
    if available is not None and needed > available:
        raise ValueError(
            f"{where}: the model has {count:,} parameters ({needed / 2**30:,.1f} GiB at "
            f"{itemsize} bytes each) but this machine has {available / 2**30:,.1f} GiB of "
            "memory available; check the sizes in config.json (hidden size, layers, vocabulary) "
            "or load it on a machine with more memory."
        )


def _placer(config: ModelConfig, heads: bool, mesh: Any) -> Callable:
    """place(path, value, dtype) -> a jax.Array in the parameter's sharding on `mesh`
    (`sharding.RULES`), built from the slices of `value` that this process's devices hold."""
    from transformer_jax.train import sharding

    shardings = {
        tuple(str(k.key) for k in path): s
        for path, s in jax.tree_util.tree_flatten_with_path(
            sharding.param_shardings(config, mesh, heads=heads)
        )[0]
    }

    def place(path: tuple[str, ...], value: np.ndarray, dtype: Any) -> jax.Array:
        def shard(index: tuple[slice, ...]) -> np.ndarray:
            part = np.asarray(value[index])  # [shard shape]: only these bytes are read
            return np.ascontiguousarray(part if dtype is None else part.astype(dtype))

        return jax.make_array_from_callback(value.shape, shardings[path], shard)

    return place


def _place_all(config: ModelConfig, params: Any, mesh: Any) -> Any:
    """A host tree of parameters -> jax.Arrays in their shardings on `mesh`."""
    place = _placer(config, _has_heads(config, params), mesh)
    return jax.tree_util.tree_map_with_path(
        lambda path, x: place(tuple(str(k.key) for k in path), x, None), params
    )


def load(
    directory: str, dtype: Any = np.float32, *, mesh: Any = None
) -> tuple[ModelConfig, dict[str, Any]]:
    """(ModelConfig, params) from a Hugging Face directory (config.json + safetensors).

    Params are a nested dict of NumPy arrays in the structure of
    `models.init_params(config, rng, heads=...)` with one entry per layer (for a scanned
    model: `models.stack_layers(params)`, `config.replace(scan_layers=True)`; `save` takes
    either layout): the full model for a class with heads
    (GPT2LMHeadModel, BertForMaskedLM, BertForPreTraining, BartForConditionalGeneration), the
    backbone (`heads=False`) for BertModel / GPT2Model / BartModel.
    `dtype`: float32 by default; None keeps the stored dtype (bf16, fp16); any other casts.
    A directory in this library's own format (own_format.py) reads back as it was saved.

    `mesh` (a `jax.sharding.Mesh` with axes data/fsdp/tensor, `sharding.make_mesh`): each
    parameter becomes a jax.Array in its sharding by `sharding.RULES` (per-layer layout),
    built with `jax.make_array_from_callback` from the memory-mapped safetensors file, so a
    process reads only the slices its devices hold and no host holds the whole model (a
    transform that reorders a tensor, e.g. a fused qkv split, copies that one tensor).
    """
    hf_config = files.read_config(directory)
    where = f"{directory}/{files.CONFIG}"
    if hf_config.get("model_type") == own_format.MODEL_TYPE:
        config, params = own_format.load(directory, hf_config, dtype)
        if mesh is None:
            return config, params
        return config, _place_all(config, params, mesh)  # (read whole, then placed)
    family = family_of(hf_config, where)
    heads = family.HF_ARCHITECTURES[_architecture(family, hf_config, where)]
    try:
        config = family.from_hf_config(hf_config)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e
    if mesh is None:  # placed on a mesh, the host holds one tensor at a time
        check_fits_memory(config, heads, dtype, where)  # before any tensor is read
    with files.open_tensors(directory) as reader:
        if heads and hasattr(family, "hf_from_tensors"):  # heads the file holds
            config = family.hf_from_tensors(config, reader.names())
        place = None if mesh is None else _placer(config, heads, mesh)
        params = engine.read_params(family, config, heads, reader, dtype, place)
    return config, params


def _has_heads(config: ModelConfig, params: Any) -> bool:
    """False for the backbone's parameters (init_params(heads=False)), else True (a tree that
    is neither is reported by the engine against the full model)."""
    paths = {
        tuple(str(getattr(k, "key", k)) for k in path)
        for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    full = set(engine.param_shapes(config, heads=True))
    return paths == full or paths != set(engine.param_shapes(config, heads=False))


def _comparable(config: ModelConfig) -> ModelConfig:
    return config.replace(dtype="float32")


def family_for_config(
    config: ModelConfig, params: Any, heads: bool
) -> tuple[ModuleType, dict[str, Any], ModelConfig, Any]:
    """The HF family whose checkpoint (config.json and the tensor names written) reads back
    as exactly `config` (compute dtype aside), after the family's `hf_canonical` (an
    equivalent form, e.g. a zero output bias), with that config.json, and the canonical
    config and params."""
    reasons = []
    for model_type, family in HF_FAMILIES.items():
        try:
            canonical = getattr(family, "hf_canonical", lambda c, p, h: (c, p))
            cfg, prm = canonical(config, params, heads)
            hf_config = family.to_hf_config(cfg, heads)
            back = family.from_hf_config(hf_config)
            if heads and hasattr(family, "hf_from_tensors"):  # as `load` reads the file
                written = engine.entries(family, cfg, heads, family.HF_PREFIX)
                back = family.hf_from_tensors(back, {e.hf for e in written if not e.alias})
        except (ValueError, KeyError) as e:
            reasons.append(f"{model_type}: {e}")
            continue
        if _comparable(back) == _comparable(cfg):
            return family, hf_config, cfg, prm
        diff = _diff(cfg.to_dict(), back.to_dict())
        reasons.append(f"{model_type}: would read back with {diff}")
    raise NotExpressible(
        "No Hugging Face family expresses this ModelConfig exactly, so it cannot be saved as an "
        "HF checkpoint (save with format='own' or 'auto' for this library's own format). "
        + "; ".join(reasons)
    )


def _diff(a: dict, b: dict, where: str = "") -> str:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            inner = _diff(va, vb, f"{where}{key}.")
            if inner:
                out.append(inner)
        elif va != vb:
            out.append(f"{where}{key}={vb!r} instead of {va!r}")
    return ", ".join(out)


def save(
    config: ModelConfig,
    params: Any,
    directory: str,
    dtype: Any = None,
    *,
    tokenizer: TextTokenizer | None = None,
    max_shard_size: int | None = None,
    format: str = "hf",
) -> list[str]:
    """Writes `directory` as Hugging Face loads it: config.json, model.safetensors (or shards
    of at most `max_shard_size` bytes each + model.safetensors.index.json),
    generation_config.json, and the tokenizer's files if `tokenizer` is given. The class
    (architectures) follows the config and the params: full parameters -> the family's head
    class; backbone parameters -> its base class (BertModel, ...). `dtype`: None keeps the
    params' dtype; otherwise cast. Returns the names of the files written.

    `format`: "hf" (a config no HF class expresses is a ValueError), "own" (this library's
    format, own_format.py, which only `hf.load` reads), or "auto" (HF when it can, else own;
    `config.json`'s model_type tells which was written)."""
    if format not in FORMATS:
        raise ValueError(f"format={format!r}; use one of {FORMATS}.")
    if config.scan_layers or config.remat != "none":  # how the stack runs, not what it is
        params = models.unstack_layers(params) if config.scan_layers else params
        config = config.replace(scan_layers=False, remat="none")
    heads = _has_heads(config, params)
    try:
        if format == "own":
            raise NotExpressible("format='own' was asked")
        family, hf_config, config, params = family_for_config(config, params, heads)
    except NotExpressible:
        if format == "hf":
            raise
        written = own_format.save(config, params, directory, heads, dtype)
        if tokenizer is not None:
            written += tokenizer.save(directory)
        return sorted(written)
    tensors = engine.write_params(family, config, heads, params, dtype)
    stored = next(iter(tensors.values())).dtype
    hf_config = {**hf_config, "dtype": str(stored) if stored != np.float32 else "float32"}
    generation = {k: hf_config[k] for k in _GENERATION_KEYS if hf_config.get(k) is not None}
    written = files.write_checkpoint(directory, hf_config, generation, tensors, max_shard_size)
    if tokenizer is not None:
        written += tokenizer.save(directory)
    return sorted(written)
