"""Embeddings: the sinusoidal table against the paper's formula, InputEmbedding against NumPy."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.config import (
    AttentionConfig,
    FeedForwardConfig,
    LearnedPositions,
    ModelConfig,
    NoPositions,
    SinusoidalPositions,
)
from transformer_jax.nn.embeddings import InputEmbedding, sinusoidal_table, token_embed

B, T, D, V, MAX_LEN = 2, 5, 6, 11, 9


@pytest.mark.parametrize("d_model", [6, 7])  # even and odd widths
def test_sinusoidal_table_explicit_entries(d_model):
    table = sinusoidal_table(50, d_model)
    assert table.shape == (50, d_model) and table.dtype == np.float32
    # PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)).
    for pos in (0, 1, 7, 49):
        for i in range((d_model + 1) // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            assert table[pos, 2 * i] == pytest.approx(math.sin(angle), abs=1e-6)
            if 2 * i + 1 < d_model:
                assert table[pos, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-6)
    # A few hand-computed values: pos 1, column 0 is sin(1); column 1 is cos(1);
    # pos 7, column 2 is sin(7 / 10000^(2/d)).
    assert table[1, 0] == pytest.approx(0.8414709848, abs=1e-7)
    assert table[1, 1] == pytest.approx(0.5403023059, abs=1e-7)
    assert table[7, 2] == pytest.approx(math.sin(7 / 10000 ** (2 / d_model)), abs=1e-6)
    np.testing.assert_array_equal(table[0, 0::2], 0.0)
    np.testing.assert_array_equal(table[0, 1::2], 1.0)


def test_sinusoidal_table_matches_reference_loop(ref):
    np.testing.assert_allclose(sinusoidal_table(13, 9), ref.sinusoid(13, 9), atol=1e-6)


def _config(**changes):
    """An encoder of width D=6; groups change by dicts or objects, as in ModelConfig.replace."""
    base = ModelConfig(
        arch="encoder",
        vocab_size=V,
        d_model=D,
        num_layers=1,
        max_len=MAX_LEN,
        dropout_rate=0.0,
        attention=AttentionConfig(num_heads=2),
        ffn=FeedForwardConfig(d_ff=4),
    )
    return base.replace(**changes)


def _inputs(seed=0, width=D):
    rng = np.random.default_rng(seed)
    tok = rng.standard_normal((B, T, width)).astype(np.float32)
    positions = np.array([[0, 1, 2, 3, 4], [3, 4, 5, 0, 8]])  # [B, T]; 8 = max_len - 1
    types_ = np.array([[0, 0, 1, 1, 2], [2, 1, 0, 1, 0]])
    return tok, positions, types_


def _apply(ref, cfg, tok, positions, token_types=None, seed=1, **kwargs):
    module = InputEmbedding(cfg)
    shapes = jax.eval_shape(
        lambda: module.init(jax.random.key(0), tok, positions, token_types).get("params", {})
    )
    params = ref.random_params(shapes, seed=seed, scale=0.5)
    out, encoding = module.apply({"params": params}, tok, positions, token_types, **kwargs)
    assert encoding.sin is None and encoding.bias is None  # these schemes only add
    return out, params


CASES = {
    "paper": dict(positions=SinusoidalPositions(), embed={"scale": True}),
    "bert": dict(
        positions=LearnedPositions(),
        embed={"type_vocab_size": 3, "norm": True},
        norm={"eps": 1e-12},
    ),
    "bart": dict(positions=LearnedPositions(offset=2), embed={"norm": True}),
    "rms-none": dict(positions=NoPositions(), embed={"norm": True}, norm={"kind": "rmsnorm"}),
    "marian-halves": dict(positions=SinusoidalPositions(layout="halves"), embed={"scale": True}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_input_embedding_matches_numpy(ref, case):
    cfg = _config(**CASES[case])
    tok, positions, types_ = _inputs()
    token_types = types_ if cfg.embed.type_vocab_size else None
    out, params = _apply(ref, cfg, tok, positions, token_types)
    assert out.shape == (B, T, D) and out.dtype == jnp.float32
    table = tok.astype(np.float64)  # embed() looks rows up in an identity "table"
    ids = np.arange(B * T).reshape(B, T)
    want = ref.embed(cfg, ref.f64(params), table.reshape(B * T, D), ids, positions, token_types)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-5)
    if cfg.positions.kind == "learned":
        rows = MAX_LEN + cfg.positions.offset
        assert params["pos_embed"]["embedding"].shape == (rows, D)
    else:
        assert "pos_embed" not in params


def test_sinusoidal_embedding_explicit_value():
    # tok * sqrt(D) + PE: one entry by hand, PE(pos=3, 2i=2) = sin(3 / 10000^(2/6)).
    cfg = _config(positions=SinusoidalPositions(), embed={"scale": True})
    tok, positions, _ = _inputs()
    out, _ = InputEmbedding(cfg).apply({}, tok, positions)
    want = tok[1, 0, 2] * math.sqrt(D) + math.sin(3 / 10000 ** (2 / D))
    assert float(out[1, 0, 2]) == pytest.approx(want, abs=1e-5)


def test_token_types_default_to_type_zero(ref):
    cfg = _config(**CASES["bert"])
    tok, positions, _ = _inputs()
    implicit, params = _apply(ref, cfg, tok, positions, None)
    explicit, _ = InputEmbedding(cfg).apply(
        {"params": params}, tok, positions, np.zeros((B, T), int)
    )
    np.testing.assert_array_equal(implicit, explicit)


def test_token_types_without_type_vocab_raise():
    cfg = _config(positions=NoPositions())
    tok, positions, types_ = _inputs()
    with pytest.raises(ValueError, match="type_vocab_size"):
        InputEmbedding(cfg).init(jax.random.key(0), tok, positions, types_)


def test_embedding_dropout(ref):
    cfg = _config(positions=SinusoidalPositions(), dropout_rate=0.5)
    tok, positions, _ = _inputs()
    base = InputEmbedding(cfg).apply({}, tok, positions)[0]
    np.testing.assert_array_equal(base, InputEmbedding(cfg).apply({}, tok, positions)[0])

    def dropped(seed):
        return InputEmbedding(cfg).apply(
            {}, tok, positions, deterministic=False, rngs={"dropout": jax.random.key(seed)}
        )[0]

    a, b = np.asarray(dropped(0)), np.asarray(dropped(1))
    np.testing.assert_array_equal(a, dropped(0))
    kept = a != 0
    assert 0.2 < kept.mean() < 0.8 and (a != b).any()
    np.testing.assert_allclose(a[kept], 2.0 * np.asarray(base)[kept], rtol=1e-6)


def test_token_embed_table_and_bf16_lookup():
    cfg = _config()
    module = token_embed(cfg)
    ids = jnp.array([[3, 10, 0]])
    params = module.init(jax.random.key(0), ids)["params"]
    assert params["embedding"].shape == (V, D) and params["embedding"].dtype == jnp.float32
    std = float(np.std(params["embedding"]))
    assert 0.01 < std < 0.03  # init_std=0.02
    np.testing.assert_array_equal(
        module.apply({"params": params}, ids)[0], params["embedding"][ids[0]]
    )
    bf16 = token_embed(cfg.replace(dtype="bfloat16")).apply({"params": params}, ids)
    assert bf16.dtype == jnp.bfloat16


@pytest.mark.parametrize("d_model", [6, 7])
def test_sinusoidal_table_halves_layout(ref, d_model):
    # Marian's layout: sin of every frequency first, then cos; the same angles as the paper.
    table = sinusoidal_table(13, d_model, "halves")
    np.testing.assert_allclose(table, ref.sinusoid(13, d_model, "halves"), atol=1e-6)
    half = (d_model + 1) // 2
    paper = sinusoidal_table(13, d_model)
    np.testing.assert_array_equal(table[:, :half], paper[:, 0::2])  # the sin columns
    np.testing.assert_array_equal(table[:, half:], paper[:, 1::2])  # the cos columns
    with pytest.raises(ValueError, match="layout 'blocks'"):
        sinusoidal_table(3, d_model, "blocks")


@pytest.mark.parametrize(
    "changes",
    [
        dict(positions=LearnedPositions(offset=2), embed={"type_vocab_size": 2, "norm": True}),
        dict(positions=SinusoidalPositions(), embed={"scale": True}),
    ],
    ids=["albert", "sinusoidal"],
)
def test_factorised_embedding_matches_numpy(ref, changes):
    # ALBERT: tables of width E < D (tokens, positions, types, norm at E), then E -> D.
    E = 4
    changes = {**changes, "embed": {**changes["embed"], "size": E}}
    cfg = _config(**changes, heads={"mlm_transform": True})
    assert cfg.embed_size == E
    tok, positions, types_ = _inputs(width=E)
    token_types = np.minimum(types_, 1) if cfg.embed.type_vocab_size else None
    out, params = _apply(ref, cfg, tok, positions, token_types)
    assert out.shape == (B, T, D)
    assert params["embed_proj"]["kernel"].shape == (E, D)
    if cfg.positions.kind == "learned":
        assert params["pos_embed"]["embedding"].shape == (MAX_LEN + 2, E)
        assert params["type_embed"]["embedding"].shape == (2, E)
        assert params["embed_norm"]["scale"].shape == (E,)
    ids = np.arange(B * T).reshape(B, T)
    table = tok.astype(np.float64).reshape(B * T, E)
    want = ref.embed(cfg, ref.f64(params), table, ids, positions, token_types)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-5)


def test_embedding_without_factorisation_has_no_projection(ref):
    cfg = _config(embed={"size": D})  # E == D: nothing to project
    tok, positions, _ = _inputs()
    _, params = _apply(ref, cfg, tok, positions)
    assert "embed_proj" not in params
