"""Attention maps: the softmax weights of every attention layer for one sequence, read from
the `intermediates` collection that MultiHeadAttention fills through Flax's `sow` only when a
caller makes that collection mutable (a normal forward pass keeps and computes nothing extra).

    maps = attention_weights(model_cfg, params, tokens)            # decoder / encoder
    maps = attention_weights(model_cfg, params, tgt, source=src)   # encoder-decoder
    # [AttentionMap(name="decoder/layer_0/self_attn", weights [N, T, S], ...), ...]
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class AttentionMap:
    name: str  # e.g. "decoder/layer_1/cross_attn"
    weights: np.ndarray  # [N, T, S]: head, query, key; rows sum to 1
    queries: str  # "target", "source" or "tokens": which sequence the rows belong to
    keys: str  # likewise for the columns


def _natural(path: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def attention_weights(
    model_cfg, params: Any, tokens: Sequence[int], *, source: Sequence[int] | None = None
) -> list[AttentionMap]:
    """The attention weights of each layer (and each of its attention blocks) for one sequence:
    decoder-only / encoder-only: `tokens`; encoder-decoder: `source` into the encoder and
    `tokens` (the decoder inputs) into the decoder. Ordered encoder, then decoder, by layer."""
    import jax

    from transformer_jax import models

    if model_cfg.scan_layers:  # the maps are per layer: run the same weights layer by layer
        model_cfg = model_cfg.replace(scan_layers=False, remat="none")
        params = models.unstack_layers(params)
    model = models.build(model_cfg)
    tokens_b = np.asarray(tokens, np.int32)[None]  # [1, T]
    if model_cfg.arch == "encoder_decoder":
        if source is None:
            raise ValueError("An encoder-decoder model's attention needs the source tokens too.")
        args = (np.asarray(source, np.int32)[None], tokens_b)  # [1, S], [1, T]
    elif source is not None:
        raise ValueError(f"A {model_cfg.arch} model has no source: pass tokens only.")
    else:
        args = (tokens_b,)

    @jax.jit
    def run(params, *args):
        _, state = model.apply({"params": params}, *args, mutable=["intermediates"])
        return state["intermediates"]

    found = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(run(params, *args)):
        keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        if "attention_weights" not in keys:
            continue
        name = "/".join(keys[: keys.index("attention_weights")])
        found.append((name, np.asarray(leaf, np.float32)[0]))  # [1, N, T, S] -> [N, T, S]
    # Encoder first, then by layer; within a layer self-attention before cross-attention.
    def order(item):
        return not item[0].startswith("encoder"), _natural(item[0].replace("self", "0self"))

    found.sort(key=order)
    maps = []
    for name, weights in found:
        if model_cfg.arch != "encoder_decoder":
            queries = keys = "tokens"
        elif name.startswith("encoder"):
            queries = keys = "source"
        else:
            queries, keys = "target", ("source" if "cross" in name else "target")
        maps.append(AttentionMap(name, weights, queries, keys))
    if not maps:
        raise ValueError("The model sowed no attention weights (no attention layer ran).")
    return maps
