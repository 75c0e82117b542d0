"""The two functions the loops need from a model: prefill and tokens_to_logits.

    prefill(prompts [B, P], lengths [B], cache) -> (logits [B, V], cache)
        parallel passes over the right-padded prompt block at positions 0..P-1, in chunks of
        at most `prefill_chunk` tokens written into the cache one after the other (a long
        prompt costs like training: each chunk attends to the filled part of the cache);
        returns the logits at each row's last real token (position lengths[b] - 1), the
        only ones computed (decoder-only models).
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
from jax import lax

from transformer_jax.sampling.loop import TokensToLogits

Prefill = Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, Any]]

PREFILL_CHUNK = 512  # prompt tokens per cached pass of a decoder-only prefill


def _last_real(x: jax.Array, lengths: jax.Array) -> jax.Array:
    """[B, P, F] -> [B, F] at position lengths[b] - 1 of each row (logits or hidden states)."""
    index = (lengths - 1)[:, None, None]  # [B, 1, 1]
    return jnp.take_along_axis(x, index, axis=1)[:, 0]  # [B, F]


def _prompt_positions(prompts: jax.Array) -> jax.Array:
    return jnp.broadcast_to(jnp.arange(prompts.shape[1]), prompts.shape)  # [B, P]


def decoder_only_fns(
    model: nn.Module, params: Any, prefill_chunk: int = PREFILL_CHUNK
) -> tuple[Prefill, TokensToLogits]:
    """(prefill, tokens_to_logits) of a DecoderOnly model; the prefill runs the prompt in
    chunks of `prefill_chunk` tokens, and the output head only at each row's last real
    token (the logits of the other prompt positions are never used: for a small model the
    head is a large share of the prefill's work, e.g. 40% of the FLOPs of the 4-layer d256
    model with 8,192 ids)."""
    if not isinstance(prefill_chunk, int) or prefill_chunk <= 0:
        raise ValueError(f"prefill_chunk={prefill_chunk!r} must be a positive integer.")
    variables = {"params": params}
    backbone = model.clone(hidden_out=True)  # `decode` returns hidden states [B, T, D]

    def tokens_to_logits(tokens, positions, cache):  # [B, T], [B, T] -> [B, T, V]
        return model.apply(variables, tokens, positions, cache, method="decode")

    def hidden(tokens, positions, cache):  # [B, T], [B, T] -> [B, T, D]
        return backbone.apply(variables, tokens, positions, cache, method="decode")

    def head(h):  # [B, D] -> [B, V]
        return model.apply(variables, h, method="head")

    def prefill(prompts, lengths, cache):
        batch, width = prompts.shape
        if width <= prefill_chunk:
            h, cache = hidden(prompts, _prompt_positions(prompts), cache)
            return head(_last_real(h, lengths)), cache  # h [B, P, D] -> [B, D] -> [B, V]
        full, rest = divmod(width, prefill_chunk)
        last = lengths - 1  # [B] position of each row's last real token

        def run(carry, start, size):  # the chunk at positions start .. start + size - 1
            cache, picked = carry  # picked [B, D]: the hidden state at `last`, once run
            tokens = lax.dynamic_slice_in_dim(prompts, start, size, axis=1)  # [B, C]
            positions = jnp.broadcast_to(start + jnp.arange(size), (batch, size))  # [B, C]
            h, cache = hidden(tokens, positions, cache)  # [B, C, D]
            here = jnp.clip(last - start, 0, size - 1)[:, None, None]  # [B, 1, 1]
            row = jnp.take_along_axis(h, here, axis=1)[:, 0]  # [B, D]
            inside = (last >= start) & (last < start + size)  # [B]
            return cache, jnp.where(inside[:, None], row, picked)

        width_of = jax.eval_shape(
            lambda c: hidden(prompts[:, :1], _prompt_positions(prompts[:, :1]), c), cache
        )[0]  # [B, 1, D] abstract: the hidden states' width and dtype
        carry = (cache, jnp.zeros((batch, width_of.shape[-1]), width_of.dtype))
        carry, _ = lax.scan(
            lambda c, i: (run(c, i * prefill_chunk, prefill_chunk), None),
            carry,
            jnp.arange(full),
        )
        if rest:
            carry = run(carry, full * prefill_chunk, rest)
        cache, picked = carry
        return head(picked), cache  # [B, D] -> [B, V]

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
