"""Attention maps: the weights MultiHeadAttention sows into `intermediates` equal a float64
NumPy recomputation (conftest's `ref`) for every layer of an encoder-decoder with grouped
key/value heads (encoder self-, decoder self- and cross-attention); a plain forward pass keeps
none; the PNG that sample.py --attention_png draws is a valid image of the expected size."""

import math
import struct

import jax
import matplotlib.image
import numpy as np
import pytest
from test_cli import OPTIONS, sample
from test_models import SEQ2SEQ_GQA, params_of

from transformer_jax import models
from transformer_jax.eval.attention import attention_weights


def _np_weights(ref, cfg, p, x, kv_x, mask):
    """softmax(q kᵀ · scale) over keys, [B, N, T, S]; query head n uses kv head n // (N/K)."""
    q = np.einsum("btd,dnh->btnh", x, p["query"]["kernel"]) + p["query"].get("bias", 0.0)
    k = np.einsum("bsd,dkh->bskh", kv_x, p["key"]["kernel"]) + p["key"].get("bias", 0.0)
    k = np.repeat(k, q.shape[2] // k.shape[2], axis=2)  # [B, S, N, H]
    scale = cfg.attention.scale or 1.0 / math.sqrt(q.shape[-1])
    logits = np.where(mask, np.einsum("btnh,bsnh->bnts", q, k) * scale, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    return w / w.sum(-1, keepdims=True)


def test_sown_weights_equal_numpy(ref):
    cfg = SEQ2SEQ_GQA  # pre-LN RMSNorm, 4 query heads on 2 kv heads; 1 encoder, 2 decoder layers
    assert cfg.norm.residual == "pre" and cfg.kv_heads == 2 and cfg.attention.num_heads == 4
    rng = np.random.default_rng(3)
    src = rng.integers(3, cfg.vocab_size, 5)  # S = 5 (no pad id 1)
    tgt = rng.integers(3, cfg.vocab_size, 7)  # T = 7
    params = params_of(cfg)
    maps = attention_weights(cfg, params, tgt, source=src)
    assert [(m.name, m.queries, m.keys) for m in maps] == [
        ("encoder/layer_0/self_attn", "source", "source"),
        ("decoder/layer_0/self_attn", "target", "target"),
        ("decoder/layer_0/cross_attn", "target", "source"),
        ("decoder/layer_1/self_attn", "target", "target"),
        ("decoder/layer_1/cross_attn", "target", "source"),
    ]
    got = {m.name: m.weights for m in maps}

    p = ref.f64(params)
    table = p["token_embed"]["embedding"]
    s_pos, t_pos = np.arange(5)[None], np.arange(7)[None]
    full = np.ones((1, 1, 5, 5), bool)
    causal = np.tril(np.ones((7, 7), bool))[None, None]
    cross = np.ones((1, 1, 7, 5), bool)
    scale = cfg.attention.scale
    x = ref.embed(cfg, p["encoder"].get("embed", {}), table, src[None], s_pos)
    for i in range(cfg.num_layers):
        lp = p["encoder"][f"layer_{i}"]
        h = ref.norm(cfg, lp["self_attn_norm"], x)
        want = _np_weights(ref, cfg, lp["self_attn"], h, h, full)[0]
        np.testing.assert_allclose(got[f"encoder/layer_{i}/self_attn"], want, atol=2e-6)
        x = ref.layer(cfg, lp, x, full)
    enc = ref.norm(cfg, p["encoder"]["final_norm"], x)
    x = ref.embed(cfg, p["decoder"].get("embed", {}), table, tgt[None], t_pos)
    for i in range(cfg.decoder_layers):
        lp = p["decoder"][f"layer_{i}"]
        h = ref.norm(cfg, lp["self_attn_norm"], x)
        want = _np_weights(ref, cfg, lp["self_attn"], h, h, causal)[0]
        np.testing.assert_allclose(got[f"decoder/layer_{i}/self_attn"], want, atol=2e-6)
        after_self = x + ref.mha(lp["self_attn"], h, causal, None, scale)
        h = ref.norm(cfg, lp["cross_attn_norm"], after_self)
        want = _np_weights(ref, cfg, lp["cross_attn"], h, enc, cross)[0]
        np.testing.assert_allclose(got[f"decoder/layer_{i}/cross_attn"], want, atol=2e-6)
        x = ref.layer(cfg, lp, x, causal, enc, cross)

    # A scanned model (params stacked on a `layers` axis) gives the same per-layer maps.
    scanned = attention_weights(
        cfg.replace(scan_layers=True), models.stack_layers(params), tgt, source=src
    )
    assert [m.name for m in scanned] == [m.name for m in maps]
    for a, b in zip(scanned, maps, strict=True):
        np.testing.assert_array_equal(a.weights, b.weights)

    # Without a mutable `intermediates` collection nothing is kept: apply returns the logits.
    model = models.build(cfg)
    out = jax.jit(lambda p: model.apply({"params": p}, src[None], tgt[None]))(params)
    assert isinstance(out, jax.Array) and out.shape == (1, 7, cfg.vocab_size)


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])  # (width, height)


@pytest.mark.slow  # a trained workdir, a generate and an attention forward
def test_sample_draws_the_attention_png(workdirs, tmp_path):
    path = tmp_path / "attention.png"
    lines = sample.run(workdirs["transformer-tiny"], ["alpha bravo"], **OPTIONS,
                       attention_png=str(path))  # fmt: skip
    assert lines[-1] == f"# attention maps: {path}"
    # transformer-tiny: 2 encoder + 2 decoder layers of 4 heads -> 2 + 2 * 2 = 6 rows of 4
    # panels; the longest sequence (source "alpha bravo" + EOS, two words of the run's corpus,
    # or start + 5 new tokens) has at most 6 tokens, so each panel is the 2.2-inch minimum:
    # 4 * 2.2 + 1.6 inches wide, 6 * (2.2 + 0.9) + 0.6 high, at 100 dpi.
    assert _png_size(path) == (1040, 1920)
    image = matplotlib.image.imread(path)
    assert image.shape == (1920, 1040, 4) and image.std() > 0.1  # drawn, not blank
