"""Token losses over weighted (non-pad) targets. Sums are returned, not means, so that the
caller can normalise by the global weight across devices and micro-batches exactly."""

from __future__ import annotations

import jax
import jax.numpy as jnp


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
