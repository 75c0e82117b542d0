"""Scaled dot-product attention, its masks, multi-head attention and the explicit KV cache.

Axis vocabulary: B batch, T query length, S key length, N query heads, K key/value heads,
G = N // K query heads per key/value head, H head dim, D model dim.
Masks are boolean, True where a query may attend a key, shaped [B, 1, T, S] (or broadcastable).
Position schemes reach attention through a `PositionEncoding` (nn/positions.py): queries and
keys are rotated by it (rotary), and its additive score bias, if any, is added to the scores.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from transformer_jax.config import ATTENTION_IMPLS, AttentionConfig, ModelConfig
from transformer_jax.nn import initializers
from transformer_jax.nn.partitioning import logical
from transformer_jax.nn.positions import PositionEncoding

NEG_INF = float(jnp.finfo(jnp.float32).min)


# ----------------------------------------------------------------------------------- masks
def padding_mask(key_valid: jax.Array) -> jax.Array:
    """[B, S] bool (True = real key) -> [B, 1, 1, S]."""
    return key_valid[:, None, None, :]


def causal_mask(length: int) -> jax.Array:
    """[1, 1, T, T]: query i sees keys j <= i."""
    idx = jnp.arange(length)
    return (idx[:, None] >= idx[None, :])[None, None]


def segment_mask(query_segments: jax.Array, key_segments: jax.Array) -> jax.Array:
    """[B, T], [B, S] int -> [B, 1, T, S]: packed examples never see each other."""
    return (query_segments[:, :, None] == key_segments[:, None, :])[:, None]


def cache_mask(positions: jax.Array, cache_length: int) -> jax.Array:
    """Decoding against a cache whose slot j holds position j: [B, T] -> [B, 1, T, S].

    Query at position p sees slots 0..p; later slots (stale prompt padding, zeros) are hidden.
    """
    slots = jnp.arange(cache_length)
    return (slots[None, None, :] <= positions[:, :, None])[:, None]


def window_mask(query_positions: jax.Array, key_positions: jax.Array, window: int) -> jax.Array:
    """[B, T], [B or 1, S] int -> [B, 1, T, S]: key k is within the window of query q iff
    q - window < k (local attention; combine with the causal mask for k <= q)."""
    return (key_positions[:, None, :] > query_positions[:, :, None] - window)[:, None]


def combine_masks(*masks: jax.Array | None) -> jax.Array | None:
    """Logical AND of the non-None masks (broadcasting), or None if all are None."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    return functools.reduce(jnp.logical_and, present)


# ------------------------------------------------------------------------------- attention
def dot_product_attention(
    q: jax.Array,  # [B, T, N, H]
    k: jax.Array,  # [B, S, K, H]
    v: jax.Array,  # [B, S, K, H]
    mask: jax.Array | None = None,  # [B, 1, T, S] bool
    *,
    scale: float | None = None,
    bias: jax.Array | None = None,  # [B or 1, N, T, S] float
    dropout: nn.Dropout | None = None,
    deterministic: bool = True,
) -> jax.Array:
    """softmax(Q Kᵀ · scale + bias) V, with grouped key/value heads; softmax in float32.

    `scale` defaults to 1/sqrt(H). Returns [B, T, N, H]. Keys/values come in the projections'
    [B, S, K, H] layout.
    """
    k = jnp.swapaxes(k, 1, 2)  # [B, K, S, H]
    v = jnp.swapaxes(v, 1, 2)  # [B, K, S, H]
    return attend(
        q, k, v, mask, scale=scale, bias=bias, dropout=dropout, deterministic=deterministic
    )


