"""The three models: exact values against NumPy, causality, padding invariance, packing,
cached == uncached decoding, gradients, bfloat16, dropout and input errors.

Configs are the `*-tiny` presets shrunk to distinct sizes (V=61, D=24, N=4 heads of H=6,
F=40, max_len=16; batch B=2, target/decoder length T=7, source length S=5), plus
family-switch variants. Parameters are random (norm scales and biases too), so that a
dropped bias or scale shows. Jitted functions are cached per (config, method): tests that
share a config and shapes share one compilation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax import models, presets
from transformer_jax.config import (
    NoPositions,
    RelativePositions,
    RotaryPositions,
    SinusoidalPositions,
)
from transformer_jax.migrate import PARAM_LAYOUT, migrate_paths

V, D, NH, F, MAX_LEN = 61, 24, 4, 40, 16
B, T, S = 2, 7, 5
SMALL = dict(vocab_size=V, d_model=D, num_layers=2, max_len=MAX_LEN, dropout_rate=0.0)


def small(name, **changes):
    """The preset shrunk to the sizes above (dropout off), then `changes`."""
    cfg = presets.get(name).replace(
        **SMALL, attention={"num_heads": NH, "dropout_rate": 0.0}, ffn={"d_ff": F}
    )
    return cfg.replace(**changes)


GPT = small("gpt-tiny", pad_id=2)  # pre-LN, learned positions, tied
BERT = small("bert-tiny", heads={"num_labels": 3})  # post-LN, token types, MLM + pooler
# Encoder-decoders: 1 encoder + 2 decoder layers, or 2 + 1, so that a swap shows.
BART = small("bart-tiny", num_layers=1, num_decoder_layers=2, positions={"offset": 2}, pad_id=1)
PAPER = small("transformer-tiny", num_decoder_layers=1, pad_id=3)  # sinusoidal
# Family switches the presets do not cover: pre-LN + RMSNorm + gated SiLU + grouped kv heads,
# without biases, untied output; decoder without positions, seq2seq with sinusoidal ones.
LLAMA = GPT.replace(
    attention={"num_kv_heads": 2, "qkv_bias": False, "out_bias": False},
    norm={"kind": "rmsnorm"},
    ffn={"gated": True, "activation": "silu", "bias": False},
    output={"tie": False},
    positions=NoPositions(),
)
SEQ2SEQ_GQA = BART.replace(
    attention={"num_kv_heads": 2},
    norm={"residual": "pre", "final": True, "kind": "rmsnorm"},
    ffn={"gated": True, "activation": "silu"},
    output={"tie": False, "bias": True},
    positions=SinusoidalPositions(),
)
# The seams of the grouped config: rotary positions (partial, "half" pairs) on the LLaMA-like
# decoder; GPT-NeoX-like parallel residual with two norms and interleaved rotary; sliding-
# window layers (window 3 < T) with 3 layers on 2 parameter sets; a T5-like seq2seq (score
# scale 1, no biases, no positions, hidden states scaled before the tied projection);
# ALBERT-like encoder: one layer shared by 3, factorised embeddings E=10 < D.
ROPE = LLAMA.replace(positions=RotaryPositions(rotary_dim=4))
NEOX = GPT.replace(
    positions=RotaryPositions(layout="interleaved", theta=100.0),
    norm={"residual": "parallel", "parallel_norms": 2},
)
WINDOW = GPT.replace(
    num_layers=3, layer_groups=2, attention={"pattern": ("local", "global", "local"), "window": 3}
)
T5ISH = BART.replace(
    attention={"scale": 1.0, "qkv_bias": False, "out_bias": False},
    ffn={"bias": False},
    norm={"kind": "rmsnorm", "residual": "pre", "final": True},
    output={"scale": D**-0.5},
    positions=NoPositions(),
)
ALBERT = BERT.replace(num_layers=3, layer_groups=1, embed={"size": 10})
# T5's relative bias (few buckets, so that T=7 reaches the log-spaced ones); cached decoding
# checks the bias at each row's absolute query position against the cache slots. Not in CONFIGS:
# conftest's NumPy reference has no relative bias (HF parity checks it: tests/test_hf.py).
T5REL = pytest.param(
    T5ISH.replace(positions=RelativePositions(num_buckets=6, max_distance=6)), id="t5-relative"
)

CONFIGS = {
    "gpt": GPT,
    "llama-gqa": LLAMA,
    "bert": BERT,
    "bart": BART,
    "paper": PAPER,
    "seq2seq-gqa": SEQ2SEQ_GQA,
    "rope": ROPE,
    "neox": NEOX,
    "window": WINDOW,
    "t5ish": T5ISH,
    "albert": ALBERT,
}


def test_legacy_flat_overrides_give_the_same_configs():
    # Recipes written for version 1 pass flat names; they must build the configs above.
    legacy = dict(
        vocab_size=V, d_model=D, num_heads=NH, d_ff=F, num_layers=2, max_len=MAX_LEN,
        dropout_rate=0.0, attention_dropout_rate=0.0,
    )  # fmt: skip
    assert presets.get("gpt-tiny", **legacy, pad_id=2) == GPT
    bart = presets.get(
        "bart-tiny", **{**legacy, "num_layers": 1}, num_decoder_layers=2, position_offset=2,
        pad_id=1,
    )  # fmt: skip
    assert bart == BART
    llama = GPT.override(
        dict(
            num_kv_heads=2, norm="rmsnorm", gated_ffn=True, activation="silu", use_bias=False,
            tie_embeddings=False, position="none",
        )
    )  # fmt: skip
    assert llama == LLAMA


def by_arch(*archs):
    return [pytest.param(c, id=n) for n, c in CONFIGS.items() if c.arch in archs]


def by_name(*names):
    return [pytest.param(CONFIGS[n], id=n) for n in names]


# ------------------------------------------------------------------------------ helpers
def tokens(cfg, shape, seed):
    """Random ids that are never the pad id."""
    ids = np.random.default_rng(seed).integers(0, cfg.vocab_size - 1, shape)
    if cfg.pad_id is not None:
        ids = ids + (ids >= cfg.pad_id)
    return ids.astype(np.int32)


def other_token(cfg, ids):
    """A different non-pad id for each entry."""
    new = (ids + 1) % cfg.vocab_size
    if cfg.pad_id is not None:
        new = np.where(new == cfg.pad_id, (new + 1) % cfg.vocab_size, new)
    return new.astype(np.int32)


def pad(cfg, ids, n):
    return np.concatenate([ids, np.full((ids.shape[0], n), cfg.pad_id, np.int32)], 1)


@functools.cache
def params_of(cfg):
    """Random float32 params of `cfg`'s shapes: norm scales 1 + 0.1 N(0, 1), every other
    leaf 0.1 N(0, 1). Equal shapes give equal params (one seed)."""
    shapes = jax.eval_shape(lambda r: models.init_params(cfg, r), jax.random.key(0))
    rng = np.random.default_rng(0)

    def leaf(path, x):
        base = 1.0 if path[-1].key == "scale" else 0.0
        # device_put: jnp.asarray of a NumPy array compiles a program per shape (jax 0.10).
        return jax.device_put(np.asarray(base + 0.1 * rng.standard_normal(x.shape), np.float32))

    return jax.tree_util.tree_map_with_path(leaf, shapes)


@functools.cache
def fn(cfg, method=None):
    """jit(model.apply) for `method`; one per (config, method), reused across tests."""
    model = models.build(cfg)
    meth = None if method is None else getattr(type(model), method)
    return jax.jit(lambda p, *args, **kw: model.apply({"params": p}, *args, method=meth, **kw))


def run(cfg, inputs, params=None, **kwargs):
    """Main output of a model: logits [B, T, V] (MLM logits for encoders)."""
    p = params_of(cfg) if params is None else params
    if cfg.arch == "encoder":
        return np.asarray(fn(cfg, "pretrain")(p, *inputs, **kwargs)[0])
    return np.asarray(fn(cfg)(p, *inputs, **kwargs))


def base_inputs(cfg, seed=0):
    """decoder: (tokens [B, T],); encoder: (tokens, token types); seq2seq: (src [B, S], tgt)."""
    if cfg.arch == "decoder":
        return (tokens(cfg, (B, T), seed),)
    if cfg.arch == "encoder":
        types_ = np.random.default_rng(seed + 1).integers(0, 2, (B, T)).astype(np.int32)
        return tokens(cfg, (B, T), seed), types_
    return tokens(cfg, (B, S), seed), tokens(cfg, (B, T), seed + 1)


def assert_close(a, b, tol=1e-5):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# ---------------------------------------------------------------- exact values vs NumPy
@pytest.mark.parametrize("cfg", by_arch("decoder", "encoder", "encoder_decoder"))
def test_forward_matches_numpy_reference(ref, cfg):
    inputs = list(base_inputs(cfg))
    inputs[-1] = inputs[-1].copy()
    if cfg.arch == "encoder":
        inputs[0] = inputs[0].copy()
        inputs[0][1, -2:] = cfg.pad_id  # padded keys, masked everywhere
    else:
        inputs[-1][1, -2:] = cfg.pad_id
        if cfg.arch == "encoder_decoder":
            inputs[0] = inputs[0].copy()
            inputs[0][0, -1] = cfg.pad_id
    p = params_of(cfg)
    if cfg.arch == "decoder":
        want = ref.decoder_only(cfg, p, inputs[0])
    elif cfg.arch == "encoder":
        want, want_cls = ref.encoder_only(cfg, p, *inputs)
        cls = np.asarray(fn(cfg, "pretrain")(p, *inputs)[1])
        assert cls.shape == (B, cfg.heads.num_labels) and cls.dtype == np.float32
        assert_close(cls, want_cls, 1e-4)
    else:
        want = ref.encoder_decoder(cfg, p, *inputs)
    got = run(cfg, inputs)
    assert got.shape == (B, T, V) and got.dtype == np.float32
    assert np.abs(want).max() > 0.1  # a meaningful scale for the tolerance below
    assert_close(got, want, 1e-4)


def test_encoder_methods_agree():
    cfg = BERT
    p, inputs = params_of(cfg), base_inputs(cfg)
    mlm, cls = fn(cfg, "pretrain")(p, *inputs)
    assert_close(np.asarray(fn(cfg)(p, *inputs)), np.asarray(mlm), 1e-6)
    assert_close(np.asarray(fn(cfg, "classify")(p, *inputs)), np.asarray(cls), 1e-6)


# ------------------------------------------------------------------ causality / context
@pytest.mark.parametrize("cfg", by_arch("decoder", "encoder_decoder"))
def test_decoder_is_causal(cfg):
    inputs = base_inputs(cfg)
    base = run(cfg, inputs)
    for t in range(T):
        tgt = inputs[-1].copy()
        tgt[:, t] = other_token(cfg, tgt[:, t])
        out = run(cfg, (*inputs[:-1], tgt))
        np.testing.assert_allclose(out[:, :t], base[:, :t], rtol=0, atol=1e-6)
        changed = np.abs(out - base).max(-1)  # [B, T]
        assert (changed[:, t:] > 1e-5).all(), f"changing token {t} must reach positions >= {t}"


@pytest.mark.parametrize("cfg", by_arch("encoder"))
def test_encoder_only_is_bidirectional(cfg):
    inputs = base_inputs(cfg)
    base = run(cfg, inputs)
    changed_tokens = inputs[0].copy()
    changed_tokens[:, T - 1] = other_token(cfg, changed_tokens[:, T - 1])
    out = run(cfg, (changed_tokens, inputs[1]))
    assert (np.abs(out - base).max(-1) > 1e-5).all()  # position 0 sees position T-1


@pytest.mark.parametrize("cfg", by_name("bart", "seq2seq-gqa"))
def test_seq2seq_encoder_is_bidirectional_and_cross_attention_sees_all_source(cfg):
    src, tgt = base_inputs(cfg)
    p = params_of(cfg)
    encoded = np.asarray(fn(cfg, "encode")(p, src))
    assert encoded.shape == (B, S, D)
    base = run(cfg, (src, tgt))
    src2 = src.copy()
    src2[:, S - 1] = other_token(cfg, src2[:, S - 1])
    encoded2 = np.asarray(fn(cfg, "encode")(p, src2))
    assert (np.abs(encoded2 - encoded).max(-1) > 1e-5).all()  # source 0 sees source S-1
    # Every target position, the first included, reads the whole source.
    assert (np.abs(run(cfg, (src2, tgt)) - base).max(-1) > 1e-5).all()


# -------------------------------------------------------------------- padding invariance
@pytest.mark.parametrize("cfg", by_arch("decoder", "encoder", "encoder_decoder"))
def test_appended_padding_changes_nothing(cfg):
    inputs = base_inputs(cfg)
    base = run(cfg, inputs)
    if cfg.arch == "encoder":
        padded = (pad(cfg, inputs[0], 3), np.pad(inputs[1], ((0, 0), (0, 3))))
        mlm, cls = fn(cfg, "pretrain")(params_of(cfg), *padded)
        assert_close(np.asarray(mlm)[:, :T], base)
        base_cls = fn(cfg, "pretrain")(params_of(cfg), *inputs)[1]
        assert_close(np.asarray(cls), np.asarray(base_cls))
        return
    padded = (*inputs[:-1], pad(cfg, inputs[-1], 3))
    if cfg.arch == "encoder_decoder":  # padded source: cross-attention must skip the pads
        padded = (pad(cfg, inputs[0], 4), padded[1])
    assert_close(run(cfg, padded)[:, :T], base)


def test_pad_id_is_what_is_masked():
    # Contrast for the test above: appending a non-pad token does change the encoder outputs.
    cfg = BERT
    toks, types_ = base_inputs(cfg)
    base = run(cfg, (toks, types_))
    extra = np.concatenate([toks, tokens(cfg, (B, 3), 9)], 1)
    out = run(cfg, (extra, np.pad(types_, ((0, 0), (0, 3)))))
    assert np.abs(out[:, :T] - base).max() > 1e-4


# ------------------------------------------------------------------------------ packing
def _packed_rows(cfg, len_a, len_b, seed):
    """Two sequences per row, then one pad: ids, segment ids, positions; and each alone
    (a batch of 2B rows of length max(len_a, len_b), padded)."""
    a, b = tokens(cfg, (B, len_a), seed), tokens(cfg, (B, len_b), seed + 1)
    packed = np.concatenate([a, b, np.full((B, 1), cfg.pad_id, np.int32)], 1)
    seg = np.array([1] * len_a + [2] * len_b + [0])
    pos = np.concatenate([np.arange(len_a), np.arange(len_b), [0]])
    width = max(len_a, len_b)
    alone = np.concatenate([pad(cfg, a, width - len_a), pad(cfg, b, width - len_b)], 0)
    bcast = lambda x: np.broadcast_to(x, packed.shape).astype(np.int32)
    return packed, bcast(seg), bcast(pos), alone


def _split(out, alone_out, len_a, len_b):
    """(packed a, a alone), (packed b, b alone)."""
    return (
        (out[:, :len_a], alone_out[:B, :len_a]),
        (out[:, len_a : len_a + len_b], alone_out[B:, :len_b]),
    )


@pytest.mark.parametrize("cfg", by_name("gpt", "bert", "rope", "window"))
def test_packed_rows_equal_separate_runs(cfg):
    packed, seg, pos, alone = _packed_rows(cfg, 3, 4, seed=5)
    extra = ()
    alone_extra = ()
    if cfg.arch == "encoder":
        rng = np.random.default_rng(7)
        types_a, types_b = rng.integers(0, 2, (B, 3)), rng.integers(0, 2, (B, 4))
        extra = (np.concatenate([types_a, types_b, np.zeros((B, 1), int)], 1).astype(np.int32),)
        alone_extra = (
            np.concatenate([np.pad(types_a, ((0, 0), (0, 1))), types_b]).astype(np.int32),
        )
    out = run(cfg, (packed, *extra), positions=pos, segment_ids=seg)
    alone_out = run(cfg, (alone, *alone_extra))
    assert np.isfinite(out).all()
    for got, want in _split(out, alone_out, 3, 4):
        assert_close(got, want)


@pytest.mark.parametrize("cfg", by_name("bart"))
def test_packed_seq2seq_equals_separate_runs(cfg):
    src, src_seg, src_pos, src_alone = _packed_rows(cfg, 3, 2, seed=11)
    tgt, tgt_seg, tgt_pos, tgt_alone = _packed_rows(cfg, 2, 4, seed=13)
    out = run(
        cfg,
        (src, tgt),
        src_positions=src_pos,
        src_segment_ids=src_seg,
        tgt_positions=tgt_pos,
        tgt_segment_ids=tgt_seg,
    )
    alone_out = run(cfg, (src_alone, tgt_alone))
    assert np.isfinite(out).all()  # the pad query sees no key at all: still no NaN
    for got, want in _split(out, alone_out, 2, 4):
        assert_close(got, want)


def test_segment_ids_on_one_side_only_raise():
    cfg = BART
    src, tgt = base_inputs(cfg)
    with pytest.raises(ValueError, match="both sides"):
        jax.eval_shape(
            lambda: models.build(cfg).apply(
                {"params": params_of(cfg)}, src, tgt, tgt_segment_ids=jnp.ones((B, T), int)
            )
        )


# ------------------------------------------------------------------------ cached decoding
CACHE_LEN = 8  # > T: the slot past the end stays stale and hidden
PROMPT = np.array([2, 4])  # row b's prompt length; rows decode at different positions


@pytest.mark.parametrize(
    "cfg",
    [*by_name("gpt", "llama-gqa", "bart", "seq2seq-gqa", "rope", "neox", "window"), T5REL],
)
def test_cached_decoding_equals_uncached(cfg):
    inputs = base_inputs(cfg)
    if cfg.arch == "encoder_decoder":
        inputs = (inputs[0].copy(), inputs[1])
        inputs[0][1, -2:] = cfg.pad_id  # cross-attention must mask the source pads here too
    full = run(cfg, inputs)
    p, seq = params_of(cfg), inputs[-1]
    width = PROMPT.max()
    # Prefill with a [B, 4] prompt; row 0's slots 2-3 get junk that later steps overwrite.
    prompt = seq[:, :width].copy()
    prompt[0, PROMPT[0] :] = other_token(cfg, prompt[0, PROMPT[0] :])
    positions = np.broadcast_to(np.arange(width), (B, width)).astype(np.int32)
    cache = models.init_cache(cfg, B, CACHE_LEN)
    if cfg.arch == "encoder_decoder":
        src = inputs[0]
        encoded = fn(cfg, "encode")(p, src)

    def step(ids, pos, cache):
        if cfg.arch == "decoder":
            return fn(cfg, "decode")(p, ids, pos, cache)
        # The first call projects the cross keys/values into the cache; later calls reuse them.
        enc = encoded if cache[0].get("cross") is None else None
        return fn(cfg, "decode")(p, ids, enc, src, positions=pos, cache=cache)

    logits, cache = step(prompt, positions, cache)
    for b in range(B):
        assert_close(np.asarray(logits)[b, : PROMPT[b]], full[b, : PROMPT[b]])
    for i in range(T - width):
        pos = (PROMPT + i)[:, None].astype(np.int32)  # [B, 1]
        ids = np.take_along_axis(seq, pos, 1)
        logits, cache = step(ids, pos, cache)
        want = full[np.arange(B), pos[:, 0]]
        assert_close(np.asarray(logits)[:, 0], want)
    k = cache[0]["self"].k
    assert k.shape == (B, cfg.kv_heads, CACHE_LEN, cfg.head_dim) and k.dtype == jnp.float32


def test_init_cache_layout_and_errors():
    cache = models.init_cache(BART, 3, 9)
    assert len(cache) == BART.decoder_layers == 2
    assert cache[1]["self"].v.shape == (3, NH, 9, D // NH)
    bf16 = models.init_cache(LLAMA.replace(dtype="bfloat16"), 1, 4)
    assert len(bf16) == 2 and bf16[0]["self"].k.dtype == jnp.bfloat16
    assert bf16[0]["self"].k.shape == (1, 2, 4, D // NH)
    with pytest.raises(ValueError, match="Encoder-only"):
        models.init_cache(BERT, 1, 4)
    ids = jnp.ones((B, 1), jnp.int32)
    three_layers = models.init_cache(GPT.replace(num_layers=3), B, 4)
    with pytest.raises(ValueError, match="Cache has 3 layers"):
        _trace(GPT, ids, ids, three_layers, method=models.DecoderOnly.decode)
    cache = models.init_cache(BART, B, 4)
    with pytest.raises(ValueError, match="positions"):
        _trace(BART, ids, None, ids, cache=cache, method=models.EncoderDecoder.decode)


# ---------------------------------------------------------------------------- gradients


def _loss_fn(cfg, batch, length):
    """A scalar that reads every output position, every vocab entry (and for BERT both
    heads) through fixed random weights."""
    model = models.build(cfg)
    rng = np.random.default_rng(3)
    w = jax.device_put(rng.standard_normal((batch, length, cfg.vocab_size)).astype(np.float32))
    if cfg.arch == "encoder":
        w_cls = rng.standard_normal((batch, cfg.heads.num_labels)).astype(np.float32)
        w_cls = jax.device_put(w_cls)

        def loss(p, *inputs):
            mlm, cls = model.apply({"params": p}, *inputs, method=models.EncoderOnly.pretrain)
            return jnp.sum(mlm * w) + jnp.sum(cls * w_cls)

        return loss
    return lambda p, *inputs: jnp.sum(model.apply({"params": p}, *inputs) * w)


# The four tiny presets (shrunk, dropout off) and the GQA + gated + RMSNorm decoder; one
# layer per stack is enough to reach every kind of parameter, and compiles faster.
@pytest.mark.parametrize(
    "cfg", [*by_name("gpt", "bert", "bart", "paper", "llama-gqa", "albert"), T5REL]
)
def test_every_parameter_gets_a_finite_nonzero_gradient(cfg):
    cfg = cfg.replace(num_layers=1, num_decoder_layers=1 if cfg.num_decoder_layers else None)
    params = params_of(cfg)
    inputs = base_inputs(cfg, seed=4)
    grads = jax.jit(jax.grad(_loss_fn(cfg, B, T)))(params, *inputs)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert jax.tree.map(jnp.shape, grads) == jax.tree.map(jnp.shape, params)
    flat = jax.tree_util.tree_leaves_with_path(jax.device_get(grads))  # NumPy: no compiles
    scale = max(float(np.abs(g).max()) for _, g in flat)
    for path, g in flat:
        name = jax.tree_util.keystr(path)
        assert g.dtype == np.float32 and np.isfinite(g).all(), name
        if name.endswith("['key']['bias']"):
            # Softmax is invariant to a per-query constant, and q·b_k is one: the key bias
            # gets an exactly-zero gradient in exact arithmetic.
            assert np.abs(g).max() < 1e-5 * scale, name
        else:
            assert np.abs(g).max() > 0, f"{name} gets no gradient"


# ----------------------------------------------------------------------------- bfloat16
@pytest.mark.parametrize("cfg", by_name("gpt", "bert", "bart", "paper"))
def test_bfloat16_compute_with_float32_params(cfg):
    bf16 = cfg.replace(dtype="bfloat16")
    shapes = jax.eval_shape(lambda r: models.init_params(bf16, r), jax.random.key(0))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(shapes))
    p = params_of(cfg)  # the SAME float32 params drive both
    inputs = base_inputs(cfg)
    want = run(cfg, inputs)
    if cfg.arch == "encoder":
        got = fn(bf16, "pretrain")(p, *inputs)[0]
    else:
        got = fn(bf16)(p, *inputs)
    assert got.dtype == jnp.float32  # logits come back as float32
    err = np.abs(np.asarray(got) - want).max() / np.abs(want).max()
    # bf16 keeps 8 significant bits: unit roundoff u = 2^-8 ~ 0.39%. Norms and softmax run
    # in float32, so the error is a few dozen bf16 roundings of matmul inputs/outputs that
    # mostly cancel (measured 0.4-0.7%, i.e. ~1-2 u); 2e-2 (~5 u) leaves margin, while a
    # real bug (wrong op, lost residual, bf16 softmax overflow) moves logits by O(10-100%).
    # err > 0 shows that bf16 is really used.
    assert 0 < err < 2e-2, err


# ------------------------------------------------------------------------------ dropout
def _dropout_fn(cfg):
    model = models.build(cfg)
    method = models.EncoderOnly.pretrain if cfg.arch == "encoder" else None

    @jax.jit
    def apply(p, seed, *inputs):
        out = model.apply(
            {"params": p},
            *inputs,
            method=method,
            deterministic=False,
            rngs={"dropout": jax.random.key(seed)},
        )
        return out[0] if cfg.arch == "encoder" else out

    return apply


@pytest.mark.parametrize(
    "cfg",
    [
        pytest.param(GPT.replace(dropout_rate=0.1, attention={"dropout_rate": 0.2}), id="gpt"),
        pytest.param(BART.replace(dropout_rate=0.1), id="bart"),
    ],
)
def test_dropout(cfg):
    # Residual/embedding dropout here; attention dropout alone: test_attention.py.
    base_cfg = cfg.replace(dropout_rate=0.0, attention={"dropout_rate": 0.0})
    p, inputs = params_of(base_cfg), base_inputs(cfg)
    base = run(base_cfg, inputs)
    apply = _dropout_fn(cfg)
    a, a2, b = (np.asarray(apply(p, s, *inputs)) for s in (0, 0, 1))
    np.testing.assert_array_equal(a, a2)  # same rng, same mask
    assert np.abs(a - base).max() > 1e-3 and np.abs(a - b).max() > 1e-3
    if cfg.arch == "decoder":  # deterministic (the default) drops nothing
        assert_close(run(cfg, inputs, params=p), base)


# ------------------------------------------------------------------------- input errors
def _trace(cfg, *inputs, method=None, **kwargs):
    model = models.build(cfg)
    params = params_of(cfg)  # outside the trace: the cache must never keep tracers
    return jax.eval_shape(lambda: model.apply({"params": params}, *inputs, method=method, **kwargs))


def test_inputs_longer_than_max_len_raise():
    long_ = np.ones((1, MAX_LEN + 1), np.int32)
    ok = np.ones((1, MAX_LEN), np.int32)
    assert _trace(GPT, ok).shape == (1, MAX_LEN, V)  # exactly max_len is fine
    cases = [
        (GPT, (long_,), None, "Input"),
        (BERT, (long_,), models.EncoderOnly.pretrain, "Input"),
        (BART, (long_, ok), None, "Source"),
        (PAPER, (ok, long_), None, "Target"),
    ]
    for cfg, inputs, method, what in cases:
        with pytest.raises(ValueError, match=f"{what} length 17 .*max_len=16"):
            _trace(cfg, *inputs, method=method)
    flat = np.ones(5, np.int32)  # one sequence without its batch axis
    for cfg, inputs, what in ((GPT, (flat,), "Input"), (BART, (flat, ok), "Source")):
        with pytest.raises(ValueError, match=rf"{what} tokens must be an int array \[batch, "
                           r"length\]; got shape \(5,\)\. .* tokens\[None\]"):  # fmt: skip
            _trace(cfg, *inputs)


def test_token_types_without_type_vocab_raise():
    cfg = BERT.replace(embed={"type_vocab_size": 0})
    toks, types_ = base_inputs(BERT)
    with pytest.raises(ValueError, match="type_vocab_size"):
        _trace(cfg, toks, types_, method=models.EncoderOnly.pretrain)


def test_classify_without_labels_and_bad_build_raise():
    cfg = BERT.replace(heads={"num_labels": 0})
    with pytest.raises(ValueError, match="num_labels"):
        _trace(cfg, *base_inputs(cfg), method=models.EncoderOnly.classify)
    with pytest.raises(TypeError, match="ModelConfig"):
        models.build(BERT.to_dict())


# ------------------------------------------------------------------------ shared layers
def test_shared_layers_have_one_parameter_set():
    shapes = jax.eval_shape(lambda r: models.init_params(ALBERT, r), jax.random.key(0))
    layers = sorted(k for k in shapes["encoder"] if k.startswith("layer_"))
    assert layers == ["layer_0"]
    unshared = ALBERT.replace(layer_groups=None)
    full = jax.eval_shape(lambda r: models.init_params(unshared, r), jax.random.key(0))
    per_layer = models.count_params(shapes["encoder"]["layer_0"])
    assert models.count_params(full) - models.count_params(shapes) == 2 * per_layer
    # 3 layers on 2 sets: depth i uses set floor(i * 2 / 3) = 0, 0, 1 (checked against the
    # reference's rule by test_forward_matches_numpy_reference[window]).
    window = jax.eval_shape(lambda r: models.init_params(WINDOW, r), jax.random.key(0))
    assert sorted(k for k in window["decoder"] if k.startswith("layer_")) == ["layer_0", "layer_1"]
    assert len(models.init_cache(WINDOW, 1, 4)) == 3  # one cache per depth, not per set


@pytest.mark.parametrize(
    "cfg", [pytest.param(GPT.replace(layer_groups=1), id="gpt"), *by_name("albert")]
)
def test_shared_layer_gradient_is_the_sum_of_per_use_gradients(cfg):
    # A model whose layers hold copies of one parameter set computes the same function; the
    # shared set's gradient is the sum of the copies' gradients (chain rule), summed here in
    # NumPy, and every other parameter's gradient is the same. A 2-layer decoder, and the
    # ALBERT-like encoder (3 uses of one layer, factorised embeddings, both heads).
    stack = "encoder" if cfg.arch == "encoder" else "decoder"
    uses = cfg.num_layers
    shared = params_of(cfg)
    assert sorted(k for k in shared[stack] if k.startswith("layer_")) == ["layer_0"]
    copies = {
        **shared,
        stack: {**shared[stack], **{f"layer_{i}": shared[stack]["layer_0"] for i in range(uses)}},
    }
    unshared_cfg = cfg.replace(layer_groups=None)
    inputs = base_inputs(cfg, seed=6)
    loss_shared, loss_copies = _loss_fn(cfg, B, T), _loss_fn(unshared_cfg, B, T)
    (v_shared, g_shared), (v_copies, g_copies) = jax.jit(
        lambda a, b, *x: (
            jax.value_and_grad(loss_shared)(a, *x),
            jax.value_and_grad(loss_copies)(b, *x),
        )
    )(shared, copies, *inputs)
    assert_close(np.asarray(v_shared), np.asarray(v_copies), 1e-5)
    layers = [jax.device_get(g_copies[stack].pop(f"layer_{i}")) for i in range(uses)]
    summed = jax.tree.map(lambda *g: np.sum(np.stack(g).astype(np.float64), axis=0), *layers)
    want = {**g_copies, stack: {**g_copies[stack], "layer_0": summed}}
    assert jax.tree.structure(g_shared) == jax.tree.structure(want)
    for (path, got), w in zip(
        jax.tree_util.tree_leaves_with_path(g_shared), jax.tree.leaves(want), strict=True
    ):
        tol = 1e-4 * max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=tol, err_msg=jax.tree_util.keystr(path))
    # Each use contributes: no single copy's gradient is the whole.
    for g in layers:
        assert np.abs(g["ffn"]["wo"]["kernel"] - summed["ffn"]["wo"]["kernel"]).max() > 1e-4


# ------------------------------------------------------------------------------ backbone
def test_backbone_params_and_features(ref):
    # init_params(heads=False) is what `features` reads: no MLM transform, logits bias,
    # classifier (encoder) or untied lm_head (decoder); the tied token table and the pooler
    # are part of the backbone. The heads applied (in NumPy) to the features give the
    # model's outputs.
    cfg = BERT
    full = params_of(cfg)
    backbone = jax.eval_shape(lambda r: models.init_params(cfg, r, heads=False), jax.random.key(0))
    assert set(full) - set(backbone) == {"mlm_transform", "mlm_norm", "logits_bias", "classifier"}
    assert {"pooler", "token_embed", "encoder"} <= set(backbone)
    toks, types_ = base_inputs(cfg)
    h, pooled = fn(cfg, "features")({k: full[k] for k in backbone}, toks, types_)
    assert h.shape == (B, T, D) and pooled.shape == (B, D)
    p, h64 = ref.f64(full), np.asarray(h, np.float64)
    assert_close(
        np.asarray(pooled), np.tanh(h64[:, 0] @ p["pooler"]["kernel"] + p["pooler"]["bias"])
    )
    mlm, cls = fn(cfg, "pretrain")(full, toks, types_)
    want_cls = np.asarray(pooled, np.float64) @ p["classifier"]["kernel"] + p["classifier"]["bias"]
    assert_close(np.asarray(cls), want_cls, 1e-4)
    t = ref.activations[cfg.ffn.activation](
        h64 @ p["mlm_transform"]["kernel"] + p["mlm_transform"]["bias"]
    )
    t = ref.norm(cfg, p["mlm_norm"], t)
    want_mlm = t @ p["token_embed"]["embedding"].T + p["logits_bias"]
    assert_close(np.asarray(mlm), want_mlm, 1e-4)

    cfg = LLAMA  # untied output
    full = params_of(cfg)
    backbone = jax.eval_shape(lambda r: models.init_params(cfg, r, heads=False), jax.random.key(0))
    assert set(full) - set(backbone) == {"lm_head"}
    toks = base_inputs(cfg)[0]
    h = np.asarray(fn(cfg, "features")({k: full[k] for k in backbone}, toks), np.float64)
    assert_close(run(cfg, (toks,)), h @ ref.f64(full["lm_head"])["kernel"], 1e-4)


# -------------------------------------------------------------------- parameter layouts
@pytest.mark.parametrize("cfg", by_name("llama-gqa", "bart", "bert"))
def test_layout_1_paths_migrate_to_the_current_tree(cfg):
    # Layout 1 (before the grouped config) named a gated FFN's linear branch `wi_gate` and
    # its activated one `wi`, and kept learned positions at <stack>/embed/pos_embed.
    shapes = jax.eval_shape(lambda r: models.init_params(cfg, r), jax.random.key(0))
    current = {
        "/".join(str(k.key) for k in path): leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)
    }
    swap = {"wi": "wi_gate", "wi_gate": "wi"} if cfg.ffn.gated else {}

    def layout_1(path):
        parts = path.split("/")
        return "/".join(swap.get(p, p) if parts[i - 1] == "ffn" else p for i, p in enumerate(parts))

    old = {"params/" + layout_1(k): k for k in current}
    if cfg.ffn.gated:
        assert "params/decoder/layer_0/ffn/wi/kernel" in old
        assert old["params/decoder/layer_0/ffn/wi/kernel"] == "decoder/layer_0/ffn/wi_gate/kernel"
    migrated = migrate_paths(old, 1)
    assert migrated == {"params/" + new: new for new in current}
    assert migrate_paths(migrated, PARAM_LAYOUT) == migrated  # current: unchanged


@pytest.mark.parametrize("cfg", [pytest.param(ALBERT.replace(num_layers=2), id="albert"), T5REL])
def test_eager_init_equals_one_jitted_program_bitwise(cfg):
    """init_params runs eagerly (lazy_init, one compiled program per parameter shape); under
    jit it is one program, as in mesh mode. The parameters are identical, bit for bit: a
    checkpoint, a seed or a resumed run means the same numbers in both modes."""
    eager = models.init_params(cfg, jax.random.key(3))
    jitted = jax.jit(lambda r: models.init_params(cfg, r))(jax.random.key(3))
    assert jax.tree.structure(eager) == jax.tree.structure(jitted)
    for (path, a), b in zip(
        jax.tree_util.tree_flatten_with_path(eager)[0], jax.tree.leaves(jitted), strict=True
    ):
        assert a.dtype == b.dtype and np.array_equal(a, b), jax.tree_util.keystr(path)
    assert len({float(np.std(x)) for x in jax.tree.leaves(eager) if x.ndim == 2}) > 3  # drawn
