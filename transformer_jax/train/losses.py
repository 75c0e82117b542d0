"""Token losses over weighted (non-pad) targets. Sums are returned, not means, so that the
caller can normalise by the global weight across devices and micro-batches exactly."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax


def smoothed_cross_entropy(
    logits: jax.Array,  # [..., V] float32
    targets: jax.Array,  # [...] int
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """Per-token (smoothed loss, plain negative log-likelihood), both [...].

    The smoothed target puts 1-ε on the label and ε/(V-1) on every other id; the loss is
    -Σ q log p minus the entropy of q, so a perfect prediction of q scores 0 (as in the Flax
    WMT example). Perplexity is exp(plain NLL), never of the smoothed loss.
    """
    vocab = logits.shape[-1]
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # [..., V]
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]  # [...]
    if label_smoothing == 0.0:
        return nll, nll
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (vocab - 1)
    entropy = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low))
    smooth = confidence * nll - low * (jnp.sum(log_probs, axis=-1) + nll)  # -Σ_{j≠y} low·log p_j
    return smooth - entropy, nll


def weighted_token_stats(
    logits: jax.Array,  # [B, T, V]
    targets: jax.Array,  # [B, T]
    weights: jax.Array,  # [B, T] float (0 on padding)
    label_smoothing: float = 0.0,
) -> dict[str, jax.Array]:
    """Sums over the batch: 'loss' (smoothed), 'nll', 'correct', 'weight'."""
    loss, nll = smoothed_cross_entropy(logits, targets, label_smoothing)
    weights = weights.astype(jnp.float32)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return {
        "loss": jnp.sum(loss * weights),
        "nll": jnp.sum(nll * weights),
        "correct": jnp.sum(correct * weights),
        "weight": jnp.sum(weights),
    }


def chunked_token_stats(
    head: Callable[[jax.Array], jax.Array],  # [C, D] hidden -> [C, V] float32 logits
    hidden: jax.Array,  # [..., D] the output head's input
    targets: jax.Array,  # [...] int
    weights: jax.Array,  # [...] float (0 on padding)
    label_smoothing: float = 0.0,
    chunk_size: int = 1024,
) -> dict[str, jax.Array]:
    """`weighted_token_stats(head(hidden), ...)` without ever holding [..., V] logits.

    The tokens are cut into chunks of `chunk_size`; `lax.map` computes each chunk's logits,
    log-softmax and sums, and `jax.checkpoint` makes the backward pass recompute a chunk's
    logits instead of keeping them, so the largest vocabulary-sized temporary is
    [chunk_size, V] (forward and backward), not [B, T, V]. The price is one more forward
    projection per chunk in the backward pass. Padded tail rows carry weight 0.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size}: must be >= 1 (0 means the plain loss).")
    dim = hidden.shape[-1]
    n = targets.size
    chunk_size = min(chunk_size, n)
    chunks = -(-n // chunk_size)
    pad = chunks * chunk_size - n
    h = jnp.pad(hidden.reshape(n, dim), ((0, pad), (0, 0)))  # [N', D]
    t = jnp.pad(targets.reshape(n), (0, pad))  # [N']
    w = jnp.pad(weights.reshape(n).astype(jnp.float32), (0, pad))  # [N']

    @jax.checkpoint
    def one(args):
        hc, tc, wc = args  # [C, D], [C], [C]
        return weighted_token_stats(head(hc), tc, wc, label_smoothing)  # [C, V] never leaves

    per_chunk = lax.map(
        one,
        (
            h.reshape(chunks, chunk_size, dim),  # [n, C, D]
            t.reshape(chunks, chunk_size),  # [n, C]
            w.reshape(chunks, chunk_size),  # [n, C]
        ),
    )
    return {k: jnp.sum(v) for k, v in per_chunk.items()}
