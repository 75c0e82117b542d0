"""Position schemes (nn/positions.py): rotary against the RoFormer formula (NumPy, conftest)
and its relative property, sinusoidal layouts against the paper's table, learned and none,
T5's relative buckets and bias against a NumPy version written here.

Sizes: B=3 rows, T=5 tokens, 2 heads of H=10 (rotary), embedding width E=7.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.config import (
    LearnedPositions,
    NoPositions,
    RelativePositions,
    RotaryPositions,
    SinusoidalPositions,
)
from transformer_jax.nn.positions import (
    PositionEncoding,
    PositionScheme,
    relative_buckets,
    rotary_angles,
    sinusoidal_table,
)

B, T, HEADS, H, E, MAX_LEN = 3, 5, 2, 10, 7, 64
POSITIONS = np.array([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11], [40, 3, 0, 63, 12]])  # [B, T]


def _scheme(variant, head_dim=H):
    return PositionScheme(variant, features=E, max_len=MAX_LEN, head_dim=head_dim)


def _encode(variant, positions=POSITIONS, params=None, head_dim=H):
    scheme = _scheme(variant, head_dim)
    variables = scheme.init(jax.random.key(0), jnp.asarray(positions))
    if params is not None:
        variables = {"params": params}
    return scheme.apply(variables, jnp.asarray(positions)), variables.get("params", {})


def _x(seed, head_dim=H):
    return np.random.default_rng(seed).standard_normal((B, T, HEADS, head_dim)).astype(np.float32)


ROTARY_CASES = {
    "half-full": (RotaryPositions(), H),
    "interleaved-full": (RotaryPositions(layout="interleaved"), H),
    "half-partial": (RotaryPositions(rotary_dim=4, theta=500.0), H),
    "interleaved-partial": (RotaryPositions(rotary_dim=6, layout="interleaved"), H),
    "odd-head-partial": (RotaryPositions(rotary_dim=4), 7),
}


@pytest.mark.parametrize("case", list(ROTARY_CASES))
def test_rotary_matches_numpy(ref, case):
    variant, head_dim = ROTARY_CASES[case]
    encoding, params = _encode(variant, head_dim=head_dim)
    assert params == {}  # rotary has no parameters
    assert encoding.embedding is None and encoding.bias is None
    rdim = variant.rotary_dim or head_dim
    assert encoding.sin.shape == (B, T, rdim // 2) and encoding.layout == variant.layout
    x = _x(1, head_dim)
    got = np.asarray(jax.jit(lambda e, x: e.rotate(x))(encoding, x))
    want = ref.rotary(x.astype(np.float64), POSITIONS, variant.theta, rdim, variant.layout)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)
    np.testing.assert_array_equal(got[..., rdim:], x[..., rdim:])  # the rest passes through
    # A rotation: each row keeps its norm.
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), np.linalg.norm(x, axis=-1), 1e-5)


def _hf_rotate_half(x, pos, theta, rdim):
    """HF LLaMA / Mistral / Falcon, transcribed: emb = cat(freqs, freqs); x*cos +
    rotate_half(x)*sin with rotate_half(x) = cat(-x2, x1), on the first rdim dims."""
    inv_freq = 1.0 / theta ** (np.arange(0, rdim, 2) / rdim)
    freqs = pos[..., None] * inv_freq  # [B, T, R/2]
    emb = np.concatenate([freqs, freqs], -1)[:, :, None]  # [B, T, 1, R]
    xr = x[..., :rdim]
    rot = np.concatenate([-xr[..., rdim // 2 :], xr[..., : rdim // 2]], -1)
    return np.concatenate([xr * np.cos(emb) + rot * np.sin(emb), x[..., rdim:]], -1)


def _hf_rotate_every_two(x, pos, theta, rdim):
    """HF CodeGen / GPT-J, transcribed: sin, cos repeat_interleave'd by 2; x*cos +
    rotate_every_two(x)*sin with rotate_every_two = stack(-x[1::2], x[::2]) flattened."""
    inv_freq = 1.0 / theta ** (np.arange(0, rdim, 2) / rdim)
    angles = pos[..., None] * inv_freq  # [B, T, R/2]
    sin = np.repeat(np.sin(angles), 2, -1)[:, :, None]  # [B, T, 1, R]
    cos = np.repeat(np.cos(angles), 2, -1)[:, :, None]
    xr = x[..., :rdim]
    rot = np.stack([-xr[..., 1::2], xr[..., 0::2]], -1).reshape(xr.shape)
    return np.concatenate([xr * cos + rot * sin, x[..., rdim:]], -1)


@pytest.mark.parametrize(
    "layout, hf_form", [("half", _hf_rotate_half), ("interleaved", _hf_rotate_every_two)]
)
@pytest.mark.parametrize("rdim", [H, 4])
def test_rotary_matches_the_hf_formulas(layout, hf_form, rdim):
    # The layouts are named after the HF code they must match (LLaMA's rotate_half, CodeGen's
    # rotate_every_two), here as a second, differently written reference, full and partial.
    variant = RotaryPositions(rotary_dim=rdim, layout=layout, theta=500.0)
    x = _x(9)
    got = np.asarray(_encode(variant)[0].rotate(x))
    want = hf_form(x.astype(np.float64), POSITIONS, 500.0, rdim)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)


def test_rotary_layouts_differ_and_position_zero_is_identity():
    x = _x(2)
    half, _ = _encode(RotaryPositions())
    inter, _ = _encode(RotaryPositions(layout="interleaved"))
    a, b = np.asarray(half.rotate(x)), np.asarray(inter.rotate(x))
    assert np.abs(a - b).max() > 1e-2
    np.testing.assert_allclose(a[0, 0], x[0, 0], atol=1e-7)  # position 0: angle 0
    np.testing.assert_allclose(a[2, 2], x[2, 2], atol=1e-7)


def test_rotary_angles_formula():
    got = np.asarray(rotary_angles(jnp.asarray(POSITIONS), 6, 100.0))
    want = POSITIONS[..., None] * 100.0 ** (-np.arange(0, 6, 2) / 6.0)
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_rotary_scores_depend_only_on_distance(layout):
    # RoPE's point: <R(p) q, R(p') k> is a function of p - p'. Shifting every query and key
    # position by one offset leaves all scores unchanged; unrotated, this would be trivially
    # true, so also check that a different distance does change them.
    variant = RotaryPositions(rotary_dim=8, layout=layout)
    q, k = _x(3), _x(4)
    q_pos = np.array([[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [9, 2, 7, 5, 1]])
    k_pos = np.array([[4, 4, 0, 1, 2], [0, 0, 1, 5, 9], [3, 8, 8, 2, 6]])

    def scores(shift, k_extra=0):
        rq = _encode(variant, q_pos + shift)[0].rotate(q)
        rk = _encode(variant, k_pos + shift + k_extra)[0].rotate(k)
        return np.einsum("bthd,bshd->bhts", np.asarray(rq, np.float64), np.asarray(rk))

    base = scores(0)
    for shift in (1, 17, 40):
        np.testing.assert_allclose(scores(shift), base, rtol=1e-4, atol=1e-4)
    assert np.abs(scores(0, k_extra=1) - base).max() > 1e-2


@pytest.mark.parametrize("layout", ["interleaved", "halves"])
@pytest.mark.parametrize("width", [E, 8])
def test_sinusoidal_scheme_matches_the_paper_table(ref, layout, width):
    scheme = PositionScheme(
        SinusoidalPositions(layout), features=width, max_len=MAX_LEN, head_dim=H
    )
    assert scheme.init(jax.random.key(0), jnp.asarray(POSITIONS)) == {}  # nothing to learn
    encoding = scheme.apply({}, jnp.asarray(POSITIONS))
    assert encoding.sin is None and encoding.bias is None
    table = ref.sinusoid(MAX_LEN, width, layout)
    np.testing.assert_allclose(np.asarray(encoding.embedding), table[POSITIONS], atol=1e-6)
    np.testing.assert_allclose(sinusoidal_table(MAX_LEN, width, layout), table, atol=1e-6)


@pytest.mark.parametrize("offset", [0, 2])
def test_learned_positions_look_up_rows_after_the_offset(ref, offset):
    variant = LearnedPositions(offset=offset)
    _, params = _encode(variant)
    assert params["embedding"].shape == (MAX_LEN + offset, E)
    params = ref.random_params(params, seed=5)
    encoding, _ = _encode(variant, params=params)
    want = params["embedding"][POSITIONS + offset]
    np.testing.assert_array_equal(np.asarray(encoding.embedding), want)
    assert encoding.sin is None and encoding.bias is None
    x = _x(6)
    np.testing.assert_array_equal(np.asarray(encoding.rotate(x)), x)  # nothing rotates


def test_no_positions_contribute_nothing():
    encoding, params = _encode(NoPositions())
    assert params == {}
    assert encoding == PositionEncoding()
    x = _x(7)
    assert encoding.rotate(x) is x


def test_rotary_layer_matches_numpy(ref):
    # One decoder layer with rotary self-attention: queries and keys rotate, values do not.
    from transformer_jax import presets
    from transformer_jax.nn import blocks

    cfg = presets.get("gpt-tiny").replace(
        d_model=HEADS * H,
        attention={"num_heads": HEADS},
        ffn={"d_ff": 9},
        positions=RotaryPositions(rotary_dim=6, layout="interleaved"),
        dropout_rate=0.0,
    )
    layer = blocks.TransformerLayer.from_config(cfg)
    x = np.random.default_rng(8).standard_normal((B, T, HEADS * H)).astype(np.float32)
    mask = np.tril(np.ones((T, T), bool))[None, None]
    encoding, _ = _encode(cfg.positions)
    shapes = jax.eval_shape(lambda: layer.init(jax.random.key(0), x, mask)["params"])
    params = ref.random_params(shapes, seed=9, scale=0.3)
    # Jitted: one program instead of one per eager op and shape.
    apply = jax.jit(lambda p: layer.apply({"params": p}, x, jnp.asarray(mask), encoding=encoding))
    got, _ = apply(params)

    def rotate(t):
        return ref.rotary(t, POSITIONS, 10000.0, 6, "interleaved")

    want = ref.layer(cfg, ref.f64(params), x.astype(np.float64), mask, rotate=rotate)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
    unrotated = ref.layer(cfg, ref.f64(params), x.astype(np.float64), mask)
    assert np.abs(want - unrotated).max() > 1e-3


def np_buckets(relative, bidirectional, num_buckets, max_distance):
    """Mesh TensorFlow's _relative_position_bucket, one relative position at a time, with
    its float32 log and truncation toward zero."""
    out = np.zeros(relative.shape, np.int64)
    for idx, rel in np.ndenumerate(relative):
        n, bucket = num_buckets, 0
        if bidirectional:
            n //= 2
            bucket = n if rel > 0 else 0
            dist = abs(int(rel))
        else:
            dist = max(-int(rel), 0)
        exact = n // 2
        if dist < exact:
            out[idx] = bucket + dist
            continue
        f32 = np.float32
        log = np.log(f32(dist) / f32(exact)) / f32(np.log(max_distance / exact)) * f32(n - exact)
        out[idx] = bucket + min(exact + int(log), n - 1)
    return out


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (6, 9), (10, 20)])
def test_relative_buckets_match_numpy(bidirectional, num_buckets, max_distance):
    relative = np.arange(-300, 301)
    got = relative_buckets(
        jnp.asarray(relative),
        bidirectional=bidirectional,
        num_buckets=num_buckets,
        max_distance=max_distance,
    )
    want = np_buckets(relative, bidirectional, num_buckets, max_distance)
    np.testing.assert_array_equal(np.asarray(got), want)
    assert 0 <= want.min() and want.max() == num_buckets - 1
    if (num_buckets, max_distance) == (32, 128):  # T5's published buckets
        at = dict(zip(relative.tolist(), want.tolist(), strict=True))
        if bidirectional:  # 16 per direction, 8 exact: 8 + int(log(d / 8) / log(16) * 8)
            expected = {0: 0, -1: 1, -7: 7, -8: 8, -20: 10, -127: 15, -300: 15, 1: 17, 8: 24,
                        300: 31}  # fmt: skip
        else:  # 32 for the past, 16 exact: 16 + int(log(d / 16) / log(8) * 16); future: 0
            expected = {0: 0, -1: 1, -8: 8, -15: 15, -16: 16, -20: 17, -127: 31, -300: 31, 5: 0}
        assert {k: at[k] for k in expected} == expected


@pytest.mark.parametrize("causal", [False, True])
def test_relative_bias_is_the_table_at_each_pairs_bucket(causal):
    """The bias [B, N, T, S] at query positions against key positions (cache slots in
    decoding: rows at different absolute positions)."""
    variant = RelativePositions(num_buckets=8, max_distance=12)
    scheme = PositionScheme(
        variant, features=E, max_len=MAX_LEN, head_dim=H, num_heads=HEADS, causal=causal
    )
    keys = np.arange(16)[None]  # [1, S]
    variables = scheme.init(jax.random.key(0), jnp.asarray(POSITIONS), jnp.asarray(keys))
    table = np.asarray(variables["params"]["relative_bias"])  # [8, N]
    assert table.shape == (8, HEADS)
    enc = scheme.apply(variables, jnp.asarray(POSITIONS), jnp.asarray(keys))
    assert enc.embedding is None and enc.sin is None
    relative = keys[:, None, :] - POSITIONS[:, :, None]  # [B, T, S]
    want = table[np_buckets(relative, not causal, 8, 12)]  # [B, T, S, N]
    np.testing.assert_array_equal(np.asarray(enc.bias), want.transpose(0, 3, 1, 2))
