"""Attention: masks, dot-product attention (grouped heads), MultiHeadAttention, KV cache.

Sizes are distinct on every axis (B=3, T=4, S=5, N=6, H=7, K in {6, 2, 1}) so that a
transposed or mixed-up axis cannot pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.config import AttentionConfig, FeedForwardConfig, ModelConfig
from transformer_jax.nn import attention as A
from transformer_jax.nn.positions import PositionEncoding

B, T, S, N, H = 3, 4, 5, 6, 7
D = N * H  # 42


def _qkv(num_kv, q_len=T, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, q_len, N, H)).astype(np.float32)
    k = rng.standard_normal((B, S, num_kv, H)).astype(np.float32)
    v = rng.standard_normal((B, S, num_kv, H)).astype(np.float32)
    return q, k, v


# Every query row keeps at least one key (fully masked rows have their own test).
KEY_VALID = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 1, 1, 0]], bool)  # [B, S]
Q_SEG = np.array([[1, 1, 2, 2], [1, 2, 3, 3], [2, 2, 2, 1]])  # [B, T]
K_SEG = np.array([[1, 1, 1, 2, 2], [3, 2, 1, 1, 3], [1, 2, 2, 1, 0]])  # [B, S]
POSITIONS = np.array([[0, 1, 2, 3], [1, 2, 3, 4], [4, 4, 0, 2]])  # [B, T] query positions


def test_padding_mask():
    m = np.asarray(A.padding_mask(jnp.asarray(KEY_VALID)))
    assert m.shape == (B, 1, 1, S)
    np.testing.assert_array_equal(m[:, 0, 0], KEY_VALID)


def test_causal_mask():
    m = np.asarray(A.causal_mask(S))
    assert m.shape == (1, 1, S, S)
    expected = np.array([[j <= i for j in range(S)] for i in range(S)])
    np.testing.assert_array_equal(m[0, 0], expected)


def test_segment_mask():
    m = np.asarray(A.segment_mask(jnp.asarray(Q_SEG), jnp.asarray(K_SEG)))
    assert m.shape == (B, 1, T, S)
    for b in range(B):
        for t in range(T):
            for s in range(S):
                assert m[b, 0, t, s] == (Q_SEG[b, t] == K_SEG[b, s])


def test_cache_mask():
    m = np.asarray(A.cache_mask(jnp.asarray(POSITIONS), S))
    assert m.shape == (B, 1, T, S)
    for b in range(B):
        for t in range(T):
            np.testing.assert_array_equal(m[b, 0, t], np.arange(S) <= POSITIONS[b, t])


def test_combine_masks():
    assert A.combine_masks(None, None) is None
    pad = A.padding_mask(jnp.asarray(KEY_VALID))
    assert A.combine_masks(None, pad) is pad
    seg = A.segment_mask(jnp.asarray(Q_SEG), jnp.asarray(K_SEG))
    got = np.asarray(A.combine_masks(pad, None, seg))
    np.testing.assert_array_equal(got, KEY_VALID[:, None, None, :] & np.asarray(seg))


def _mask(kind):
    """(query length, mask) for each kind of mask the models build."""
    pad = KEY_VALID[:, None, None, :]
    seg = (Q_SEG[:, :, None] == K_SEG[:, None, :])[:, None]
    if kind == "none":
        return T, None
    if kind == "padding":
        return T, pad
    if kind == "segment":
        return T, seg
    if kind == "padding+segment":
        return T, pad & seg
    if kind == "cache":
        return T, (np.arange(S)[None, None, :] <= POSITIONS[:, :, None])[:, None]
    if kind == "causal+padding":  # self-attention: T == S
        return S, np.tril(np.ones((S, S), bool))[None, None] & pad
    raise AssertionError(kind)


@pytest.mark.parametrize("num_kv", [N, 2, 1], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize(
    "kind", ["none", "padding", "segment", "padding+segment", "cache", "causal+padding"]
)
def test_dot_product_attention_matches_numpy(ref, num_kv, kind):
    q_len, mask = _mask(kind)
    if mask is not None:
        assert mask.any(-1).all(), "test setup: no fully masked rows here"
    q, k, v = _qkv(num_kv, q_len)
    got = A.dot_product_attention(q, k, v, None if mask is None else jnp.asarray(mask))
    assert got.shape == (B, q_len, N, H) and got.dtype == jnp.float32
    want = ref.attention(*ref.f64((q, k, v)), mask)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_grouped_heads_use_kv_head_n_over_group_size():
    # With K=2 and N=6, query heads 0-2 read kv head 0 and heads 3-5 read kv head 1: zeroing
    # kv head 1 must zero the output of heads 3-5 only.
    q, k, v = _qkv(2)
    v[:, :, 1] = 0.0
    out = np.asarray(A.dot_product_attention(q, k, v))
    assert np.all(out[:, :, 3:] == 0.0)
    assert np.all(np.abs(out[:, :, :3]).sum(-1) > 0)


def test_dot_product_attention_rejects_ungroupable_heads():
    q, _, _ = _qkv(N)
    _, k, v = _qkv(4)
    with pytest.raises(ValueError, match="6 query heads cannot share 4"):
        A.dot_product_attention(q, k, v)


def test_fully_masked_rows_give_finite_values_and_gradients(ref):
    q, k, v = _qkv(2)
    mask = np.ones((B, 1, T, S), bool)
    mask[0, 0, 1] = False  # one query row of batch 0 sees nothing
    mask[2] = False  # every query row of batch 2 sees nothing
    mask[1, 0, :, 3:] = False
    m = jnp.asarray(mask)
    out = np.asarray(A.dot_product_attention(q, k, v, m))
    assert np.isfinite(out).all()
    # Rows that do have keys are untouched by their fully masked neighbours.
    want = ref.attention(*ref.f64((q, k, v)), mask)
    ok = mask.any(-1)[:, 0]  # [B, T]
    np.testing.assert_allclose(out[ok], want[ok], rtol=1e-5, atol=1e-5)

    def loss(q, k, v):
        return jnp.sum(A.dot_product_attention(q, k, v, m) ** 2)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)  # one program, not op by op
    for g in grads:
        assert np.isfinite(np.asarray(g)).all()


def test_bfloat16_inputs_compute_in_bfloat16_close_to_float32():
    q, k, v = _qkv(2)
    q16, k16, v16 = (jnp.asarray(a, jnp.bfloat16) for a in (q, k, v))
    mask = jnp.asarray(KEY_VALID[:, None, None, :])
    out16 = A.dot_product_attention(q16, k16, v16, mask)
    assert out16.dtype == jnp.bfloat16
    # The reference sees the same bf16-rounded inputs; what remains is bf16 rounding of the
    # products and the weights (8-bit mantissa, unit roundoff 2^-8 ~ 0.4%): a few roundoffs.
    out32 = A.dot_product_attention(*(a.astype(jnp.float32) for a in (q16, k16, v16)), mask)
    err = np.abs(np.asarray(out16, np.float32) - np.asarray(out32)).max()
    assert err < 4 * 2**-8 * np.abs(np.asarray(out32)).max()


@pytest.mark.parametrize("num_kv", [N, 2, 1], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("scale, bias_lead", [(None, 1), (1.0, None), (1.0, 1), (0.3, B)])
def test_attend_with_scale_and_bias_matches_numpy(ref, num_kv, scale, bias_lead):
    # scores = q.k * scale + bias (T5: scale 1, relative-position bias [1, N, T, S]).
    q, k, v = _qkv(num_kv, seed=8)
    mask = KEY_VALID[:, None, None, :] & (Q_SEG[:, :, None] == K_SEG[:, None, :])[:, None]
    bias = None
    if bias_lead is not None:
        bias = np.random.default_rng(9).standard_normal((bias_lead, N, T, S)).astype(np.float32)
    k_cache, v_cache = (np.swapaxes(a, 1, 2) for a in (k, v))  # [B, K, S, H]
    got = A.attend(q, k_cache, v_cache, jnp.asarray(mask), scale=scale, bias=bias)
    got2 = A.dot_product_attention(q, k, v, jnp.asarray(mask), scale=scale, bias=bias)
    want = ref.attention(*ref.f64((q, k, v)), mask, scale, None if bias is None else bias)
    assert got.shape == (B, T, N, H)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got2), want, rtol=1e-5, atol=1e-5)


def test_attention_scale_and_bias_are_live():
    # Contrast for the test above: a scale or a bias that were ignored would pass it only if
    # the reference ignored them too, so check that each moves the output.
    q, k, v = _qkv(2, seed=10)
    base = np.asarray(A.dot_product_attention(q, k, v))
    assert np.abs(np.asarray(A.dot_product_attention(q, k, v, scale=1.0)) - base).max() > 1e-2
    bias = np.random.default_rng(11).standard_normal((1, N, T, S)).astype(np.float32)
    assert np.abs(np.asarray(A.dot_product_attention(q, k, v, bias=bias)) - base).max() > 1e-2
    # A bias constant along the keys changes nothing (softmax is shift invariant).
    flat = np.broadcast_to(bias[..., :1], bias.shape)
    got = np.asarray(A.dot_product_attention(q, k, v, bias=flat))
    np.testing.assert_allclose(got, base, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window", [1, 2, 3, 7])
def test_window_mask_property(window):
    q_pos = np.array([[0, 1, 2, 3], [5, 6, 7, 8], [4, 4, 0, 9]])  # [B, T]
    k_pos = np.arange(10)[None]  # [1, 10], the cache slots
    m = np.asarray(A.window_mask(jnp.asarray(q_pos), jnp.asarray(k_pos), window))
    assert m.shape == (B, 1, T, 10) and m.dtype == bool
    for b in range(B):
        for t in range(T):
            for j, kp in enumerate(k_pos[0]):
                assert m[b, 0, t, j] == (q_pos[b, t] - window < kp), (b, t, kp)
    # With the causal mask, each query sees exactly min(window, q + 1) keys: itself and the
    # window - 1 before it.
    causal = k_pos[0][None, None, :] <= q_pos[:, :, None]
    seen = (m[:, 0] & causal).sum(-1)
    np.testing.assert_array_equal(seen, np.minimum(window, q_pos + 1))


# ------------------------------------------------------------------- MultiHeadAttention
def _config(attention=None, **overrides):
    """An encoder-decoder config with N=6 heads of H=7 sharing 2 key/value heads; `attention`
    is a dict of changes to its attention group."""
    fields = dict(
        arch="encoder_decoder",
        vocab_size=11,
        d_model=D,
        num_layers=1,
        max_len=9,
        dropout_rate=0.0,
        attention=AttentionConfig(num_heads=N, num_kv_heads=2).replace(**(attention or {})),
        ffn=FeedForwardConfig(d_ff=13),
    )
    return ModelConfig(**{**fields, **overrides})


def _module(cfg):
    """MultiHeadAttention built from the config's attention group and numerics."""
    return A.MultiHeadAttention(
        cfg.attention,
        d_model=cfg.d_model,
        head_dim=cfg.head_dim,
        dtype=cfg.compute_dtype,
        init_std=cfg.init_std,
    )


