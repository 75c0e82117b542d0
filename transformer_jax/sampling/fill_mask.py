"""Masked-token prediction with an EncoderOnly (BERT) model.

One jitted forward pass per (config, batch, padded length, top_k, vocab_limit); rows are
right-padded with the config's pad id to a power-of-two bucket (or not padded at all when
pad_id is None, which then requires equal lengths).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from transformer_jax import models
from transformer_jax.config import ModelConfig
from transformer_jax.sampling import inputs
from transformer_jax.sampling.settings import SamplingSettings


@dataclasses.dataclass(frozen=True)
class MaskPrediction:
    """The top candidates for one masked position."""

    position: int  # index of the mask token in its row
    ids: np.ndarray  # [k] int32, most likely first
    probs: np.ndarray  # [k] float32 softmax probabilities over the (vocab-limited) vocabulary


@functools.partial(jax.jit, static_argnames=("config", "top_k", "vocab_limit"))
def _top_candidates(params, tokens, token_types, *, config, top_k, vocab_limit):
    """-> (probs [B, T, k], ids [B, T, k]) at every position."""
    logits = models.build(config).apply({"params": params}, tokens, token_types)  # [B, T, V]
    scorer = SamplingSettings.create(vocab_size=config.vocab_size, vocab_limit=vocab_limit)
    probs = jnp.exp(scorer.log_probs(logits))  # [B, T, V]
    return lax.top_k(probs, top_k)  # [B, T, k], [B, T, k]


def fill_mask(
    model: nn.Module | ModelConfig,
    params: Any,
    tokens: Any,
    mask_id: int,
    top_k: int = 5,
    *,
    token_types: Any = None,
    vocab_limit: int | None = None,
    lengths: Any = None,
) -> list[list[MaskPrediction]]:
    """For each row, for each position holding `mask_id` (in order): the `top_k` most likely
    ids and their probabilities.

    tokens: a list of lists of ids or an int array [B, T] (+ optional lengths [B]).
    token_types: optional segment ids, same layout as tokens (BERT sentence A/B).
    vocab_limit: ids >= vocab_limit are never proposed.
    """
    config = model if isinstance(model, ModelConfig) else getattr(model, "config", None)
    if not isinstance(config, ModelConfig) or config.arch != "encoder":
        raise ValueError(f"fill_mask needs an encoder-only (BERT-style) model, got {model!r}.")
    inputs.check_id("mask_id", mask_id, config.vocab_size)
    limit = config.vocab_size if vocab_limit is None else vocab_limit
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= limit:
        raise ValueError(f"top_k={top_k!r} must be an integer in [1, {limit}].")
    SamplingSettings.create(vocab_size=config.vocab_size, vocab_limit=vocab_limit)  # checks
    rows = inputs.as_rows(tokens, lengths, what="input")
    inputs.check_ids(rows, config.vocab_size, what="input")
    inputs.check_lengths(rows, config.max_len, what="input")
    width = inputs.padded_width(rows, config.max_len, config.pad_id, "input")
    pad = 0 if config.pad_id is None else config.pad_id
    block, _ = inputs.pad_rows(rows, width, pad)  # [B, width]
    types = None
    if token_types is not None:
        type_rows = inputs.as_rows(token_types, lengths, what="token_types row")
        if [len(r) for r in type_rows] != [len(r) for r in rows]:
            raise ValueError("token_types must have the same lengths as tokens.")
        inputs.check_ids(type_rows, max(config.embed.type_vocab_size, 1), what="token_types row")
        types, _ = inputs.pad_rows(type_rows, width, 0)  # [B, width]
    probs, ids = _top_candidates(
        params, block, types, config=config, top_k=top_k, vocab_limit=vocab_limit
    )
    probs, ids = np.asarray(probs), np.asarray(ids)  # [B, T, k]
    return [
        [MaskPrediction(int(t), ids[b, t], probs[b, t]) for t in np.flatnonzero(row == mask_id)]
        for b, row in enumerate(rows)
    ]
