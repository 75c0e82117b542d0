"""Long sequences at tiny sizes: every attention implementation inside real models (cached ==
uncached decoding after a chunked prefill, T5's relative bias), and the chunked prefill
itself against the one-pass prefill.

The blockwise path runs with query blocks of 3 and key blocks of 4 (monkeypatched module
defaults) so that prompts of 11 tokens and caches of 15 slots span several blocks, none
dividing the lengths.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax import models, presets
from transformer_jax.nn import attention as A
from transformer_jax.sampling import decoder_only_fns

# Grouped heads (4 query, 2 key/value), rotary positions, one sliding-window layer (window 3,
# with the causal and cache masks). One layer: each blockwise call site costs compile time.
MISTRAL = presets.get("mistral-tiny").replace(
    max_len=32,
    vocab_size=64,
    d_model=16,
    ffn={"d_ff": 32},
    num_layers=1,
    init_std=0.05,
    attention={"pattern": ("local",), "window": 3},
)
PROMPTS = [[5, 17, 3, 40, 9, 2, 44, 7, 60, 13, 8], [9, 2, 44, 61]]  # lengths 11, 4
FED = np.array([[33, 7], [12, 30]], np.int32)  # tokens fed after the prompts


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(A, "Q_BLOCK", 3)
    monkeypatch.setattr(A, "K_BLOCK", 4)


def _with_impl(config, impl):
    return config.replace(attention={"impl": impl})


@functools.cache
def _forward(config):
    """jit(apply) of `config`, one per config: both parametrisations below compare against
    the same einsum forward, compiled once."""
    return jax.jit(lambda p, t: models.build(config).apply({"params": p}, t))


@pytest.mark.parametrize("impl", ["blockwise", "xla"])  # einsum: the next test and others
def test_chunked_prefill_then_cached_steps_equal_the_uncached_einsum_forward(small_blocks, impl):
    config = _with_impl(MISTRAL, impl)
    reference = _with_impl(MISTRAL, "einsum")
    params = models.init_params(reference, jax.random.key(0))
    block = np.zeros((2, 11), np.int32)  # right-padded prompts [B, P]
    for b, p in enumerate(PROMPTS):
        block[b, : len(p)] = p
    lengths = np.array([len(p) for p in PROMPTS], np.int32)
    # Chunks of 4: two full chunks in the scan and a remainder of 3.
    prefill, step = decoder_only_fns(models.build(config), params, prefill_chunk=4)

    @jax.jit
    def run(block, lengths, fed):
        cache = models.init_cache(config, 2, 11 + fed.shape[1])
        logits, cache = prefill(block, lengths, cache)  # [B, V]
        got = [logits]
        for t in range(fed.shape[1] - 1):
            logits, cache = step(fed[:, t : t + 1], (lengths + t)[:, None], cache)
            got.append(logits[:, 0])
        return jnp.stack(got, axis=1)  # [B, steps, V]

    got = np.asarray(run(block, lengths, FED))
    forward = _forward(reference)
    for b, p in enumerate(PROMPTS):
        full = forward(params, np.concatenate([p, FED[b]])[None].astype(np.int32))  # [1, T, V]
        want = np.asarray(full[0, len(p) - 1 : len(p) - 1 + FED.shape[1]])  # [steps, V]
        np.testing.assert_allclose(got[b], want, atol=2e-5, rtol=1e-5, err_msg=f"row {b}")


def test_chunked_prefill_equals_one_pass_prefill_and_rejects_bad_chunks():
    config = _with_impl(MISTRAL, "einsum")
    model, params = models.build(config), models.init_params(config, jax.random.key(1))
    block = np.zeros((2, 11), np.int32)
    for b, p in enumerate(PROMPTS):
        block[b, : len(p)] = p
    lengths = np.array([len(p) for p in PROMPTS], np.int32)
    cache = models.init_cache(config, 2, 16)
    outs = []
    for chunk in (11, 4):
        prefill, _ = decoder_only_fns(model, params, prefill_chunk=chunk)
        outs.append(jax.jit(prefill)(block, lengths, cache))
    (one_logits, one_cache), (chunked_logits, chunked_cache) = outs
    np.testing.assert_allclose(chunked_logits, one_logits, atol=2e-5, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(chunked_cache), jax.tree.leaves(one_cache), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="prefill_chunk=0 must be a positive integer"):
        decoder_only_fns(model, params, prefill_chunk=0)


def test_t5_relative_bias_model_blockwise_equals_einsum(small_blocks):
    """An encoder-decoder with T5's relative-position bias and padded sources (the bias's
    gradient is tested in test_attention_impls)."""
    t5 = presets.get("t5-tiny").replace(
        max_len=16, vocab_size=64, d_model=16, num_layers=1, num_decoder_layers=1
    )
    src = np.array([[5, 17, 3, 40, 9, 2, 44, 7, 60], [9, 2, 44, 61, 0, 0, 0, 0, 0]], np.int32)
    tgt = np.array([[0, 33, 7, 25, 6, 1, 8], [0, 12, 30, 6, 0, 0, 0]], np.int32)
    params = models.init_params(t5, jax.random.key(2))
    got, want = (
        jax.jit(models.build(t5.replace(attention={"impl": impl})).apply)(
            {"params": params}, src, tgt
        )
        for impl in ("blockwise", "einsum")
    )  # [B, T, V]
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