def _mha_params(ref, cfg, x, seed=1):
    module = _module(cfg)
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), x, None)["params"])
    return module, ref.random_params(shapes, seed=seed, scale=0.3)


def _init_shapes(cfg, x):
    """The variables `init` creates, as shapes and dtypes (jax.eval_shape: nothing compiled)."""
    return jax.eval_shape(lambda: _module(cfg).init(jax.random.key(0), x, None))


def test_mha_param_shapes():
    cfg = _config()
    x = np.zeros((B, T, D), np.float32)
    params = _init_shapes(cfg, x)["params"]
    shapes = jax.tree.map(lambda a: a.shape, params)
    assert shapes == {
        "query": {"kernel": (D, N, H), "bias": (N, H)},
        "key": {"kernel": (D, 2, H), "bias": (2, H)},
        "value": {"kernel": (D, 2, H), "bias": (2, H)},
        "out": {"kernel": (N, H, D), "bias": (D,)},
    }
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(params))
    no_bias_cfg = _config(attention={"qkv_bias": False, "out_bias": False})
    no_bias = _init_shapes(no_bias_cfg, x)
    assert not [p for p in jax.tree_util.tree_leaves_with_path(no_bias) if "bias" in str(p[0])]
    # The two switches are independent: projections in, projection out.
    qkv_only = _init_shapes(_config(attention={"out_bias": False}), x)
    assert {k: set(v) for k, v in qkv_only["params"].items()} == {
        "query": {"kernel", "bias"},
        "key": {"kernel", "bias"},
        "value": {"kernel", "bias"},
        "out": {"kernel"},
    }
    out_only = _init_shapes(_config(attention={"qkv_bias": False}), x)
    assert {k: set(v) for k, v in out_only["params"].items()} == {
        "query": {"kernel"},
        "key": {"kernel"},
        "value": {"kernel"},
        "out": {"kernel", "bias"},
    }


