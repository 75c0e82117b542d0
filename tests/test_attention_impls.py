"""Every attention implementation (nn/attention.py `attention`, the `attention.impl` switch)
against the float64 NumPy reference (forward) and the einsum path `attend` (gradient), on
every mask the models build, with grouped heads and a T5-style additive bias.

Sizes: B=3, T=7 queries, S=11 keys, N=6 heads sharing K=2 key/value heads, H=5; the blockwise
path runs with query blocks of 3 and key blocks of 4, which divide neither length, so the
padded tail blocks and the skipped (fully masked) blocks are both exercised. Every mask is
given as a dense [B, 1, T, S] array so that one compiled program serves all of them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.config import AttentionConfig
from transformer_jax.nn import attention as A

B, T, S, N, K, H = 3, 7, 11, 6, 2, 5
QB, KB = 3, 4  # blockwise block sizes: divide neither T nor S
OFFSET = S - T  # query t sits at position t + OFFSET (a prompt after OFFSET cached tokens)


def _masks() -> dict[str, np.ndarray]:
    """Each mask kind of the library as [B, 1, T, S] bool, built with its own functions."""
    rng = np.random.default_rng(3)
    q_pos = np.broadcast_to(np.arange(T) + OFFSET, (B, T))  # [B, T]
    k_pos = np.broadcast_to(np.arange(S), (B, S))  # [B, S]
    causal = k_pos[:, None, :] <= q_pos[:, :, None]  # [B, T, S]
    key_valid = np.ones((B, S), bool)
    key_valid[1, 5:7] = False
    key_valid[2, :3] = False  # left padding
    segments = np.array([[1] * 4 + [2] * 7, [1] * 9 + [2] * 2, [1] * 11])  # [B, S]
    cache_pos = np.array([[4, 5, 6, 7, 8, 9, 10], [0, 1, 2, 3, 4, 5, 6], [2] * 7])  # [B, T]

    def jnp_mask(m):
        return np.broadcast_to(np.asarray(m), (B, 1, T, S))

    pad = jnp_mask(A.padding_mask(jnp.asarray(key_valid)))
    seg = jnp_mask(A.segment_mask(jnp.asarray(segments[:, OFFSET:]), jnp.asarray(segments)))
    window = jnp_mask(A.window_mask(jnp.asarray(q_pos), jnp.asarray(k_pos), 3))
    masks = {
        "none": np.ones((B, 1, T, S), bool),
        "causal": causal[:, None],
        "causal+padding": causal[:, None] & pad,
        "packed segments": causal[:, None] & seg,
        "sliding window": causal[:, None] & window,
        "cache": jnp_mask(A.cache_mask(jnp.asarray(cache_pos), S)),
        "random+fully masked rows": rng.random((B, 1, T, S)) < 0.4,
    }
    masks["random+fully masked rows"][0, 0, 2] = False
    masks["random+fully masked rows"][2] = False
    return masks


MASKS = _masks()


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, T, N, H)).astype(np.float32)
    k = rng.standard_normal((B, K, S, H)).astype(np.float32)
    v = rng.standard_normal((B, K, S, H)).astype(np.float32)
    bias = rng.standard_normal((1, N, T, S)).astype(np.float32)  # T5: one table, all rows
    return q, k, v, bias


def _impl(name):
    if name == "blockwise":
        return functools.partial(A.blockwise_attend, q_block=QB, k_block=KB)
    if name == "xla":
        return A.xla_attend
    return A.attend


@functools.cache
def _value_and_grads(name: str, with_bias: bool):
    """jit(mask -> (out, grads of a loss over every row)), one compile per impl. Rows that
    see no key take the mean of the values in every implementation."""
    fn = _impl(name)

    def loss(q, k, v, bias, mask):
        out = fn(q, k, v, mask, scale=0.5 if with_bias else None, bias=bias)
        return jnp.sum(jnp.sin(out) * jnp.arange(1.0, H + 1)), out  # distinct per head dim

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))


@pytest.mark.parametrize("with_bias", [False, True], ids=["plain", "t5-bias"])
@pytest.mark.parametrize("name", ["blockwise", "xla"])
def test_impl_matches_reference_forward_and_gradient_on_every_mask(ref, name, with_bias):
    q, k, v, bias = _inputs()
    bias = bias if with_bias else None
    scale = 0.5 if with_bias else None
    for kind, mask in MASKS.items():
        (_, out), grads = _value_and_grads(name, with_bias)(q, k, v, bias, mask)
        (_, want_out), want_grads = _value_and_grads("einsum", with_bias)(q, k, v, bias, mask)
        seen = mask.any(-1)[:, 0]  # [B, T]: rows with a key (the reference's others are NaN)
        want = ref.attention(
            *ref.f64((q, np.swapaxes(k, 1, 2), np.swapaxes(v, 1, 2))),
            mask,
            scale,
            None if bias is None else bias.astype(np.float64),
        )  # [B, T, N, H]
        np.testing.assert_allclose(
            np.asarray(out)[seen], want[seen], rtol=1e-5, atol=1e-5, err_msg=kind
        )
        np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5, err_msg=kind)
        for arg, got_g, want_g in zip("q k v bias".split(), grads, want_grads, strict=True):
            if arg == "bias" and bias is None:
                continue
            np.testing.assert_allclose(
                np.asarray(got_g), np.asarray(want_g), rtol=1e-5, atol=2e-5, err_msg=f"{kind} {arg}"
            )


def test_blockwise_broadcast_masks_and_bias_and_one_query(ref):
    """Masks and bias as the models pass them: causal [1, 1, T, S] with a bias broadcast over
    queries [1, N, 1, S] (forward and gradient); a decode step (T = 1) with a padding mask
    [B, 1, 1, S] (forward)."""
    q, k, v, bias = _inputs(seed=1)
    causal = np.asarray(MASKS["causal"][:1])  # [1, 1, T, S]
    row_bias = bias[:, :, :1]  # [1, N, 1, S]
    valid = np.ones((B, 1, 1, S), bool)
    valid[0, ..., 8:] = False
    blockwise = functools.partial(A.blockwise_attend, q_block=QB, k_block=KB)

    def both(q, k, v, b):  # (blockwise out, its grads, the einsum path's grads)
        def loss(fn, *args):
            out = fn(*args[:3], causal, bias=args[3])
            return jnp.sum(jnp.cos(out)), out

        (_, out), got = jax.value_and_grad(loss, (1, 2, 3, 4), True)(blockwise, q, k, v, b)
        want = jax.grad(loss, (1, 2, 3, 4), True)(A.attend, q, k, v, b)[0]
        return out, got, want, blockwise(q[:, :1], k, v, valid)

    out, got, want, step = jax.jit(both)(q, k, v, row_bias)
    qkv64 = ref.f64((q, np.swapaxes(k, 1, 2), np.swapaxes(v, 1, 2)))
    full = np.broadcast_to(causal, (B, 1, T, S))
    expected = ref.attention(*qkv64, full, None, np.float64(row_bias))
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)
    for got_g, want_g in zip(got, want, strict=True):
        assert got_g.shape == want_g.shape
        np.testing.assert_allclose(np.asarray(got_g), np.asarray(want_g), atol=2e-5)
    expected = ref.attention(qkv64[0][:, :1], *qkv64[1:], np.broadcast_to(valid, (B, 1, 1, S)))
    np.testing.assert_allclose(np.asarray(step), expected, rtol=1e-5, atol=1e-5)


def test_blockwise_never_materialises_the_score_tensor():
    """Compiled forward + backward on abstract shapes: the einsum path needs several
    [B, N, T, S] float32 buffers; the blockwise path (blocks of 128) less than ONE head's
    [T, S] scores."""
    length, heads = 2048, 4
    q = jax.ShapeDtypeStruct((1, length, heads, 8), jnp.float32)  # [B, T, N, H]
    kv = jax.ShapeDtypeStruct((1, heads, length, 8), jnp.float32)  # [B, K, S, H]
    one_head_scores = length * length * 4  # bytes of [T, S] float32

    def temp_bytes(fn):
        def loss(q, k, v):
            return jnp.sum(fn(q, k, v, A.causal_mask(length)))

        grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        return grad.lower(q, kv, kv).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes(A.attend) >= heads * one_head_scores
    # What remains: the [T, S] bool mask itself (1/4 of a head's scores) and O(T) buffers.
    blockwise = functools.partial(A.blockwise_attend, q_block=128, k_block=128)
    assert temp_bytes(blockwise) < one_head_scores


def test_switch_routes_and_validates():
    """`attention` runs the implementation asked for (read from the traced program: the
    blockwise path is a custom VJP, the einsum path is not); values are tested above."""
    q, k, v, _ = _inputs()
    mask = MASKS["causal"]

    def program(impl, q=q):
        return str(jax.make_jaxpr(lambda q: A.attention(q, k, v, mask, impl=impl))(q))

    assert "custom_vjp_call" in program("blockwise")
    for impl in ("einsum", "xla", "auto"):  # auto: einsum for short keys
        assert "custom_vjp_call" not in program(impl), impl
    assert A.resolve_impl("auto", 1, 100_000) == "einsum"  # a decode step
    assert A.resolve_impl("auto", 2048, 2048) == "blockwise"
    assert A.resolve_impl("auto", 128, 128) == "einsum"
    assert A.resolve_impl("xla", 1, 1) == "xla"
    if jax.default_backend() == "cpu":
        assert A.default_platform() == "cpu"
    with pytest.raises(ValueError, match="impl='flash' is not one of"):
        A.attention(q, k, v, mask, impl="flash")
    if jax.default_backend() != "gpu":
        with pytest.raises(ValueError, match="impl='cudnn' needs a GPU"):
            A.attention(q, k, v, mask, impl="cudnn")
    with pytest.raises(ValueError, match=r"attention.impl='fast' is not one of"):
        AttentionConfig(num_heads=2, impl="fast")
    with pytest.raises(ValueError, match="k_block=0 must be a positive integer"):
        A.blockwise_attend(q, k, v, mask, k_block=0)


@pytest.mark.parametrize(
    "platform,q_len,kv_len,dtype,head_dim,want",
    [
        ("cuda", 1024, 1024, jnp.bfloat16, 64, "cudnn"),  # cuDNN takes it
        ("cuda", 1024, 1024, jnp.float16, 128, "cudnn"),
        ("cuda", 1024, 1024, jnp.float32, 64, "blockwise"),  # no float32 fused kernel
        ("cuda", 128, 128, jnp.float32, 64, "einsum"),
        ("cuda", 1024, 1024, jnp.bfloat16, 160, "blockwise"),  # head_dim > 128
        ("cuda", 1024, 1024, jnp.bfloat16, 36, "blockwise"),  # not a multiple of 8
        ("cuda", 1023, 1023, jnp.bfloat16, 64, "blockwise"),  # odd lengths
        ("cuda", 1, 4096, jnp.bfloat16, 64, "einsum"),  # a decode step
        ("cpu", 1024, 1024, jnp.bfloat16, 64, "blockwise"),  # the CPU rule, whatever dtype
        ("cpu", 128, 128, jnp.bfloat16, 64, "einsum"),
        ("tpu", 1024, 1024, jnp.bfloat16, 64, "blockwise"),
        ("gpu", 1024, 1024, jnp.bfloat16, 64, "blockwise"),  # ROCm: no cuDNN
    ],
)  # fmt: skip
def test_auto_picks_cudnn_on_nvidia_gpus_where_it_applies(
    platform, q_len, kv_len, dtype, head_dim, want
):
    got = A.resolve_impl("auto", q_len, kv_len, dtype=dtype, head_dim=head_dim, platform=platform)
    assert got == want
    assert A.resolve_impl("einsum", q_len, kv_len, dtype=dtype, platform=platform) == "einsum"
