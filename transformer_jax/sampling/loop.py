"""The sampling loop: one `lax.while_loop` emitting one token per row per step.

The loop knows nothing about models. It is driven by

    tokens_to_logits(tokens [B, 1], positions [B, 1], cache) -> (logits [B, 1, V], cache)

which writes the tokens' keys/values into the cache at `positions` and returns the logits for
the token after them, so it can be tested with a fake function and any pytree as cache.

The caller runs the prompt (prefill) and passes the logits for each row's first new token
and `start[b]`, the position that token will take. Step s emits column s of the output (the
token at position start[b] + s); the following step feeds it back. The last emitted token is
never fed, so positions up to start[b] + max_new_tokens - 2 reach the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from jax import lax

from transformer_jax.sampling.settings import SamplingSettings

TokensToLogits = Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, Any]]


@flax.struct.dataclass
class SamplingState:
    step: jax.Array  # [] int32: tokens emitted per row so far (= next output column)
    tokens: jax.Array  # [B, N] int32: emitted tokens, pad after a row's EOS
    lengths: jax.Array  # [B] int32: tokens emitted per row, EOS included
    done: jax.Array  # [B] bool: row has emitted EOS
    start: jax.Array  # [B] int32: position of each row's first new token
    cache: Any  # whatever tokens_to_logits carries (a KV cache)
    rng: jax.Array  # PRNG key; step s draws with fold_in(rng, s)


def init_state(
    batch: int, max_new_tokens: int, start: jax.Array, cache: Any, rng: jax.Array, pad_id: int
) -> SamplingState:
    return SamplingState(
        step=jnp.zeros((), jnp.int32),
        tokens=jnp.full((batch, max_new_tokens), pad_id, jnp.int32),  # [B, N]
        lengths=jnp.zeros((batch,), jnp.int32),  # [B]
        done=jnp.zeros((batch,), bool),  # [B]
        start=jnp.asarray(start, jnp.int32),  # [B]
        cache=cache,
        rng=rng,
    )


def sample_loop(
    tokens_to_logits: TokensToLogits,
    logits: jax.Array,  # [B, V] logits for each row's first new token (from the prefill)
    cache: Any,
    start: jax.Array,  # [B] position of each row's first new token
    rng: jax.Array,
    settings: SamplingSettings,
    *,
    max_new_tokens: int,
    eos_id: int | None = None,
    pad_id: int = 0,
) -> SamplingState:
    """Samples up to `max_new_tokens` per row; stops early once every row has emitted EOS.

    Returns the final state: `tokens` [B, N] (pad_id after EOS and in unreached columns),
    `lengths` [B] (EOS included), `step` (loop iterations + 1, for tests and stats).
    """
    batch = logits.shape[0]

    def emit(state: SamplingState, logits: jax.Array) -> SamplingState:  # logits [B, V]
        rng = jax.random.fold_in(state.rng, state.step)
        token = settings.sample(rng, logits)  # [B]
        token = jnp.where(state.done, pad_id, token)  # [B]
        tokens = lax.dynamic_update_slice(state.tokens, token[:, None], (0, state.step))  # [B, N]
        done = state.done if eos_id is None else state.done | (token == eos_id)
        return state.replace(
            step=state.step + 1,
            tokens=tokens,
            lengths=state.lengths + (~state.done).astype(jnp.int32),
            done=done,
        )

    def cond(state: SamplingState) -> jax.Array:
        return (state.step < max_new_tokens) & ~jnp.all(state.done)

    def body(state: SamplingState) -> SamplingState:
        last = lax.dynamic_slice_in_dim(state.tokens, state.step - 1, 1, axis=1)  # [B, 1]
        positions = (state.start + state.step - 1)[:, None]  # [B, 1]
        logits, cache = tokens_to_logits(last, positions, state.cache)  # [B, 1, V]
        return emit(state.replace(cache=cache), logits[:, 0])

    state = init_state(batch, max_new_tokens, start, cache, rng, pad_id)
    state = emit(state, logits)
    return lax.while_loop(cond, body, state)
