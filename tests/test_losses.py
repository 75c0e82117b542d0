"""Label-smoothed cross-entropy against a hand computation."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from transformer_jax.train.losses import (
    chunked_token_stats,
    smoothed_cross_entropy,
    weighted_token_stats,
)


def _reference(logits, target, eps):
    """-Σ q_j log p_j - H(q), q = (1-eps) on the target, eps/(V-1) elsewhere; in pure Python."""
    m = max(logits)
    z = sum(math.exp(x - m) for x in logits)
    logp = [x - m - math.log(z) for x in logits]
    v = len(logits)
    q = [(1 - eps) if j == target else eps / (v - 1) for j in range(v)]
    cross = -sum(qj * lp for qj, lp in zip(q, logp, strict=True))
    entropy = -sum(qj * math.log(qj) for qj in q if qj > 0)
    return cross - entropy, -logp[target]


def test_smoothed_loss_matches_hand_computation():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 7)).astype(np.float32)
    targets = rng.integers(0, 7, size=(3, 5))
    for eps in (0.0, 0.1, 0.3):
        loss, nll = smoothed_cross_entropy(jnp.asarray(logits), jnp.asarray(targets), eps)
        for b in range(3):
            for t in range(5):
                ref_loss, ref_nll = _reference(list(map(float, logits[b, t])), targets[b, t], eps)
                np.testing.assert_allclose(float(loss[b, t]), ref_loss, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(float(nll[b, t]), ref_nll, rtol=1e-5, atol=1e-6)


def test_smoothed_loss_is_zero_at_the_smoothed_target():
    v, eps = 6, 0.1
    q = np.full(v, eps / (v - 1))
    q[2] = 1 - eps
    loss, _ = smoothed_cross_entropy(jnp.log(jnp.asarray(q))[None], jnp.asarray([2]), eps)
    np.testing.assert_allclose(float(loss[0]), 0.0, atol=1e-6)


def test_weighted_stats_ignore_padding():
    logits = jnp.asarray([[[0.0, 2.0, 0.0], [5.0, 0.0, 0.0]]])  # [1, 2, 3]
    targets = jnp.asarray([[1, 1]])
    stats = weighted_token_stats(logits, targets, jnp.asarray([[1.0, 0.0]]))
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    np.testing.assert_allclose(float(stats["nll"]), expected, rtol=1e-6)
    assert float(stats["weight"]) == 1.0 and float(stats["correct"]) == 1.0


def _head_loss_grad(chunk: int):
    """grad of the summed loss w.r.t. (hidden, table) for logits = hidden @ table.T."""

    def loss(hidden, table, targets, weights):
        head = lambda h: h @ table.T  # noqa: E731  # [..., D] -> [..., V]
        if chunk:
            return chunked_token_stats(head, hidden, targets, weights, 0.1, chunk)["loss"]
        return weighted_token_stats(head(hidden), targets, weights, 0.1)["loss"]

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def test_chunked_loss_equals_plain_loss_by_hand_and_gradient():
    rng = np.random.default_rng(1)
    hidden = rng.normal(size=(3, 5, 4)).astype(np.float32)
    table = rng.normal(size=(7, 4)).astype(np.float32)
    targets = rng.integers(0, 7, size=(3, 5))
    weights = (rng.random((3, 5)) < 0.7).astype(np.float32)
    logits = hidden @ table.T
    expected = sum(
        weights[b, t] * _reference(list(map(float, logits[b, t])), targets[b, t], 0.1)[0]
        for b in range(3)
        for t in range(5)
    )
    head = lambda h: h @ jnp.asarray(table).T  # noqa: E731
    for chunk in (4, 64):  # 4 leaves a padded tail chunk; 64 > the 15 tokens
        stats = chunked_token_stats(head, hidden, targets, weights, 0.1, chunk)
        np.testing.assert_allclose(float(stats["loss"]), expected, rtol=1e-5)
        assert float(stats["weight"]) == weights.sum()
    args = (hidden, table, targets, weights)
    for got, want in zip(_head_loss_grad(4)(*args), _head_loss_grad(0)(*args), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)


def test_chunked_loss_never_holds_the_full_logits():
    """Compiled (abstract shapes, nothing allocated) for a 128k vocabulary: the plain loss's
    temporaries include [B, T, V] float32 logits; the chunked one's stay near two
    [chunk, V] blocks."""
    b, t, d, v, chunk = 2, 256, 64, 131072, 64
    args = (
        jax.ShapeDtypeStruct((b, t, d), jnp.float32),
        jax.ShapeDtypeStruct((v, d), jnp.float32),
        jax.ShapeDtypeStruct((b, t), jnp.int32),
        jax.ShapeDtypeStruct((b, t), jnp.float32),
    )
    full_logits = b * t * v * 4  # 256 MiB
    temp = {c: _head_loss_grad(c).lower(*args).compile().memory_analysis() for c in (0, chunk)}
    assert temp[0].temp_size_in_bytes >= full_logits
    assert temp[chunk].temp_size_in_bytes < 4 * chunk * v * 4 <= full_logits / 2
