"""The two functions the loops need from a model: prefill and tokens_to_logits.

    prefill(prompts [B, P], lengths [B], cache) -> (logits [B, V], cache)
        one parallel pass over the right-padded prompt block at positions 0..P-1; returns the
        logits at each row's last real token (position lengths[b] - 1).
    tokens_to_logits(tokens [B, 1], positions [B, 1], cache) -> (logits [B, 1, V], cache)

Slot j of the cache holds position j and queries see slots <= their position, so the pads'
stale keys/values are never seen: row b's first new token is written at position lengths[b],
over the first pad.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from transformer_jax.sampling.loop import TokensToLogits

Prefill = Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, Any]]


def _last_real(logits: jax.Array, lengths: jax.Array) -> jax.Array:
    """[B, P, V] -> [B, V] at position lengths[b] - 1 of each row."""
    index = (lengths - 1)[:, None, None]  # [B, 1, 1]
    return jnp.take_along_axis(logits, index, axis=1)[:, 0]  # [B, V]


def _prompt_positions(prompts: jax.Array) -> jax.Array:
    return jnp.broadcast_to(jnp.arange(prompts.shape[1]), prompts.shape)  # [B, P]


def decoder_only_fns(model: nn.Module, params: Any) -> tuple[Prefill, TokensToLogits]:
    """(prefill, tokens_to_logits) of a DecoderOnly model."""
    variables = {"params": params}

    def tokens_to_logits(tokens, positions, cache):  # [B, T], [B, T] -> [B, T, V]
        return model.apply(variables, tokens, positions, cache, method="decode")

    def prefill(prompts, lengths, cache):
        logits, cache = tokens_to_logits(prompts, _prompt_positions(prompts), cache)  # [B, P, V]
        return _last_real(logits, lengths), cache

    return prefill, tokens_to_logits


def encoder_decoder_fns(
    model: nn.Module,
    params: Any,
    src: jax.Array,
    step_src: jax.Array | None = None,
    src_valid: jax.Array | None = None,
    step_src_valid: jax.Array | None = None,
) -> tuple[Prefill, TokensToLogits]:
    """(prefill, tokens_to_logits) of an EncoderDecoder model for sources src [B, S].

    The prefill encodes `src` and runs the decoder prompt (the start token); that first
    cached call stores the cross-attention keys/values, which later steps reuse
    (encoded=None). `step_src` [B', S] is the source seen by the steps (for the cross-attention
    padding mask) when their batch differs, e.g. repeated per beam; defaults to `src`.
    `src_valid` [B, S] bool (and `step_src_valid` [B', S]) mark the real source tokens
    explicitly; None = the pad-id rule. The decoder's own keys are the cache's slots, so a
    decoder start that is the pad id itself (T5, Marian) is seen.
    """
    variables = {"params": params}
    step_src = src if step_src is None else step_src
    step_src_valid = src_valid if step_src_valid is None else step_src_valid

    def prefill(prompts, lengths, cache):
        encoded = model.apply(variables, src, valid=src_valid, method="encode")  # [B, S, D]
        logits, cache = model.apply(
            variables,
            prompts,
            encoded,
            src,
            positions=_prompt_positions(prompts),
            src_valid=src_valid,
            cache=cache,
            method="decode",
        )  # [B, P, V]
        return _last_real(logits, lengths), cache

    def tokens_to_logits(tokens, positions, cache):  # [B, T], [B, T] -> [B, T, V]
        return model.apply(
            variables,
            tokens,
            None,
            step_src,
            positions=positions,
            src_valid=step_src_valid,
            cache=cache,
            method="decode",
        )

    return prefill, tokens_to_logits


def two_stream_fns(model: nn.Module, params: Any) -> tuple[Prefill, TokensToLogits]:
    """(prefill, tokens_to_logits) of a TwoStream (XLNet) model, the XLNet way: the next token
    sits at a position no token can see (a hidden key) and the query stream predicts it; the
    whole bidirectional stack is recomputed every step, since every earlier token sees every
    new one (HF's `generate(..., use_mems=False)`).

    The "cache" is the token buffer [B, S] (models.init_cache): slot j holds position j.
    Predicting position p, only slots < p are keys (later slots, stale or empty, are hidden
    like padding); relative positions depend only on i - j, so this equals a run on the
    sequence cut after p.
    """
    variables = {"params": params}

    def predict(buffer: jax.Array, at: jax.Array) -> jax.Array:  # [B, S], [B] -> [B, 1, V]
        slots = jnp.arange(buffer.shape[1])[None, :]  # [1, S]
        valid = slots < at[:, None]  # [B, S]: the tokens before the predicted position
        mapping = (slots == at[:, None]).astype(jnp.float32)[:, None, :]  # [B, 1, S]
        return model.apply(variables, buffer, valid=valid, target_mapping=mapping)

    def prefill(prompts, lengths, cache):  # [B, P], [B], [B, S]
        buffer = cache.at[:, : prompts.shape[1]].set(prompts.astype(cache.dtype))  # [B, S]
        return predict(buffer, lengths)[:, 0], buffer  # [B, V]

    def tokens_to_logits(tokens, positions, cache):  # [B, 1], [B, 1], [B, S]
        rows = jnp.arange(cache.shape[0])
        buffer = cache.at[rows, positions[:, 0]].set(tokens[:, 0].astype(cache.dtype))
        return predict(buffer, positions[:, 0] + 1), buffer  # [B, 1, V]

    return prefill, tokens_to_logits
