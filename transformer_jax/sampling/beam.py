"""Beam search as one `lax.while_loop` over a KV cache, beams folded into the batch axis.

Driven by the same `tokens_to_logits(tokens [B*W, 1], positions [B*W, 1], cache)` as the
sampler (see loop.py); every cache leaf must have the batch on axis 0, and is reordered by
the surviving beams' parents at every step.

Semantics (Google NMT / tensor2tensor / Flax):
  * a hypothesis's score is log p(y) / ((5 + len) / 6) ** alpha, len = generated tokens,
    EOS included;
  * each step keeps the 2W best extensions of the W live beams: those ending in EOS join the
    finished set (the W best finished are kept), the W best others stay live;
  * at step max_new_tokens every live beam is finished as it stands (length N, no EOS);
  * a batch row stops once no live beam can still beat its best finished hypothesis (its
    best-case score bounds the score at any reachable length); the loop stops when all rows
    have, or after max_new_tokens steps.
With eos_id=None, every hypothesis has length N and beam_size=1 is greedy decoding. With an
EOS, a beam of 1 also remembers the best EOS-ended hypothesis seen on the way, which may
outscore the greedy path's final result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from jax import lax

from transformer_jax.sampling.loop import TokensToLogits
from transformer_jax.sampling.settings import SamplingSettings


def length_penalty(length: jax.Array, alpha: float) -> jax.Array:
    """((5 + length) / 6) ** alpha (Wu et al. 2016)."""
    return ((5.0 + length.astype(jnp.float32)) / 6.0) ** alpha


@flax.struct.dataclass
class BeamState:
    step: jax.Array  # [] int32: tokens generated so far by every live beam
    live_tokens: jax.Array  # [B, W, N] int32
    live_logp: jax.Array  # [B, W] float32, sorted descending; -inf = empty slot
    finished_tokens: jax.Array  # [B, W, N] int32, pad after EOS
    finished_scores: jax.Array  # [B, W] float32 length-penalised, sorted descending
    finished_lengths: jax.Array  # [B, W] int32, EOS included
    done: jax.Array  # [B] bool: no live beam can beat the best finished one
    start: jax.Array  # [B * W] int32: position of each row's first new token
    cache: Any  # batch axis B * W


def beam_search_loop(
    tokens_to_logits: TokensToLogits,
    logits: jax.Array,  # [B, V] logits for each row's first new token (from the prefill)
    cache: Any,  # batch axis B: repeated here for the W beams
    start: jax.Array,  # [B] position of each row's first new token
    *,
    beam_size: int,
    max_new_tokens: int,
    alpha: float = 0.6,
    eos_id: int | None = None,
    pad_id: int = 0,
    vocab_limit: int | None = None,
    suppress_tokens: tuple[int, ...] = (),
    reorder_cache: Callable[[Any, jax.Array], Any] | None = None,
) -> BeamState:
    """Returns the final state; the best hypothesis of row b is `finished_*[b, 0]`.

    `reorder_cache(cache, rows)` gathers the cache rows [B * W] each step (default: every
    leaf); a model whose cache holds entries shared by a row's beams (encoder-decoder
    cross-attention keys/values) can skip those."""
    batch, vocab = logits.shape
    reorder = reorder_cache or (lambda c, rows: jax.tree_util.tree_map(lambda x: x[rows], c))
    width, steps = beam_size, max_new_tokens
    if 2 * width > width * vocab:
        raise ValueError(f"beam search needs a vocabulary of >= 2 tokens, got {vocab}.")
    scorer = SamplingSettings.create(
        vocab_size=vocab, vocab_limit=vocab_limit, suppress_tokens=suppress_tokens
    )

    def expand(x: jax.Array) -> jax.Array:  # [B, ...] -> [B * W, ...] (beams of a row adjacent)
        return jnp.repeat(x, width, axis=0)

    def emit(state: BeamState, logits: jax.Array) -> BeamState:  # logits [B * W, V]
        logp = scorer.log_probs(logits).reshape(batch, width, vocab)  # [B, W, V]
        candidates = state.live_logp[:, :, None] + logp  # [B, W, V]
        flat = candidates.reshape(batch, width * vocab)  # [B, W * V]
        values, index = lax.top_k(flat, 2 * width)  # [B, 2W] sorted descending
        parent, token = index // vocab, (index % vocab).astype(jnp.int32)  # [B, 2W]
        seqs = jnp.take_along_axis(state.live_tokens, parent[:, :, None], axis=1)  # [B, 2W, N]
        column = jnp.arange(steps) == state.step  # [N]
        seqs = jnp.where(column, token[:, :, None], seqs)  # [B, 2W, N]
        length = state.step + 1
        ends = token == eos_id if eos_id is not None else jnp.zeros_like(token, bool)  # [B, 2W]
        ends = ends | (length == steps)

        # Live: the W best extensions that did not end.
        live_values = jnp.where(ends, -jnp.inf, values)  # [B, 2W]
        live_logp, keep = lax.top_k(live_values, width)  # [B, W]
        live_tokens = jnp.take_along_axis(seqs, keep[:, :, None], axis=1)  # [B, W, N]
        live_parent = jnp.take_along_axis(parent, keep, axis=1)  # [B, W]

        # Finished: merge the old W with the 2W new candidates that ended; keep the best W.
        new_scores = jnp.where(ends, values / length_penalty(length, alpha), -jnp.inf)  # [B, 2W]
        scores = jnp.concatenate([state.finished_scores, new_scores], axis=1)  # [B, 3W]
        fin_tokens = jnp.concatenate([state.finished_tokens, seqs], axis=1)  # [B, 3W, N]
        new_lengths = jnp.full(new_scores.shape, length, jnp.int32)  # [B, 2W]
        fin_lengths = jnp.concatenate([state.finished_lengths, new_lengths], axis=1)  # [B, 3W]
        finished_scores, best = lax.top_k(scores, width)  # [B, W]
        finished_tokens = jnp.take_along_axis(fin_tokens, best[:, :, None], axis=1)  # [B, W, N]
        finished_lengths = jnp.take_along_axis(fin_lengths, best, axis=1)  # [B, W]

        # A live beam (log p <= 0, only decreasing) finishing at length L in [length+1, N]
        # scores at most log p / penalty(L); penalty is monotonic in L, so check both ends.
        best_live = live_logp[:, 0]  # [B]
        bound = jnp.maximum(
            best_live / length_penalty(jnp.minimum(length + 1, steps), alpha),
            best_live / length_penalty(jnp.asarray(steps), alpha),
        )  # [B]
        done = state.done | (finished_scores[:, 0] >= bound)  # [B]

        # Reorder the cache rows: new beam (b, w) continues old beam (b, live_parent[b, w]).
        rows = (jnp.arange(batch)[:, None] * width + live_parent).reshape(-1)  # [B * W]
        cache = reorder(state.cache, rows)
        return state.replace(
            step=length,
            live_tokens=live_tokens,
            live_logp=live_logp,
            finished_tokens=finished_tokens,
            finished_scores=finished_scores,
            finished_lengths=finished_lengths,
            done=done,
            cache=cache,
        )

    def cond(state: BeamState) -> jax.Array:
        return (state.step < steps) & ~jnp.all(state.done)

    def body(state: BeamState) -> BeamState:
        last = lax.dynamic_slice_in_dim(state.live_tokens, state.step - 1, 1, axis=2)  # [B, W, 1]
        last = last.reshape(batch * width, 1)  # [B * W, 1]
        positions = (state.start + state.step - 1)[:, None]  # [B * W, 1]
        logits, cache = tokens_to_logits(last, positions, state.cache)  # [B * W, 1, V]
        return emit(state.replace(cache=cache), logits[:, 0])

    # Only beam 0 of each row is alive at first, so the W copies do not duplicate hypotheses.
    first_alive = jnp.arange(width) == 0  # [W]
    state = BeamState(
        step=jnp.zeros((), jnp.int32),
        live_tokens=jnp.full((batch, width, steps), pad_id, jnp.int32),  # [B, W, N]
        live_logp=jnp.broadcast_to(jnp.where(first_alive, 0.0, -jnp.inf), (batch, width)),
        finished_tokens=jnp.full((batch, width, steps), pad_id, jnp.int32),  # [B, W, N]
        finished_scores=jnp.full((batch, width), -jnp.inf, jnp.float32),  # [B, W]
        finished_lengths=jnp.zeros((batch, width), jnp.int32),  # [B, W]
        done=jnp.zeros((batch,), bool),
        start=expand(jnp.asarray(start, jnp.int32)),  # [B * W]
        cache=jax.tree_util.tree_map(expand, cache),
    )
    state = emit(state, expand(logits))  # [B * W, V]
    return lax.while_loop(cond, body, state)
