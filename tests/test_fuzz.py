"""Property-based fuzzing with hypothesis (issue 14). Profiles in tests/conftest.py: the
default one is small and derandomized (a few seconds); `--hypothesis-profile=long` runs 20x
as many examples, randomized.

  * random valid decoder ModelConfigs build, run forward and backward with finite outputs,
    and cached decoding (one token at a time) equals the uncached forward;
  * random invalid ModelConfig changes raise ValueError and nothing else;
  * random byte strings (read as the data path reads files: UTF-8, invalid bytes -> U+FFFD)
    through every tokenizer: ids within the vocabulary and a str back; this library's
    sentencepiece model and GPT-2's byte-level BPE round-trip exactly;
  * random prompt batches (lengths, ids, bucket edges, max_new_tokens) through `generate`
    either work or raise ValueError before anything is compiled.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer_jax import hf, models, presets
from transformer_jax.config import ModelConfig
from transformer_jax.sampling import generate

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_fixtures")


def examples(n: int) -> int:
    """`n` examples under the default profile (max_examples 10), scaled with the profile."""
    return max(1, n * settings().max_examples // 10)


# ----------------------------------------------------------------------------- valid configs

V, T, B = 48, 6, 2  # vocabulary, sequence length, batch


def _random_params(cfg: ModelConfig, seed: int):
    """N(0, 0.1) float32 parameters of `cfg`'s shapes (no init program to compile)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda r: models.init_params(cfg, r), jax.random.key(0))
    return jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(np.float32), shapes)


@st.composite
def decoder_configs(draw) -> ModelConfig:
    heads = draw(st.sampled_from([1, 2, 4]))
    kv_heads = draw(st.sampled_from([k for k in (1, 2, 4) if heads % k == 0]))
    head_dim = draw(st.sampled_from([4, 8]))
    positions = draw(st.sampled_from(["learned", "sinusoidal", "rotary", "none"]))
    residual = draw(st.sampled_from(["pre", "post", "parallel"]))
    window = draw(st.sampled_from([None, 3]))
    overrides = {
        "vocab_size": V,
        "d_model": draw(st.sampled_from([16, 24])),
        "num_layers": draw(st.integers(1, 2)),
        "max_len": 16,
        "dropout_rate": 0.0,
        "pad_id": None,
        "attention": {
            "num_heads": heads,
            "num_kv_heads": kv_heads,
            "head_dim": head_dim,
            "qkv_bias": draw(st.booleans()),
            "pattern": ("local",) if window else ("global",),
            "window": window,
        },
        "ffn": {
            "d_ff": draw(st.sampled_from([16, 32])),
            "activation": draw(st.sampled_from(["relu", "gelu", "gelu_tanh", "silu"])),
            "gated": draw(st.booleans()),
        },
        "norm": {
            "kind": draw(st.sampled_from(["layernorm", "rmsnorm"])),
            "residual": residual,
            "final": residual != "post",
        },
        "positions": {"kind": positions},
        "output": {"tie": draw(st.booleans())},
    }
    return presets.get("gpt-tiny").override(overrides)


@settings(max_examples=examples(2))
@given(cfg=decoder_configs(), seed=st.integers(0, 2**16))
def test_random_valid_configs_forward_backward_and_cached_decoding(cfg, seed):
    model = models.build(cfg)
    params = _random_params(cfg, seed)
    tokens = np.random.default_rng(seed).integers(1, V, (B, T)).astype(np.int32)  # [B, T]

    def loss(p):
        logits = model.apply({"params": p}, tokens)  # [B, T, V]
        return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0]), logits

    (value, full), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    assert full.shape == (B, T, V) and np.isfinite(np.asarray(full)).all()
    assert np.isfinite(float(value))
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))

    decode = jax.jit(lambda p, ids, pos, c: model.apply({"params": p}, ids, pos, c,
                                                        method=type(model).decode))  # fmt: skip
    cache = models.init_cache(cfg, B, T + 2)  # slots past T stay unused
    got = []
    for t in range(T):  # one token at a time: one [B, 1] program
        pos = np.full((B, 1), t, np.int32)  # [B, 1]
        logits, cache = decode(params, tokens[:, t : t + 1], pos, cache)  # [B, 1, V]
        got.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(got, 1), np.asarray(full), atol=2e-5, rtol=2e-5)


# ----------------------------------------------------------------------------- invalid configs