@pytest.mark.parametrize("num_kv", [N, 2])
def test_mha_self_and_cross_attention_match_numpy(ref, num_kv):
    cfg = _config(attention={"num_kv_heads": num_kv})
    rng = np.random.default_rng(2)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    enc = rng.standard_normal((B, S, D)).astype(np.float32)
    module, params = _mha_params(ref, cfg, x)
    p64 = ref.f64(params)

    self_mask = np.tril(np.ones((T, T), bool))[None, None] & KEY_VALID[:, None, None, :T]
    out, kv = module.apply({"params": params}, x, jnp.asarray(self_mask))
    assert out.shape == (B, T, D) and kv.k.shape == (B, num_kv, T, H)  # cache layout
    want = ref.mha(p64, x.astype(np.float64), self_mask)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-4, atol=1e-4)

    cross_mask = KEY_VALID[:, None, None, :]
    kv = module.apply({"params": params}, enc, method=A.MultiHeadAttention.project_kv)
    assert kv.k.shape == (B, num_kv, S, H)
    out, _ = module.apply({"params": params}, x, jnp.asarray(cross_mask), kv=kv)
    want = ref.mha(p64, x.astype(np.float64), cross_mask, enc.astype(np.float64))
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-4, atol=1e-4)


def test_kv_cache_zeros_and_write():
    cfg = _config()
    cache = A.KVCache.zeros(cfg, B, S)
    assert cache.k.shape == (B, 2, S, H) and cache.k.dtype == jnp.float32
    assert not np.asarray(cache.k).any() and not np.asarray(cache.v).any()
    assert A.KVCache.zeros(cfg.replace(dtype="bfloat16"), B, S).v.dtype == jnp.bfloat16
    rng = np.random.default_rng(3)
    new_k = rng.standard_normal((B, 2, 2, H)).astype(np.float32)  # [B, K, T, H]
    new_v = rng.standard_normal((B, 2, 2, H)).astype(np.float32)
    index = np.array([0, 3, 1])
    out = cache.write(A.KVCache(k=jnp.asarray(new_k), v=jnp.asarray(new_v)), jnp.asarray(index))
    want_k = np.zeros((B, 2, S, H), np.float32)  # [B, K, S, H]
    want_v = np.zeros((B, 2, S, H), np.float32)
    for b, i in enumerate(index):
        want_k[b, :, i : i + 2] = new_k[b]
        want_v[b, :, i : i + 2] = new_v[b]
    np.testing.assert_array_equal(np.asarray(out.k), want_k)
    np.testing.assert_array_equal(np.asarray(out.v), want_v)