def attend(
    q: jax.Array,  # [B, T, N, H]
    k: jax.Array,  # [B, K, S, H]
    v: jax.Array,  # [B, K, S, H]
    mask: jax.Array | None = None,  # [B, 1, T, S] bool
    *,
    scale: float | None = None,
    bias: jax.Array | None = None,  # [B or 1, N, T, S] float
    dropout: nn.Dropout | None = None,
    deterministic: bool = True,
    sow: Any = None,  # called with the weights [B, N, T, S] (MultiHeadAttention's `sow`)
) -> jax.Array:
    """`dot_product_attention` on keys/values in the cache layout [B, K, S, H].

    scores = q·k · scale (default 1/sqrt(H); T5 uses 1) + bias (an additive score bias such
    as T5's relative positions), masked, softmax in float32.

    With (B, K) leading, both products are batched matmuls over contiguous [S, H] blocks, so
    decoding against a long cache moves no cache-sized transposes (bench/decode.py, batch 16,
    512 new tokens, 2-core CPU: 9,470 tokens/s against 4,982 with a [B, S, K, H] cache).
    """
    batch, q_len, num_heads, head_dim = q.shape
    num_kv = k.shape[1]
    if num_heads % num_kv:
        raise ValueError(f"{num_heads} query heads cannot share {num_kv} key/value heads.")
    q = q.reshape(batch, q_len, num_kv, num_heads // num_kv, head_dim)  # [B, T, K, G, H]
    scale = head_dim**-0.5 if scale is None else scale
    if scale != 1.0:
        q = q * jnp.asarray(scale, q.dtype)
    # Scores accumulate and come out in float32 even when q, k are bfloat16.
    logits = jnp.einsum("btkgh,bksh->bkgts", q, k, preferred_element_type=jnp.float32)
    # logits: [B, K, G, T, S]
    if bias is not None:
        bias = bias.astype(jnp.float32)
        lead = bias.shape[0]
        logits = logits + bias.reshape(lead, num_kv, num_heads // num_kv, *bias.shape[2:])
        # bias: [B or 1, N, T, S] -> [B or 1, K, G, T, S]
    if mask is not None:
        logits = jnp.where(mask[:, :, None], logits, NEG_INF)  # mask -> [B, 1, 1, T, S]
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)  # [B, K, G, T, S]
    if sow is not None:  # [B, K, G, T, S] -> [B, N, T, S] (query head n = k * G + g)
        sow(weights.reshape(batch, num_heads, q_len, weights.shape[-1]))
    if dropout is not None:
        weights = dropout(weights, deterministic=deterministic)
    out = jnp.einsum("bkgts,bksh->btkgh", weights, v)  # [B, T, K, G, H]
    return out.reshape(batch, q_len, num_heads, head_dim)  # [B, T, N, H]


def attend_step(
    q: jax.Array,  # [B, 1, N, H]
    cache: KVCache,  # [B, K, S, H] before this step's write
    new: KVCache,  # [B, K, 1, H] this step's key and value
    slot: jax.Array,  # [B] int: the slot `new` is written to
    mask: jax.Array | None = None,  # [B or 1, 1, 1, S] bool, over the written cache
    *,
    scale: float | None = None,
    bias: jax.Array | None = None,  # [B or 1, N, 1, S] float
) -> jax.Array:
    """`attend` of one new query over the cache with `new` written at `slot`, computed from
    the cache as it was before the write and `new` apart.

    Equal to `attend(q, *cache.write(new, slot), mask, ...)` for every mask and bias: the
    scores of every slot but `slot` come from the old cache, the score of `slot` from the new
    key, and one softmax runs over both. What it saves is XLA's: in a decode loop, attention
    that reads the just-written cache makes XLA:CPU copy each carried cache two to four
    times per step (the written cache feeds both the loop's output and the dots), which is
    most of a step at long caches; reading the old cache leaves the write as the cache's
    only use, done in place (with region-based copy insertion, sampling/generate.py).
    Returns [B, 1, N, H].
    """
    batch, q_len, num_heads, head_dim = q.shape
    num_kv, s_len = cache.k.shape[1], cache.k.shape[2]
    if q_len != 1:
        raise ValueError(f"attend_step takes one new query per row, got {q_len}.")
    if num_heads % num_kv:
        raise ValueError(f"{num_heads} query heads cannot share {num_kv} key/value heads.")
    groups = num_heads // num_kv
    slot = jnp.clip(slot.astype(jnp.int32), 0, s_len - 1)  # where the write lands (clamped)
    q = q.reshape(batch, 1, num_kv, groups, head_dim)  # [B, 1, K, G, H]
    scale = head_dim**-0.5 if scale is None else scale
    if scale != 1.0:
        q = q * jnp.asarray(scale, q.dtype)
    old = jnp.einsum("btkgh,bksh->bkgts", q, cache.k, preferred_element_type=jnp.float32)
    cur = jnp.einsum("btkgh,bksh->bkgts", q, new.k, preferred_element_type=jnp.float32)
    # old: [B, K, G, 1, S], cur: [B, K, G, 1, 1]. The written cache's scores: the new key's
    # at `slot`, the old keys' elsewhere; from here on exactly `attend`'s softmax.
    written = (jnp.arange(s_len) == slot[:, None])[:, None, None, None, :]  # [B, 1, 1, 1, S]
    logits = jnp.where(written, cur, old)  # [B, K, G, 1, S]
    if bias is not None:
        bias = bias.astype(jnp.float32)
        logits = logits + bias.reshape(bias.shape[0], num_kv, groups, 1, s_len)
    if mask is not None:
        logits = jnp.where(mask[:, :, None], logits, NEG_INF)  # mask -> [B, 1, 1, 1, S]
    weights = jax.nn.softmax(logits, axis=-1)  # [B, K, G, 1, S]
    # Weights x values of the written cache: the old values with `slot` left out, plus the
    # new value at `slot`'s weight.
    on_slot = jnp.sum(jnp.where(written, weights, 0.0), axis=-1, keepdims=True)  # [B, K, G, 1, 1]
    weights = jnp.where(written, 0.0, weights).astype(cache.v.dtype)
    out = jnp.einsum("bkgts,bksh->bkgth", weights, cache.v, preferred_element_type=jnp.float32)
    out = out + on_slot * new.v[:, :, None].astype(jnp.float32)  # [B, K, G, 1, H]
    out = out.astype(cache.v.dtype).transpose(0, 3, 1, 2, 4)  # [B, 1, K, G, H]
    return out.reshape(batch, 1, num_heads, head_dim)  # [B, 1, N, H]


# ------------------------------------------------------------------- blockwise attention
# Rabe & Staats 2021 ("Self-attention does not need O(n^2) memory") / FlashAttention: queries
# in blocks of `q_block`, keys in blocks of `k_block`, a running max and sum per query row, so
# no [B, N, T, S] tensor exists; the backward (a custom VJP) recomputes each block's weights
# from the saved row max and sum, so training memory in the attention is O(T) too.
# A (query block, key block) pair whose mask is all False is skipped (causal: about half of
# them; decoding: the unfilled cache). Masks are the same boolean [B or 1, 1, T or 1, S]
# arrays as everywhere else, read one block at a time. A query row that sees no key at all
# gives the mean of all values, as in `attend` (its scores are all NEG_INF there).
Q_BLOCK = 512  # default query block (rows of scores at a time)
K_BLOCK = 512  # default key block (columns)


def _pad_axis(x: jax.Array, axis: int, size: int, value=0) -> jax.Array:
    """Pads axis `axis` of x at the end up to `size`."""
    extra = size - x.shape[axis]
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths, constant_values=value)