BASE = presets.get("gpt-tiny")
NOT_INT = st.sampled_from([0, -1, -7, 2.5, "8", None, True])
INVALID_CHANGES = st.one_of(
    st.builds(lambda v: {"d_model": v}, NOT_INT),
    st.builds(lambda v: {"vocab_size": v}, NOT_INT),
    st.builds(lambda v: {"num_layers": v}, NOT_INT),
    st.builds(lambda v: {"max_len": v}, NOT_INT),
    st.builds(lambda v: {"attention": {"num_heads": v}}, st.sampled_from([0, -2, 3, 5, 7, "4"])),
    st.builds(lambda v: {"attention": {"num_kv_heads": v}}, st.sampled_from([0, 3, 8, -4])),
    st.builds(lambda v: {"dropout_rate": v}, st.sampled_from([-0.1, 1.0, 1.5, float("nan")])),
    st.builds(lambda v: {"ffn": {"activation": v}}, st.text(min_size=1, max_size=6)),
    st.builds(lambda v: {"norm": {"kind": v}}, st.text(min_size=1, max_size=6)),
    st.builds(lambda v: {"norm": {"residual": v}}, st.sampled_from(["mid", "", "PRE"])),
    st.builds(lambda v: {"positions": {"kind": v}}, st.sampled_from(["alibi", "", "xpos"])),
    st.builds(lambda v: {"dtype": v}, st.sampled_from(["float16", "int8", "", "f32"])),
    st.builds(lambda v: {"arch": v}, st.sampled_from(["decoder-only", "", "gpt"])),
    st.builds(lambda v: {"no_such_field": v}, st.integers()),
)
KNOWN_ACTIVATIONS = {"relu", "gelu", "gelu_tanh", "silu", "gelu_new"}


@settings(max_examples=examples(25))
@given(changes=INVALID_CHANGES)
def test_random_invalid_config_changes_raise_value_error_only(changes):
    inner = next(iter(changes.values()))
    if isinstance(inner, dict) and inner.get("activation") in KNOWN_ACTIVATIONS:
        return  # a valid activation name drawn by st.text
    if isinstance(inner, dict) and inner.get("kind") in ("layernorm", "rmsnorm"):
        return
    with pytest.raises(ValueError):
        BASE.override(changes)


# ----------------------------------------------------------------------------- tokenizers


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """Every tokenizer of the HF fixtures, and this library's sentencepiece model."""
    from transformer_jax.data import synthetic
    from transformer_jax.data import tokenizer as tok_lib

    rng = np.random.default_rng(0)
    corpus = [synthetic.code_document(rng) for _ in range(30)]
    path = os.path.join(tmp_path_factory.mktemp("fuzz_tok"), "tokenizer.model")
    out = {"own": tok_lib.train_tokenizer(corpus, 400, path)}
    for name in ("bart", "bert_mlm", "gpt2", "roberta", "spm"):
        out[name] = hf.load_tokenizer(os.path.join(FIXTURES, name))
    return out


LOSSLESS = ("own", "gpt2")  # a sentencepiece model with byte fallback; byte-level BPE


@settings(max_examples=examples(30))
@given(raw=st.binary(max_size=64))
def test_random_bytes_through_every_tokenizer(tokenizers, raw):
    text = raw.decode("utf-8", errors="replace")  # how the data path reads files
    for name, tok in tokenizers.items():
        try:
            ids = tok.encode(text)
        except ValueError:
            continue  # a clean refusal
        ids = list(ids)
        assert all(0 <= int(i) < tok.vocab_size for i in ids), name
        back = tok.decode(ids)
        assert isinstance(back, str), name
        if name in LOSSLESS:
            assert back == text, name


# ----------------------------------------------------------------------------- generate

GEN = presets.get("gpt-tiny").override(
    {"vocab_size": 40, "d_model": 16, "num_layers": 1, "max_len": 24, "dropout_rate": 0.0,
     "attention": {"num_heads": 2}, "ffn": {"d_ff": 32}}
)  # fmt: skip
_compiles: list[int] = []


def _count_compile(event: str, *args, **kwargs) -> None:
    if "compile" in event:
        _compiles.append(1)


jax.monitoring.register_event_duration_secs_listener(_count_compile)


@pytest.fixture(scope="module")
def gen_params():
    return _random_params(GEN, 0)


PROMPTS = st.lists(
    st.lists(st.integers(-2, GEN.vocab_size + 1), min_size=0, max_size=GEN.max_len + 2),
    min_size=0,
    max_size=3,
)
EDGE_LENGTHS = st.sampled_from([1, 7, 8, 9, 15, 16, 17, 23, 24, 25])  # bucket edges, max_len


@settings(max_examples=examples(3))
@given(
    prompts=st.one_of(PROMPTS, st.builds(lambda n: [[3] * n], EDGE_LENGTHS)),
    max_new_tokens=st.integers(-1, 10),
)
def test_random_prompt_batches_through_generate_work_or_raise_before_jit(
    gen_params, prompts, max_new_tokens
):
    del _compiles[:]
    try:
        tokens, lengths = generate(GEN, gen_params, prompts, max_new_tokens=max_new_tokens,
                                   temperature=0.0, eos_id=1)  # fmt: skip
    except ValueError:
        assert not _compiles  # refused on the host, before any program was compiled
        return
    assert max_new_tokens >= 1 and prompts and all(prompts)
    assert all(0 <= i < GEN.vocab_size for row in prompts for i in row)
    assert max(map(len, prompts)) + max_new_tokens <= GEN.max_len
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    assert tokens.shape == (len(prompts), max_new_tokens)
    assert ((tokens >= 0) & (tokens < GEN.vocab_size)).all()
    assert ((lengths >= 1) & (lengths <= max_new_tokens)).all()