def test_mha_incremental_cache_equals_full_causal_attention(ref):
    cfg = _config()
    x = np.random.default_rng(4).standard_normal((B, T, D)).astype(np.float32)
    module, params = _mha_params(ref, cfg, x)
    # Jitted: one program per chunk width instead of one per eager op and shape.
    full, full_kv = jax.jit(lambda p, x: module.apply({"params": p}, x, A.causal_mask(T)))(
        params, x
    )

    @jax.jit
    def chunk(p, x, start, cache):
        positions = start + jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape[:2])  # [B, C]
        return module.apply(
            {"params": p},
            x,
            A.cache_mask(positions, S),
            cache=cache,
            cache_index=jnp.full((B,), start),
        )

    cache = A.KVCache.zeros(cfg, B, S)  # one slot more than needed: stale zeros stay hidden
    outs = []
    for start, stop in [(0, 2), (2, 3), (3, 4)]:
        out, cache = chunk(params, x[:, start:stop], np.int32(start), cache)
        outs.append(out)
    np.testing.assert_allclose(np.concatenate(outs, 1), full, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(cache.k[:, :, :T]), full_kv.k, rtol=1e-6, atol=1e-6)
    assert not np.asarray(cache.v[:, :, T:]).any()


@pytest.mark.parametrize("num_kv", [6, 2])
def test_attend_step_equals_attention_over_the_written_cache(ref, num_kv):
    """A decode step attends from the old cache plus the new key/value (attend_step): the
    float64 reference over the cache with the new key/value written in, for every row's own
    slot, a ragged mask, a score bias, and a row that sees no key (uniform weights over the
    written slots, as `attend` gives)."""
    rng = np.random.default_rng(7)
    q = rng.standard_normal((B, 1, N, H)).astype(np.float32)  # [B, 1, N, H]
    old_k, old_v, new_k, new_v = (
        rng.standard_normal(shape).astype(np.float32)
        for shape in [(B, num_kv, S, H)] * 2 + [(B, num_kv, 1, H)] * 2
    )  # [B, K, S, H] x2, [B, K, 1, H] x2
    slot = np.array([4, 0, 2])  # [B]
    bias = rng.standard_normal((1, N, 1, S)).astype(np.float32)
    mask = np.ones((B, 1, 1, S), bool)
    mask[0, ..., 1:3] = False  # row 0: some slots hidden, its own slot visible
    mask[2] = False  # row 2: no key at all
    got = A.attend_step(
        jnp.asarray(q),
        A.KVCache(k=jnp.asarray(old_k), v=jnp.asarray(old_v)),
        A.KVCache(k=jnp.asarray(new_k), v=jnp.asarray(new_v)),
        jnp.asarray(slot),
        jnp.asarray(mask),
        bias=jnp.asarray(bias),
    )
    k, v = old_k.astype(np.float64), old_v.astype(np.float64)
    for b, i in enumerate(slot):
        k[b, :, i], v[b, :, i] = new_k[b, :, 0], new_v[b, :, 0]
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, S, K, H]
    want = ref.attention(q.astype(np.float64), k, v, mask[:, :, :, :], bias=bias)
    assert got.shape == (B, 1, N, H)
    np.testing.assert_allclose(np.asarray(got[:2]), want[:2], rtol=1e-5, atol=1e-5)
    groups = N // num_kv
    mean_v = np.repeat(v[2].mean(0), groups, axis=0)  # [N, H]: row 2 averages its S slots
    np.testing.assert_allclose(np.asarray(got[2, 0]), mean_v, rtol=1e-5, atol=1e-5)
    # The einsum path over the written cache gives the same (what MultiHeadAttention did).
    written = A.KVCache(k=jnp.asarray(old_k), v=jnp.asarray(old_v)).write(
        A.KVCache(k=jnp.asarray(new_k), v=jnp.asarray(new_v)), jnp.asarray(slot)
    )
    same = A.attend(jnp.asarray(q), written.k, written.v, jnp.asarray(mask), bias=bias)
    np.testing.assert_allclose(np.asarray(got), np.asarray(same), rtol=1e-5, atol=1e-6)


