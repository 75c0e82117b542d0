"""Blocks: norms, activations, feed-forward and one Transformer layer against NumPy.

Sizes: B=2, T=3, S=5, N=4 heads of H=5 (D=20), F=7.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax import models
from transformer_jax.config import AttentionConfig, FeedForwardConfig, ModelConfig
from transformer_jax.nn import blocks
from transformer_jax.nn.attention import KVCache, cache_mask, causal_mask, window_mask

B, T, S, N, H, F = 2, 3, 5, 4, 5, 7
D = N * H


def _config(**changes):
    """An encoder-decoder config of N=4 heads of H=5, F=7; groups change by dicts
    (`attention={"num_kv_heads": 2}`), as in ModelConfig.replace."""
    base = ModelConfig(
        arch="encoder_decoder",
        vocab_size=13,
        d_model=D,
        num_layers=1,
        max_len=11,
        dropout_rate=0.0,
        attention=AttentionConfig(num_heads=N),
        ffn=FeedForwardConfig(d_ff=F),
    )
    return base.replace(**changes)


def _layer(cfg, cross=False):
    return blocks.TransformerLayer.from_config(cfg, cross=cross)


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 2 + 0.5


def _init(ref, module, *args, seed=1, **kwargs):
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs)["params"])
    return ref.random_params(shapes, seed=seed, scale=0.3)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_norm_matches_formula(ref, norm):
    cfg = _config(norm={"kind": norm, "eps": 1e-3})  # a large eps, so that dropping it shows
    x = _x((B, T, D)) * 0.05
    module = blocks.make_norm(cfg.norm, cfg.compute_dtype, "n")
    params = _init(ref, module, x)
    names = {"layernorm": {"scale", "bias"}, "rmsnorm": {"scale"}}[norm]
    assert set(params) == names and params["scale"].shape == (D,)
    got = module.apply({"params": params}, x)
    x64, p64 = x.astype(np.float64), ref.f64(params)
    if norm == "layernorm":  # (x - mean) / sqrt(var + eps) * scale + bias
        mu = x64.mean(-1, keepdims=True)
        want = (x64 - mu) / np.sqrt(x64.var(-1, keepdims=True) + 1e-3) * p64["scale"]
        want = want + p64["bias"]
    else:  # x / sqrt(mean(x^2) + eps) * scale
        want = x64 / np.sqrt((x64**2).mean(-1, keepdims=True) + 1e-3) * p64["scale"]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_activations_match_formulas():
    xs = [-2.5, -0.3, 0.0, 0.7, 3.1]
    x = jnp.asarray(xs, jnp.float32)
    formulas = {
        "relu": lambda v: max(v, 0.0),
        "gelu": lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))),
        "gelu_tanh": lambda v: (
            0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))
        ),
        "silu": lambda v: v / (1 + math.exp(-v)),
    }
    assert set(blocks.ACTIVATIONS) == set(formulas)
    for name, f in formulas.items():
        got = np.asarray(blocks.ACTIVATIONS[name](x))
        np.testing.assert_allclose(got, [f(v) for v in xs], rtol=1e-6, atol=1e-6, err_msg=name)
    # The exact and tanh GELUs differ by more than the tolerance above: each name is its own.
    gap = blocks.ACTIVATIONS["gelu"](x) - blocks.ACTIVATIONS["gelu_tanh"](x)
    assert float(jnp.abs(gap).max()) > 1e-4


@pytest.mark.parametrize(
    "overrides",
    [
        dict(activation="relu"),
        dict(activation="gelu_tanh", bias=False),
        dict(activation="silu", gated=True),
    ],
    ids=["relu", "gelu_tanh-nobias", "silu-gated"],
)
def test_feed_forward_matches_numpy(ref, overrides):
    cfg = _config(ffn=overrides)
    x = _x((B, T, D))
    module = blocks.FeedForward(cfg.ffn, d_model=D)
    params = _init(ref, module, x)
    expected = {"wi", "wo"} | ({"wi_gate"} if cfg.ffn.gated else set())
    assert set(params) == expected
    assert params["wi"]["kernel"].shape == (D, F) and params["wo"]["kernel"].shape == (F, D)
    assert ("bias" in params["wi"]) == cfg.ffn.bias
    got = module.apply({"params": params}, x)
    want = ref.ffn(cfg, ref.f64(params), x.astype(np.float64))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def test_dense_bias_override():
    x = np.ones((1, D), np.float32)
    kw = dict(dtype=jnp.float32, init_std=0.02)

    def params(module):  # what init creates, as shapes (jax.eval_shape: nothing compiled)
        return jax.eval_shape(lambda: module.init(jax.random.key(0), x))["params"]

    with_bias = params(blocks.dense(3, "d", use_bias=True, **kw))
    without = params(blocks.dense(3, "d", use_bias=False, **kw))
    assert set(with_bias) == {"kernel", "bias"} and set(without) == {"kernel"}
    # Heads (pooler, transform, classifier) keep their bias when the layers have none.
    cfg = _config(attention={"qkv_bias": False, "out_bias": False}, ffn={"bias": False})
    head = params(models.dense(cfg, 3, "d"))
    assert set(head) == {"kernel", "bias"}


def test_gated_feed_forward_activates_wi_gate(ref):
    # The activated branch is `wi_gate` (HF gate_proj, T5 wi_0): with ReLU and a negative
    # pre-activation on the gate, the output is exactly the output bias; on `wi` it is not.
    cfg = _config(ffn={"activation": "relu", "gated": True})
    module = blocks.FeedForward(cfg.ffn, d_model=D)
    x = np.ones((1, 1, D), np.float32)
    params = jax.tree.map(np.asarray, _init(ref, module, x))
    params["wi_gate"]["kernel"][:] = -1.0  # gate pre-activation -D + bias < 0: relu -> 0
    params["wi_gate"]["bias"][:] = 0.0
    out = np.asarray(module.apply({"params": params}, x))
    np.testing.assert_allclose(out[0, 0], params["wo"]["bias"], rtol=1e-6, atol=1e-6)
    params["wi_gate"]["kernel"][:] = 1.0
    params["wi"]["kernel"][:] = -1.0
    params["wi"]["bias"][:] = 0.0
    out = np.asarray(module.apply({"params": params}, x))  # relu(D) * (-D): far from bias
    assert np.abs(out[0, 0] - params["wo"]["bias"]).max() > 1.0


LAYER_CASES = {
    "post-ln encoder": (dict(norm={"residual": "post"}, ffn={"activation": "gelu"}), False),
    "pre-ln encoder": (dict(norm={"residual": "pre"}, ffn={"activation": "gelu_tanh"}), False),
    "post-ln decoder": (dict(norm={"residual": "post"}), True),
    "pre-ln gqa-rms-gated decoder": (
        dict(
            norm={"residual": "pre", "kind": "rmsnorm"},
            attention={"num_kv_heads": 2},
            ffn={"gated": True, "activation": "silu"},
        ),
        True,
    ),
    "pre-ln scale-1 head_dim decoder": (
        dict(d_model=17, attention={"scale": 1.0, "head_dim": 6}, norm={"residual": "pre"}),
        True,
    ),
    "parallel 1 norm": (
        dict(arch="decoder", norm={"residual": "parallel", "parallel_norms": 1}),
        False,
    ),
    "parallel 2 norms rms": (
        dict(
            arch="decoder",
            norm={"residual": "parallel", "parallel_norms": 2, "kind": "rmsnorm"},
            attention={"num_kv_heads": 2, "qkv_bias": False},
        ),
        False,
    ),
}


@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_transformer_layer_matches_numpy(ref, case):
    overrides, cross = LAYER_CASES[case]
    cfg = _config(**overrides)
    d = cfg.d_model
    x, enc = _x((B, T, d), 2), _x((B, S, d), 3)
    key_valid = np.array([[1, 1, 0], [1, 1, 1]], bool)
    src_valid = np.array([[1, 1, 1, 1, 1], [1, 0, 1, 1, 0]], bool)
    mask = key_valid[:, None, None, :]
    if cross:
        mask = mask & np.tril(np.ones((T, T), bool))[None, None]
    cross_mask = src_valid[:, None, None, :] if cross else None
    module = _layer(cfg, cross=cross)
    kwargs = dict(encoded=enc, cross_mask=cross_mask) if cross else {}
    params = _init(ref, module, x, mask, **kwargs)
    expected = {"self_attn", "self_attn_norm", "ffn", "ffn_norm"}
    if cfg.norm.residual == "parallel" and cfg.norm.parallel_norms == 1:
        expected = expected - {"ffn_norm"}  # one norm serves both branches
    assert set(params) == expected | ({"cross_attn", "cross_attn_norm"} if cross else set())
    got, cache = module.apply({"params": params}, x, jnp.asarray(mask), **kwargs)
    assert cache is None
    want = ref.layer(
        cfg, ref.f64(params), x.astype(np.float64), mask, enc.astype(np.float64), cross_mask
    )
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("window", [1, 2])
def test_local_decoder_layer_matches_numpy(ref, window):
    # Sliding-window self-attention: causal AND q - window < k, as the stack builds it.
    cfg = _config(
        arch="decoder",
        num_layers=1,
        attention={"pattern": ("local",), "window": window},
        norm={"residual": "pre"},
    )
    x = _x((B, T, D), 8)
    positions = np.array([[0, 1, 2], [3, 4, 5]])  # [B, T]
    local = window_mask(jnp.asarray(positions), jnp.asarray(positions), window)
    mask = np.asarray(causal_mask(T)) & np.asarray(local)
    module = _layer(cfg)
    params = _init(ref, module, x, mask)
    got, _ = module.apply({"params": params}, x, jnp.asarray(mask))
    want_mask = np.tril(np.ones((T, T), bool))[None, None] & ref.local(positions, window)
    want = ref.layer(cfg, ref.f64(params), x.astype(np.float64), want_mask)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
    causal = np.tril(np.ones((T, T), bool))[None, None]
    full = ref.layer(cfg, ref.f64(params), x.astype(np.float64), causal)
    assert np.abs(want - full).max() > 1e-3  # the window hides keys that matter


def test_post_and_pre_ln_differ(ref):
    # Same parameters, different wiring: the outputs must differ (the switch is live).
    x = _x((B, T, D), 4)
    post = _layer(_config(norm={"residual": "post"}))
    pre = _layer(_config(norm={"residual": "pre"}))
    params = _init(ref, post, x, None)
    a = post.apply({"params": params}, x, None)[0]
    b = pre.apply({"params": params}, x, None)[0]
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-2
    # ... and so must parallel wiring with one and with two norms.
    outs = [a, b]
    for norms in (1, 2):
        cfg = _config(arch="decoder", norm={"residual": "parallel", "parallel_norms": norms})
        outs.append(_layer(cfg).apply({"params": params}, x, None)[0])
    for i in range(len(outs)):
        for j in range(i):
            assert np.abs(np.asarray(outs[i]) - np.asarray(outs[j])).max() > 1e-2, (i, j)


def test_decoder_layer_cache_and_errors(ref):
    cfg = _config(attention={"num_kv_heads": 2})
    caches = blocks.init_layer_caches(cfg, 3, B, S)
    assert len(caches) == 3 and all(set(c) == {"self"} for c in caches)
    assert caches[0]["self"].k.shape == (B, 2, S, H)
    x, enc = _x((B, T, D), 5), _x((B, S + 1, D), 6)
    module = _layer(cfg, cross=True)
    params = _init(ref, module, x, causal_mask(T), encoded=enc)
    variables = {"params": params}
    full, _ = module.apply(variables, x, causal_mask(T), encoded=enc)
    positions = jnp.broadcast_to(jnp.arange(T), (B, T))

    out, new = module.apply(
        variables,
        x,
        cache_mask(positions, S),
        encoded=enc,
        cache=caches[0],
        cache_index=jnp.zeros((B,), jnp.int32),
    )
    np.testing.assert_allclose(np.asarray(out), np.asarray(full), rtol=1e-5, atol=1e-5)
    assert set(new) == {"self", "cross"}
    assert new["cross"].k.shape == (B, 2, S + 1, H)
    # The cached cross keys/values replace `encoded` on later calls.
    again, _ = module.apply(
        variables,
        x,
        cache_mask(positions, S),
        cache={"self": caches[0]["self"], "cross": new["cross"]},
        cache_index=jnp.zeros((B,), jnp.int32),
    )
    np.testing.assert_allclose(np.asarray(again), np.asarray(out), rtol=1e-6, atol=1e-6)
    assert isinstance(new["self"], KVCache)
    with pytest.raises(ValueError, match="encoded"):
        module.apply(variables, x, causal_mask(T))


def test_residual_dropout(ref):
    cfg = _config(dropout_rate=0.3)
    x = _x((B, T, D), 7)
    module = _layer(cfg)
    params = _init(ref, module, x, None)
    variables = {"params": params}
    plain = _layer(cfg.replace(dropout_rate=0.0)).apply(variables, x, None)[0]
    # deterministic=True (the default) drops nothing.
    np.testing.assert_array_equal(module.apply(variables, x, None)[0], plain)

    def dropped(seed):
        rngs = {"dropout": jax.random.key(seed)}
        return np.asarray(module.apply(variables, x, None, deterministic=False, rngs=rngs)[0])

    a = dropped(0)
    np.testing.assert_array_equal(a, dropped(0))
    assert np.abs(a - np.asarray(plain)).max() > 1e-2
    assert np.abs(a - dropped(1)).max() > 1e-2
