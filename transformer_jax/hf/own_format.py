"""This library's own checkpoint directory, for configs no Hugging Face class expresses (the
paper Transformer, presets that mask pad keys, a parallel block on GPT-2, ...):

    config.json        {"model_type": "transformer_jax", "heads": bool,
                        "transformer_jax_config": ModelConfig.to_dict()}
    model.safetensors  one tensor per parameter, named by its path ("decoder/layer_0/...")

`hf.load` reads it back bitwise (same names, shapes and dtypes). transformers does not load
it: `model_type` "transformer_jax" is not one of its classes.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from transformer_jax.config import ModelConfig
from transformer_jax.hf import engine, files

MODEL_TYPE = "transformer_jax"


def to_config_json(config: ModelConfig, heads: bool) -> dict[str, Any]:
    return {"model_type": MODEL_TYPE, "heads": heads, "transformer_jax_config": config.to_dict()}


def save(
    config: ModelConfig, params: Any, directory: str, heads: bool, dtype: Any = None
) -> list[str]:
    """Writes config.json + model.safetensors; returns the names written."""
    shapes = engine.param_shapes(config, heads)
    flat = {
        tuple(str(k.key) for k in path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    if set(flat) != set(shapes):
        extra, missing = sorted(set(flat) - set(shapes)), sorted(set(shapes) - set(flat))
        raise ValueError(
            f"The parameters do not match the config's model (heads={heads}): unexpected "
            f"{['/'.join(p) for p in extra[:5]]}, missing {['/'.join(p) for p in missing[:5]]}."
        )
    tensors = {}
    for path, shape in shapes.items():
        value = np.asarray(flat[path])
        if value.shape != shape:
            raise ValueError(
                f"Parameter {'/'.join(path)} has shape {list(value.shape)}; the config implies "
                f"{list(shape)}."
            )
        tensors["/".join(path)] = value if dtype is None else value.astype(dtype)
    return files.write_checkpoint(directory, to_config_json(config, heads), None, tensors)


def load(directory: str, hf_config: dict[str, Any], dtype: Any) -> tuple[ModelConfig, Any]:
    where = f"{directory}/{files.CONFIG}"
    unknown = sorted(set(hf_config) - {"model_type", "heads", "transformer_jax_config"})
    if unknown or not isinstance(hf_config.get("heads"), bool):
        raise ValueError(
            f"{where}: a transformer_jax config.json holds model_type, heads (true/false) and "
            f"transformer_jax_config; found {sorted(hf_config)}."
        )
    try:
        config = ModelConfig.from_dict(hf_config["transformer_jax_config"])
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: transformer_jax_config: {e}") from e
    from transformer_jax.hf.api import check_fits_memory  # (api imports this module)

    check_fits_memory(config, hf_config["heads"], dtype, where)  # before any tensor is read
    shapes = engine.param_shapes(config, hf_config["heads"])
    params: dict[str, Any] = {}
    with files.open_tensors(directory) as reader:
        names = reader.names()
        expected = {"/".join(p) for p in shapes}
        if names != expected:
            extra, missing = sorted(names - expected), sorted(expected - names)
            raise ValueError(
                f"{directory}: the tensors do not match the config's model: missing "
                f"{missing[:5]}, not used {extra[:5]}."
            )
        for path, shape in shapes.items():
            name = "/".join(path)
            if reader.shape(name) != shape:
                raise ValueError(
                    f"{reader.files[name]}: tensor {name!r} has shape {list(reader.shape(name))}; "
                    f"the config implies {list(shape)}."
                )
            value = reader.get(name)
            if dtype is not None:
                value = value.astype(dtype, copy=False)
            tree = params
            for key in path[:-1]:
                tree = tree.setdefault(key, {})
            tree[path[-1]] = value
    return config, params