def _block(x: jax.Array | None, axis: int, index: jax.Array, size: int) -> jax.Array | None:
    """Block `index` of length `size` along `axis`, or the whole axis where it is broadcast
    (length 1)."""
    if x is None or x.shape[axis] == 1:
        return x
    return lax.dynamic_slice_in_dim(x, index * size, size, axis=axis)


def _query_blocks(x: jax.Array, num_kv: int, bq: int, nq: int) -> jax.Array:
    """[B, T, N, H] -> [nq, B, K, G, bq, H] (T padded to nq * bq)."""
    batch, _, num_heads, head_dim = x.shape
    x = _pad_axis(x, 1, nq * bq).reshape(batch, nq, bq, num_kv, num_heads // num_kv, head_dim)
    return x.transpose(1, 0, 3, 4, 2, 5)  # [B, nq, bq, K, G, H] -> [nq, B, K, G, bq, H]


def _blockwise_layout(q, k, v, mask, bias, q_block, k_block):
    """Pads and reshapes to the block layout.

    q [B, T, N, H] -> [nq, B, K, G, bq, H]; k, v [B, K, S, H] -> [B, K, nk * bk, H];
    mask [Bm, 1, Tm, S] -> [Bm, 1, 1, Tm', S'] (K, G axes; T and S padded where not 1);
    bias [Bb, N, Tb, S] -> [Bb, K, G, Tb', S'] float32.
    """
    q_len, s_len = q.shape[1], k.shape[2]
    num_kv, groups = k.shape[1], q.shape[2] // k.shape[1]
    bq, bk = min(q_block, q_len), min(k_block, s_len)
    nq, nk = -(-q_len // bq), -(-s_len // bk)
    q = _query_blocks(q, num_kv, bq, nq)  # [nq, B, K, G, bq, H]
    k = _pad_axis(k, 2, nk * bk)  # [B, K, S', H]
    v = _pad_axis(v, 2, nk * bk)  # [B, K, S', H]
    if mask is not None:
        mask = jnp.broadcast_to(mask, (*mask.shape[:3], s_len))  # [Bm, 1, Tm, S]
        if mask.shape[2] != 1:
            mask = _pad_axis(mask, 2, nq * bq, True)
        mask = _pad_axis(mask, 3, nk * bk, False)[:, :, None]  # [Bm, 1, 1, Tm', S']
    if bias is not None:
        bias = jnp.broadcast_to(bias, (*bias.shape[:3], s_len)).astype(jnp.float32)
        if bias.shape[2] != 1:
            bias = _pad_axis(bias, 2, nq * bq)
        bias = _pad_axis(bias, 3, nk * bk)  # [Bb, N, Tb', S']
        bias = bias.reshape(bias.shape[0], num_kv, groups, *bias.shape[2:])  # [Bb, K, G, ., S']
    return q, k, v, mask, bias, (bq, bk, nq, nk)


def _block_scores(qb, kb, mask_b, bias_b, kj, bk, s_len):
    """Scores of one block pair: qb [B, K, G, bq, H] (already scaled), kb [B, K, bk, H] ->
    [B, K, G, bq, bk] float32; masked keys and the padding past S at -inf. The running max
    starts at NEG_INF (finite), so exp(-inf - m) is 0, never NaN, even in a row with no key."""
    s = jnp.einsum("bkgqh,bksh->bkgqs", qb, kb, preferred_element_type=jnp.float32)
    if bias_b is not None:
        s = s + bias_b  # [Bb, K, G, bq or 1, bk]
    real = kj * bk + jnp.arange(bk) < s_len  # [bk]: padding past S is no key at all
    if mask_b is not None:
        real = real & mask_b  # mask_b [Bm, 1, 1, bq or 1, bk]
    return jnp.where(real, s, -jnp.inf)


def _visible(mask_b) -> jax.Array:
    """Whether a block pair has any visible (query, key) pair; True when there is no mask."""
    return jnp.asarray(True) if mask_b is None else jnp.any(mask_b)


def _blockwise_forward(q, k, v, mask, bias, scale, q_block, k_block):
    """-> (out [B, T, N, H], residuals for the backward)."""
    batch, q_len, num_heads, head_dim = q.shape
    s_len = k.shape[2]
    q = q * jnp.asarray(scale, q.dtype) if scale != 1.0 else q
    qs, kp, vp, maskp, biasp, (bq, bk, nq, nk) = _blockwise_layout(
        q, k, v, mask, bias, q_block, k_block
    )
    num_kv, groups = qs.shape[2], qs.shape[3]

    mean_v = jnp.sum(vp, axis=2, dtype=jnp.float32)[:, :, None, None] / s_len  # [B, K, 1, 1, H]

    def query_block(args):  # one query block against every key block
        qi, qb = args  # [], [B, K, G, bq, H]
        mask_i = _block(maskp, 3, qi, bq)  # [Bm, 1, 1, bq or 1, S']
        bias_i = _block(biasp, 3, qi, bq)  # [Bb, K, G, bq or 1, S']

        def key_block(carry, kj):
            mask_b = _block(mask_i, 4, kj, bk)

            def visit(carry):
                m, den, acc = carry  # [B, K, G, bq], [B, K, G, bq], [B, K, G, bq, H]
                kb = lax.dynamic_slice_in_dim(kp, kj * bk, bk, axis=2)  # [B, K, bk, H]
                vb = lax.dynamic_slice_in_dim(vp, kj * bk, bk, axis=2)  # [B, K, bk, H]
                s = _block_scores(qb, kb, mask_b, _block(bias_i, 4, kj, bk), kj, bk, s_len)
                m_new = jnp.maximum(m, s.max(-1))  # [B, K, G, bq]
                p = jnp.exp(s - m_new[..., None])  # [B, K, G, bq, bk]
                fix = jnp.exp(m - m_new)  # [B, K, G, bq]
                pv = jnp.einsum(
                    "bkgqs,bksh->bkgqh",
                    p.astype(vb.dtype),
                    vb,
                    preferred_element_type=jnp.float32,
                )  # [B, K, G, bq, H]
                return m_new, den * fix + p.sum(-1), acc * fix[..., None] + pv

            return lax.cond(_visible(mask_b), visit, lambda c: c, carry), None

        rows = (batch, num_kv, groups, bq)
        init = (
            jnp.full(rows, NEG_INF, jnp.float32),  # running max m
            jnp.zeros(rows, jnp.float32),  # running sum of exp(s - m)
            jnp.zeros((*rows, head_dim), jnp.float32),  # running sum of weights * values
        )
        (m, den, acc), _ = lax.scan(key_block, init, jnp.arange(nk))
        out = acc / jnp.where(den == 0.0, 1.0, den)[..., None]  # [B, K, G, bq, H]
        # A row with no visible key (den == 0): uniform weights over the S keys, like attend.
        out = jnp.where((den == 0.0)[..., None], mean_v, out)
        return out, m, den

    out, m, den = lax.map(query_block, (jnp.arange(nq), qs))  # [nq, B, K, G, bq, H], [nq, ...]
    out = out.transpose(1, 0, 4, 2, 3, 5).reshape(batch, nq * bq, num_heads, head_dim)
    # [nq, B, K, G, bq, H] -> [B, nq, bq, K, G, H] -> [B, T', N, H]
    out = out[:, :q_len].astype(q.dtype)  # [B, T, N, H]
    return out, (m, den)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _blockwise(q, k, v, mask, bias, scale, q_block, k_block):
    return _blockwise_forward(q, k, v, mask, bias, scale, q_block, k_block)[0]


def _blockwise_fwd(q, k, v, mask, bias, scale, q_block, k_block):
    out, (m, den) = _blockwise_forward(q, k, v, mask, bias, scale, q_block, k_block)
    return out, (q, k, v, mask, bias, out, m, den)


def _blockwise_bwd(scale, q_block, k_block, residuals, d_out):
    """FlashAttention's backward: per block pair, weights p = exp(s - m) / den from the saved
    row statistics; dv = pᵀ dO, dp = dO vᵀ, ds = p (dp - rowsum(dO * O)), dq = ds k,
    dk = dsᵀ q, dbias = ds. Over query blocks, dk and dv accumulate in the carry."""
    q, k, v, mask, bias, out, m, den = residuals
    batch, q_len, num_heads, head_dim = q.shape
    s_len = k.shape[2]
    q_scaled = q * jnp.asarray(scale, q.dtype) if scale != 1.0 else q
    qs, kp, vp, maskp, biasp, (bq, bk, nq, nk) = _blockwise_layout(
        q_scaled, k, v, mask, bias, q_block, k_block
    )
    num_kv = qs.shape[2]
    # dO and rowsum(dO * O), in the query block layout [nq, B, K, G, bq, H] / [nq, B, K, G, bq]
    do = _query_blocks(d_out, num_kv, bq, nq)
    o = _query_blocks(out, num_kv, bq, nq)
    delta = jnp.sum(do.astype(jnp.float32) * o.astype(jnp.float32), axis=-1)
    inv_den = 1.0 / jnp.where(den == 0.0, 1.0, den)  # [nq, B, K, G, bq]

    def query_block(carry, args):
        dk, dv, dbias = carry  # [B, K, S', H] float32 x2, bias-shaped float32 or None
        qi, qb, do_i, delta_i, m_i, inv_den_i = args
        mask_i = _block(maskp, 3, qi, bq)
        bias_i = _block(biasp, 3, qi, bq)

        def key_block(carry, kj):
            mask_b = _block(mask_i, 4, kj, bk)

            def visit(carry):
                dq_i, dk, dv, dbias = carry
                kb = lax.dynamic_slice_in_dim(kp, kj * bk, bk, axis=2)  # [B, K, bk, H]
                vb = lax.dynamic_slice_in_dim(vp, kj * bk, bk, axis=2)  # [B, K, bk, H]
                s = _block_scores(qb, kb, mask_b, _block(bias_i, 4, kj, bk), kj, bk, s_len)
                p = jnp.exp(s - m_i[..., None]) * inv_den_i[..., None]  # [B, K, G, bq, bk]
                dv_b = jnp.einsum(
                    "bkgqs,bkgqh->bksh",
                    p.astype(do_i.dtype),
                    do_i,
                    preferred_element_type=jnp.float32,
                )  # [B, K, bk, H]
                dp = jnp.einsum(
                    "bkgqh,bksh->bkgqs", do_i, vb, preferred_element_type=jnp.float32
                )  # [B, K, G, bq, bk]
                ds = p * (dp - delta_i[..., None])  # [B, K, G, bq, bk]
                dq_i = dq_i + jnp.einsum(
                    "bkgqs,bksh->bkgqh",
                    ds.astype(kb.dtype),
                    kb,
                    preferred_element_type=jnp.float32,
                )  # [B, K, G, bq, H]
                dk_b = jnp.einsum(
                    "bkgqs,bkgqh->bksh",
                    ds.astype(qb.dtype),
                    qb,
                    preferred_element_type=jnp.float32,
                )  # [B, K, bk, H]
                start = kj * bk
                dk = lax.dynamic_update_slice_in_dim(
                    dk, lax.dynamic_slice_in_dim(dk, start, bk, 2) + dk_b, start, 2
                )
                dv = lax.dynamic_update_slice_in_dim(
                    dv, lax.dynamic_slice_in_dim(dv, start, bk, 2) + dv_b, start, 2
                )
                if dbias is not None:
                    dbias = _add_bias_block(dbias, ds, qi, kj, bq, bk)
                return dq_i, dk, dv, dbias

            return lax.cond(_visible(mask_b), visit, lambda c: c, carry), None

        dq_i = jnp.zeros(qb.shape, jnp.float32)  # [B, K, G, bq, H]
        (dq_i, dk, dv, dbias), _ = lax.scan(key_block, (dq_i, dk, dv, dbias), jnp.arange(nk))
        return (dk, dv, dbias), dq_i

    init = (
        jnp.zeros(kp.shape, jnp.float32),  # dk [B, K, S', H]
        jnp.zeros(vp.shape, jnp.float32),  # dv [B, K, S', H]
        None if biasp is None else jnp.zeros(biasp.shape, jnp.float32),  # [Bb, K, G, ., S']
    )
    (dk, dv, dbias), dq = lax.scan(
        query_block, init, (jnp.arange(nq), qs, do, delta, m, inv_den)
    )  # dq [nq, B, K, G, bq, H]
    dq = dq.transpose(1, 0, 4, 2, 3, 5).reshape(batch, nq * bq, num_heads, head_dim)
    # [nq, B, K, G, bq, H] -> [B, nq, bq, K, G, H] -> [B, T', N, H]
    dq = dq[:, :q_len] * scale  # the scores saw q * scale
    # Rows with no visible key took the mean of the values: each real key's dv gets dO / S.
    unseen = jnp.where((den == 0.0)[..., None], do.astype(jnp.float32), 0.0)  # [nq, B, K, G, bq, H]
    dv = dv + (unseen.sum(axis=(0, 3, 4)) / s_len)[:, :, None, :]  # [B, K, 1, H]
    if dbias is not None:
        dbias = dbias.reshape(dbias.shape[0], num_heads, *dbias.shape[3:])  # [Bb, N, Tb', S']
        dbias = dbias[:, :, : bias.shape[2], :s_len]  # [Bb, N, Tb, S]
        dbias = _sum_to_shape(dbias, bias.shape).astype(bias.dtype)
    return (
        dq.astype(q.dtype),
        dk[:, :, :s_len].astype(k.dtype),
        dv[:, :, :s_len].astype(v.dtype),
        None,
        dbias,
    )


def _add_bias_block(dbias, ds, qi, kj, bq, bk):
    """Adds the score gradient ds [B, K, G, bq, bk] of block (qi, kj) into dbias
    [Bb, K, G, Tb', S'] (summed over axes where the bias is broadcast)."""
    if dbias.shape[0] == 1:
        ds = ds.sum(0, keepdims=True)
    if dbias.shape[3] == 1:
        ds = ds.sum(3, keepdims=True)
        q_start = 0
    else:
        q_start = qi * bq
    index = (0, 0, 0, q_start, kj * bk)
    old = lax.dynamic_slice(dbias, index, ds.shape)
    return lax.dynamic_update_slice(dbias, old + ds, index)


def _sum_to_shape(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Sums x over the axes where `shape` (the bias as given) is broadcast (length 1)."""
    pairs = enumerate(zip(x.shape, shape, strict=True))
    axes = tuple(i for i, (a, b) in pairs if b == 1 and a != 1)
    return x.sum(axes, keepdims=True) if axes else x


_blockwise.defvjp(_blockwise_fwd, _blockwise_bwd)


def blockwise_attend(
    q: jax.Array,  # [B, T, N, H]
    k: jax.Array,  # [B, K, S, H]
    v: jax.Array,  # [B, K, S, H]
    mask: jax.Array | None = None,  # [B or 1, 1, T or 1, S] bool
    *,
    scale: float | None = None,
    bias: jax.Array | None = None,  # [B or 1, N, T or 1, S] float
    q_block: int = Q_BLOCK,
    k_block: int = K_BLOCK,
) -> jax.Array:
    """`attend` (no dropout) computed in blocks: memory O(T * k_block) forward and backward
    instead of O(T * S). Returns [B, T, N, H]."""
    num_heads, head_dim = q.shape[2], q.shape[3]
    num_kv = k.shape[1]
    if num_heads % num_kv:
        raise ValueError(f"{num_heads} query heads cannot share {num_kv} key/value heads.")
    for name, size in (("q_block", q_block), ("k_block", k_block)):
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"blockwise_attend: {name}={size!r} must be a positive integer.")
    scale = float(head_dim**-0.5 if scale is None else scale)
    if mask is not None:
        mask = mask.astype(bool)
    return _blockwise(q, k, v, mask, bias, scale, q_block, k_block)


# ------------------------------------------------------------------- the attention switch
def xla_attend(
    q: jax.Array,  # [B, T, N, H]
    k: jax.Array,  # [B, K, S, H]
    v: jax.Array,  # [B, K, S, H]
    mask: jax.Array | None = None,  # [B or 1, 1, T or 1, S] bool
    *,
    scale: float | None = None,
    bias: jax.Array | None = None,  # [B or 1, N, T or 1, S] float
    implementation: str | None = None,
) -> jax.Array:
    """`jax.nn.dot_product_attention` (implementation None = XLA, "cudnn" = cuDNN's fused
    kernel, GPU only) on the cache layout. Returns [B, T, N, H]."""
    k = jnp.swapaxes(k, 1, 2)  # [B, K, S, H] -> [B, S, K, H]
    v = jnp.swapaxes(v, 1, 2)  # [B, K, S, H] -> [B, S, K, H]
    if bias is not None:
        bias = bias.astype(q.dtype)
    return jax.nn.dot_product_attention(
        q, k, v, bias=bias, mask=mask, scale=scale, implementation=implementation
    )


def resolve_impl(
    impl: str,
    q_len: int,
    kv_len: int,
    *,
    dtype: Any = jnp.float32,
    head_dim: int = 64,
    platform: str | None = None,
) -> str:
    """The implementation that `impl` means for `q_len` queries against `kv_len` keys.

    "auto" on an NVIDIA GPU ("cuda"): cuDNN's fused flash attention wherever it takes the
    shapes (bfloat16/float16, head_dim a multiple of 8 up to 128, even lengths, more than one
    query: jax's cuDNN checks); otherwise, and on every other platform, the CPU rule measured
    by bench/long_context.py on the 2-core CPU (BENCHMARKS.md, "Long sequences"): training at
    4,096 tokens per step, blockwise beat einsum from 512 tokens on and lost at 128; one-query
    decode steps were faster with einsum at the cache sizes measured. `platform`: None = the
    default device's (`default_platform()`).
    """
    if impl != "auto":
        return impl
    platform = default_platform() if platform is None else platform
    fused_dtype = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    fused_shape = head_dim % 8 == 0 and head_dim <= 128 and q_len % 2 == 0 and kv_len % 2 == 0
    if platform == "cuda" and fused_dtype and fused_shape and q_len > 1:
        return "cudnn"
    if q_len == 1 or kv_len < AUTO_BLOCKWISE_FROM:
        return "einsum"
    return "blockwise"


def default_platform() -> str:
    """'cuda' for an NVIDIA GPU (cuDNN present), else jax's backend name ('cpu', 'tpu',
    'gpu' for ROCm)."""
    device = jax.devices()[0]
    if device.platform == "gpu" and "rocm" not in device.client.platform_version.lower():
        return "cuda"
    return device.platform


AUTO_BLOCKWISE_FROM = 512  # keys; see resolve_impl


def _step_from_old_cache(impl: str, cache_length: int) -> bool:
    """Whether a one-token cached step uses `attend_step` (the einsum path's form that reads
    the cache as it was before the step's write). Measured on the 2-core CPU only (with
    region-based copy insertion, which the sampler turns on there): batch 1, 1.7-1.9x the
    tokens/s of attending over the written cache; batch 16, the same. Other platforms keep
    the written-cache read until measured there."""
    return resolve_impl(impl, 1, cache_length) == "einsum" and default_platform() == "cpu"


def attention(
    q: jax.Array,  # [B, T, N, H]
    k: jax.Array,  # [B, K, S, H]
    v: jax.Array,  # [B, K, S, H]
    mask: jax.Array | None = None,  # [B, 1, T, S] bool
    *,
    impl: str = "auto",
    scale: float | None = None,
    bias: jax.Array | None = None,  # [B or 1, N, T, S] float
    dropout: nn.Dropout | None = None,
    deterministic: bool = True,
    sow: Any = None,  # called with the weights [B, N, T, S] (attention maps)
) -> jax.Array:
    """The attention switch: `attend` computed by implementation `impl` (ATTENTION_IMPLS).

    Dropout on the attention weights and sowing them (attention maps) need the weights, so a
    step with live dropout or a `sow` uses the einsum path whatever `impl` says (the blockwise
    and fused paths never hold the weights).
    """
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention impl={impl!r} is not one of {ATTENTION_IMPLS}.")
    live_dropout = dropout is not None and dropout.rate > 0.0 and not deterministic
    needs_weights = live_dropout or sow is not None
    if needs_weights:
        impl = "einsum"
    else:
        impl = resolve_impl(impl, q.shape[1], k.shape[2], dtype=q.dtype, head_dim=q.shape[-1])
    if impl == "einsum":
        return attend(
            q, k, v, mask, scale=scale, bias=bias, dropout=dropout, deterministic=deterministic,
            sow=sow,
        )  # fmt: skip
    if impl == "blockwise":
        return blockwise_attend(
            q, k, v, mask, scale=scale, bias=bias, q_block=Q_BLOCK, k_block=K_BLOCK
        )
    if impl == "cudnn" and jax.default_backend() != "gpu":
        raise ValueError(
            f"attention impl='cudnn' needs a GPU; the backend is {jax.default_backend()!r}. "
            "Use 'auto', 'blockwise', 'xla' or 'einsum'."
        )
    return xla_attend(
        q, k, v, mask, scale=scale, bias=bias, implementation="cudnn" if impl == "cudnn" else None
    )


@flax.struct.dataclass
class KVCache:
    """Keys and values of one attention layer, [B, K, S, H]; slot j holds position j."""

    k: jax.Array  # [B, K, S, H]
    v: jax.Array  # [B, K, S, H]

    @property
    def length(self) -> int:
        """S, the number of slots."""
        return self.k.shape[2]

    @classmethod
    def zeros(cls, config: ModelConfig, batch: int, length: int) -> KVCache:
        shape = (batch, config.kv_heads, length, config.head_dim)  # [B, K, S, H]
        return cls(
            k=jnp.zeros(shape, config.compute_dtype), v=jnp.zeros(shape, config.compute_dtype)
        )

    def write(self, new: KVCache, index: jax.Array) -> KVCache:
        """Writes new [B, K, T, H] at slots index[b] .. index[b]+T-1 of each row b.

        Like every JAX dynamic update, an index past the end is clamped, not reported:
        callers check lengths on the host (the sampler does).
        """

        def row(cache_row, new_row, start):  # [K, S, H], [K, T, H], []
            return lax.dynamic_update_slice(
                cache_row, new_row.astype(cache_row.dtype), (0, start, 0)
            )

        index = index.astype(jnp.int32)
        return KVCache(k=jax.vmap(row)(self.k, new.k, index), v=jax.vmap(row)(self.v, new.v, index))


class MultiHeadAttention(nn.Module):
    """Multi-head attention with Q, K, V and output projections (self or cross).

    Self-attention: `attn(x, mask)`; with `cache` and `cache_index` the new keys/values are
    written into the cache and the queries attend over the whole cache. `encoding` (the
    stack's position encoding at the tokens' positions) rotates queries and new keys and
    supplies an additive score bias, where its scheme has them.
    Cross-attention: `attn(x, mask, kv=attn.project_kv(encoded))`, so that a decoder can
    project the encoder output once and reuse it at every step.
    """

    config: AttentionConfig
    d_model: int  # D, input and output width
    head_dim: int  # H
    dtype: Any = jnp.float32  # compute dtype (parameters are float32)
    init_std: float = 0.02

    def setup(self) -> None:
        cfg = self.config

        def dense(features, use_bias, axes, axis=-1):  # axes: the kernel's logical names
            return nn.DenseGeneral(
                features=features,
                axis=axis,
                use_bias=use_bias,
                dtype=self.dtype,
                kernel_init=logical(initializers.normal(self.init_std), axes),
            )

        qkv, kv = ("embed", "heads", "head_dim"), ("embed", "kv_heads", "head_dim")
        self.query = dense((cfg.num_heads, self.head_dim), cfg.qkv_bias, qkv)  # D -> [N, H]
        self.key = dense((cfg.kv_heads, self.head_dim), cfg.qkv_bias, kv)  # D -> [K, H]
        self.value = dense((cfg.kv_heads, self.head_dim), cfg.qkv_bias, kv)  # D -> [K, H]
        out = ("heads", "head_dim", "embed")
        self.out = dense(self.d_model, cfg.out_bias, out, axis=(-2, -1))  # [N, H] -> D
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def project_kv(self, x: jax.Array, encoding: PositionEncoding | None = None) -> KVCache:
        """[B, S, D] -> keys and values in the cache layout [B, K, S, H] (keys rotated by
        `encoding` if its scheme rotates)."""
        k = self.key(x)  # [B, S, K, H]
        if encoding is not None:
            k = encoding.rotate(k)
        k = jnp.swapaxes(k, 1, 2)  # [B, S, K, H] -> [B, K, S, H]
        v = jnp.swapaxes(self.value(x), 1, 2)  # [B, S, K, H] -> [B, K, S, H]
        return KVCache(k=k, v=v)

    def __call__(
        self,
        x: jax.Array,  # [B, T, D]
        mask: jax.Array | None,  # [B, 1, T, S]
        *,
        encoding: PositionEncoding | None = None,
        kv: KVCache | None = None,
        cache: KVCache | None = None,
        cache_index: jax.Array | None = None,  # [B] first slot to write
        deterministic: bool = True,
    ) -> tuple[jax.Array, KVCache]:
        """Returns (output [B, T, D], the keys/values attended: the updated cache if any)."""
        q = self.query(x)  # [B, T, N, H]
        if encoding is not None:
            q = encoding.rotate(q)
        sow = self._sow_weights if self.is_mutable_collection("intermediates") else None
        bias = None if encoding is None else encoding.bias
        if kv is None:
            kv = self.project_kv(x, encoding)  # [B, K, T, H]
            if cache is not None:
                if cache_index is None:
                    raise ValueError("A KV cache needs cache_index (first slot to write).")
                new, kv = kv, cache.write(kv, cache_index)  # [B, K, S, H]
                live_dropout = self.dropout.rate > 0.0 and not deterministic
                one_step = x.shape[1] == 1 and sow is None and not live_dropout
                if one_step and _step_from_old_cache(self.config.impl, cache.length):
                    # A decode step: attend from the old cache and the new key/value (the
                    # same result; no cache copies in the sampler's loop, see attend_step).
                    out = attend_step(
                        q, cache, new, cache_index, mask, scale=self.config.scale, bias=bias
                    )  # [B, 1, N, H]
                    return self.out(out), kv
        out = attention(
            q,
            kv.k,
            kv.v,
            mask,
            impl=self.config.impl,
            scale=self.config.scale,
            bias=bias,
            dropout=self.dropout,
            deterministic=deterministic,
            sow=sow,
        )  # [B, T, N, H]
        return self.out(out), kv

    def _sow_weights(self, weights: jax.Array) -> None:
        """Attention weights [B, N, T, S] into the `intermediates` collection, only when the
        caller made it mutable (models.attention_weights); otherwise nothing is kept."""
        self.sow("intermediates", "attention_weights", weights)