def test_mha_cache_without_index_raises(ref):
    cfg = _config()
    x = jnp.zeros((B, 1, D))
    module, params = _mha_params(ref, cfg, x)
    with pytest.raises(ValueError, match="cache_index"):
        module.apply({"params": params}, x, None, cache=A.KVCache.zeros(cfg, B, S))


def test_attention_dropout(ref):
    cfg = _config(attention={"dropout_rate": 0.5})
    x = np.random.default_rng(5).standard_normal((B, T, D)).astype(np.float32)
    module, params = _mha_params(ref, cfg, x)
    variables = {"params": params}
    plain = _module(cfg.replace(attention={"dropout_rate": 0.0}))
    base, _ = plain.apply(variables, x, None)
    det, _ = module.apply(variables, x, None)  # deterministic=True is the default
    np.testing.assert_array_equal(det, base)

    def dropped(seed):
        rngs = {"dropout": jax.random.key(seed)}
        return module.apply(variables, x, None, deterministic=False, rngs=rngs)[0]

    a, a2, b = dropped(0), dropped(0), dropped(1)
    np.testing.assert_array_equal(a, a2)
    assert np.abs(np.asarray(a) - base).max() > 1e-2
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-2


@pytest.mark.parametrize(
    "d_model, changes",
    [
        (11, dict(head_dim=H)),  # H=7 with D=11: head_dim is not d_model / num_heads
        (D, dict(head_dim=5, scale=0.25, num_kv_heads=3)),  # and a score scale of its own
        (D, dict(scale=1.0, qkv_bias=False)),  # T5's unscaled scores
    ],
    ids=["head_dim", "head_dim-scale-gqa", "scale-1"],
)
def test_mha_explicit_head_dim_and_scale_match_numpy(ref, d_model, changes):
    cfg = _config(attention=changes, d_model=d_model)
    head_dim = changes.get("head_dim", D // N)
    assert cfg.head_dim == head_dim
    rng = np.random.default_rng(12)
    x = rng.standard_normal((B, T, d_model)).astype(np.float32)
    module, params = _mha_params(ref, cfg, x)
    assert params["query"]["kernel"].shape == (d_model, N, head_dim)
    assert params["out"]["kernel"].shape == (N, head_dim, d_model)
    mask = np.tril(np.ones((T, T), bool))[None, None] & KEY_VALID[:, None, None, :T]
    out, kv = module.apply({"params": params}, x, jnp.asarray(mask))
    assert out.shape == (B, T, d_model) and kv.k.shape == (B, cfg.kv_heads, T, head_dim)
    want = ref.mha(ref.f64(params), x.astype(np.float64), mask, None, cfg.attention.scale)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-4, atol=1e-4)
    assert A.KVCache.zeros(cfg, B, S).k.shape == (B, cfg.kv_heads, S, head_dim)


def test_mha_adds_the_encoding_score_bias(ref):
    # A position scheme's additive bias reaches the scores of self-attention.
    cfg = _config()
    rng = np.random.default_rng(13)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    bias = rng.standard_normal((1, N, T, T)).astype(np.float32)
    module, params = _mha_params(ref, cfg, x)
    out, _ = module.apply({"params": params}, x, None, encoding=PositionEncoding(bias=bias))
    p, x64 = ref.f64(params), x.astype(np.float64)
    q = np.einsum("btd,dnh->btnh", x64, p["query"]["kernel"]) + p["query"]["bias"]
    k = np.einsum("bsd,dkh->bskh", x64, p["key"]["kernel"]) + p["key"]["bias"]
    v = np.einsum("bsd,dkh->bskh", x64, p["value"]["kernel"]) + p["value"]["bias"]
    o = ref.attention(q, k, v, None, None, bias.astype(np.float64))
    want = np.einsum("btnh,nhd->btd", o, p["out"]["kernel"]) + p["out"]["bias"]
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-4, atol=1e-4)
