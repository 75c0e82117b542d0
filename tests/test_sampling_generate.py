"""generate / beam_search on real (tiny) models: cached == uncached, batching, EOS, checks,
recompiles."""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax import models, presets
from transformer_jax.sampling import (
    beam_search,
    cast_weights,
    decoder_only_fns,
    encoder_decoder_fns,
    generate,
)
from transformer_jax.sampling.inputs import bucket_length

# Larger init than the presets' 0.02 so that logits are far from uniform (no argmax near-ties).
GPT = presets.get("gpt-tiny").replace(pad_id=None, max_len=32, init_std=0.3)
# Pad id at the top of the vocabulary, excluded by vocab_limit: generation never emits it.
BART = presets.get("bart-tiny").replace(pad_id=511, max_len=32, init_std=0.3)
BOS, BART_LIMIT = 2, 511
PROMPTS = [[5, 17, 3], [9, 2, 44, 7, 101, 13, 8], [250]]  # mixed lengths: 3, 7, 1
SOURCES = [[5, 17, 3, 40], [9, 2, 44, 7, 101, 13, 8, 60, 61], [250]]


@pytest.fixture(scope="module")
def gpt_params():
    return models.init_params(GPT, jax.random.key(0))


@pytest.fixture(scope="module")
def bart_params():
    return models.init_params(BART, jax.random.key(1))


@functools.cache
def forward(config):
    """Uncached teacher-forced logits: (params, tokens) or (params, src, tgt) -> [B, T, V]."""
    model = models.build(config)
    return jax.jit(lambda p, *inputs: model.apply({"params": p}, *inputs))


# The uncached references run at a few fixed shapes, so that every test shares their compiled
# programs (init_std only sets the initial values: GPT_INIT and BART_INIT below run the same
# programs). Both decoders are causal: the positions before a prefix's end do not see what
# fills the rest of the buffer (zeros for GPT, whose pad_id is None; pads for BART).
BART_TGT = 6  # decoder buffer of the BART references: the longest decode here


def gpt_forward():
    return forward(GPT)


def bart_forward():
    return forward(BART)


def gpt_logits(params, seq):
    """Uncached logits [len(seq), V] of one sequence, run in the fixed [1, max_len] buffer."""
    buffer = np.zeros((1, GPT.max_len), np.int32)
    buffer[0, : len(seq)] = seq
    return np.asarray(gpt_forward()(params, buffer)[0, : len(seq)])


def uncached_greedy_gpt(params, prompt, steps):
    """Full forward over the whole sequence at every step (fixed buffer: one compile; the
    causal mask hides the unfilled tail), argmax at the last real position."""
    seq = np.zeros((1, GPT.max_len), np.int32)
    seq[0, : len(prompt)] = prompt
    n = len(prompt)
    for _ in range(steps):
        seq[0, n] = int(np.argmax(gpt_forward()(params, seq)[0, n - 1]))
        n += 1
    return seq[0, len(prompt) : n]


def uncached_greedy_bart(params, source, steps, eos_id=None):
    assert steps <= BART_TGT
    tgt = np.full((1, BART_TGT), BART.pad_id, np.int32)  # fixed width: one compile per source
    tgt[0, 0] = BOS
    out = []
    for t in range(steps):
        logits = np.asarray(bart_forward()(params, np.array([source], np.int32), tgt))
        out.append(int(np.argmax(logits[0, t, :BART_LIMIT])))
        if out[-1] == eos_id:
            break
        if t + 1 < steps:
            tgt[0, t + 1] = out[-1]
    return np.array(out)


# ---------------------------------------------------------------- cached == uncached logits
# The presets' own init (std 0.02): logits of order 0.1, where 1e-5 is a tight tolerance.
GPT_INIT, BART_INIT = GPT.replace(init_std=0.02), BART.replace(init_std=0.02)


def test_decoder_cached_logits_equal_full_forward_at_every_step():
    gpt_params = models.init_params(GPT_INIT, jax.random.key(2))
    prompts = [[5, 17, 3], [9, 2, 44, 7, 101, 13]]
    fed = np.array([[33, 7, 250, 4, 81], [12, 300, 6, 6, 90]], np.int32)  # [B, steps]
    prefill, step = decoder_only_fns(models.build(GPT_INIT), gpt_params)
    block = np.zeros((2, 8), np.int32)  # right-padded prompt block [B, P]
    for b, p in enumerate(prompts):
        block[b, : len(p)] = p
    lengths = np.array([len(p) for p in prompts], np.int32)
    cache = models.init_cache(GPT_INIT, 2, 8 + fed.shape[1])
    logits, cache = jax.jit(prefill)(block, lengths, cache)  # [B, V]
    got = [np.asarray(logits)]
    step = jax.jit(step)
    for t in range(fed.shape[1] - 1):
        logits, cache = step(fed[:, t : t + 1], (lengths + t)[:, None], cache)  # [B, 1, V]
        got.append(np.asarray(logits[:, 0]))
    got = np.stack(got, axis=1)  # [B, steps, V]
    for b, p in enumerate(prompts):
        full = gpt_logits(gpt_params, np.concatenate([p, fed[b]]))  # [T, V]
        want = full[len(p) - 1 : len(p) - 1 + fed.shape[1]]  # [steps, V]
        np.testing.assert_allclose(got[b], want, atol=1e-5, rtol=1e-5)


def test_encoder_decoder_cached_logits_equal_full_forward_at_every_step():
    bart_params = models.init_params(BART_INIT, jax.random.key(3))
    sources = SOURCES[:2]  # 4 and 9 tokens
    fed = np.array([[BOS, 33, 7, 250, 4], [BOS, 12, 300, 6, 90]], np.int32)  # [B, steps]
    src = np.full((2, 16), BART.pad_id, np.int32)  # [B, S] padded sources
    for b, s in enumerate(sources):
        src[b, : len(s)] = s
    prefill, step = encoder_decoder_fns(models.build(BART_INIT), bart_params, src)
    cache = models.init_cache(BART_INIT, 2, fed.shape[1])
    logits, cache = jax.jit(prefill)(fed[:, :1], np.ones(2, np.int32), cache)  # [B, V]
    assert "cross" in cache[0]  # cross K/V computed once, at the prefill
    got = [np.asarray(logits)]
    step = jax.jit(step)
    for t in range(1, fed.shape[1]):
        logits, cache = step(fed[:, t : t + 1], np.full((2, 1), t, np.int32), cache)
        got.append(np.asarray(logits[:, 0]))
    got = np.stack(got, axis=1)  # [B, steps, V]
    steps = fed.shape[1]
    for b, s in enumerate(sources):
        tgt = np.full((1, BART_TGT), BART.pad_id, np.int32)  # the causal prefix is `fed`
        tgt[0, :steps] = fed[b]
        want = bart_forward()(bart_params, np.array([s], np.int32), tgt)  # [1, BART_TGT, V]
        np.testing.assert_allclose(got[b], want[0, :steps], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------ greedy
def test_greedy_mixed_lengths_equal_uncached_loop_and_rows_alone(gpt_params):
    tokens, lengths = generate(GPT, gpt_params, PROMPTS, max_new_tokens=6, temperature=0.0)
    assert tokens.shape == (3, 6) and tokens.dtype == np.int32
    np.testing.assert_array_equal(lengths, 6)
    for b, prompt in enumerate(PROMPTS):
        np.testing.assert_array_equal(tokens[b], uncached_greedy_gpt(gpt_params, prompt, 6))
    alone, _ = generate(GPT, gpt_params, [PROMPTS[1]], max_new_tokens=6, temperature=0.0)
    np.testing.assert_array_equal(alone[0], tokens[1])
    # An array + lengths gives the same as the list of lists; top_k=1 sampling is greedy.
    block = np.zeros((3, 7), np.int32)
    for b, p in enumerate(PROMPTS):
        block[b, : len(p)] = p
    same, _ = generate(
        GPT, gpt_params, block, 5, lengths=[3, 7, 1], max_new_tokens=6, temperature=1.5, top_k=1
    )
    np.testing.assert_array_equal(same, tokens)


def test_exact_position_limit_boundary(gpt_params):
    prompt = list(range(1, 27))  # 26 + 6 == max_len 32: allowed
    tokens, _ = generate(GPT, gpt_params, [prompt], max_new_tokens=6, temperature=0.0)
    np.testing.assert_array_equal(tokens[0], uncached_greedy_gpt(gpt_params, prompt, 6))
    with pytest.raises(ValueError, match=r"26 tokens\) \+ max_new_tokens=7 = 33 exceeds"):
        generate(GPT, gpt_params, [prompt], max_new_tokens=7, temperature=0.0)


def test_eos_stops_rows_and_pads_after(gpt_params):
    free, _ = generate(GPT, gpt_params, PROMPTS, max_new_tokens=6, temperature=0.0)
    eos = int(free[0, 2])  # row 0 emits it at step 2; other rows wherever it appears
    tokens, lengths = generate(
        GPT, gpt_params, PROMPTS, max_new_tokens=6, temperature=0.0, eos_id=eos
    )
    for b in range(3):
        hits = np.flatnonzero(free[b] == eos)
        n = hits[0] + 1 if hits.size else 6
        assert lengths[b] == n
        np.testing.assert_array_equal(tokens[b, :n], free[b, :n])
        np.testing.assert_array_equal(tokens[b, n:], 0)  # pad_id None -> 0 after EOS
    assert lengths[0] == 3


def test_encoder_decoder_greedy_equals_uncached_loop(bart_params):
    eos = int(uncached_greedy_bart(bart_params, SOURCES[1], 6)[3])
    tokens, lengths = generate(
        BART,
        bart_params,
        SOURCES,
        max_new_tokens=6,
        temperature=0.0,
        bos_id=BOS,
        eos_id=eos,
        vocab_limit=BART_LIMIT,
    )
    assert lengths[1] <= 4
    for b, source in enumerate(SOURCES):
        want = uncached_greedy_bart(bart_params, source, 6, eos_id=eos)
        assert lengths[b] == len(want)
        np.testing.assert_array_equal(tokens[b, : len(want)], want)
        np.testing.assert_array_equal(tokens[b, len(want) :], BART.pad_id)


# ---------------------------------------------------------------------------- sampling
def test_sampling_same_rng_same_output_and_vocab_limit(gpt_params):
    kwargs = dict(max_new_tokens=8, temperature=5.0, vocab_limit=20)  # hot: spreads over 20 ids
    a, _ = generate(GPT, gpt_params, PROMPTS, jax.random.key(3), **kwargs)
    b, _ = generate(GPT, gpt_params, PROMPTS, jax.random.key(3), **kwargs)
    c, _ = generate(GPT, gpt_params, PROMPTS, jax.random.key(4), **kwargs)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    assert a.max() < 20 and c.max() < 20 and len(np.unique(np.concatenate([a, c]))) > 10


def test_same_bucket_does_not_recompile(gpt_params):
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    kwargs = dict(max_new_tokens=4, temperature=0.7, top_p=0.9)
    generate(GPT, gpt_params, [[1, 2, 3, 4, 5]], 0, **kwargs)  # warm-up (bucket 16)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        generate(GPT, gpt_params, [list(range(1, 12))], 1, **kwargs)  # length 11: bucket 16
        generate(GPT, gpt_params, [[7, 8]], 2, **{**kwargs, "temperature": 1.3, "top_p": 0.5})
        assert compiles == []
        generate(GPT, gpt_params, [list(range(1, 18))], 1, **kwargs)  # length 17: bucket 32
        assert len(compiles) >= 1
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert [bucket_length(n, 1024) for n in (1, 16, 17, 100, 1000)] == [16, 16, 32, 128, 1024]
    assert bucket_length(17, 20) == 20


# -------------------------------------------------------------------------- beam search
def test_beam_of_one_is_greedy_for_both_architectures(gpt_params, bart_params):
    greedy, _ = generate(GPT, gpt_params, PROMPTS, max_new_tokens=6, temperature=0.0)
    beam, lengths, scores = beam_search(GPT, gpt_params, PROMPTS, beam_size=1, max_new_tokens=6)
    np.testing.assert_array_equal(beam, greedy)
    np.testing.assert_array_equal(lengths, 6)
    assert scores.shape == (3,) and np.all(scores < 0)
    # BART (no EOS id): beam of one == cached greedy == the uncached greedy loop.
    kwargs = dict(max_new_tokens=5, bos_id=BOS, vocab_limit=BART_LIMIT)
    greedy, _ = generate(BART, bart_params, SOURCES, temperature=0.0, **kwargs)
    beam, _, _ = beam_search(BART, bart_params, SOURCES, beam_size=1, **kwargs)
    np.testing.assert_array_equal(beam, greedy)
    for b, source in enumerate(SOURCES):
        np.testing.assert_array_equal(beam[b], uncached_greedy_bart(bart_params, source, 5))


def bart_score(params, source, seq, alpha):
    """Uncached length-penalised log p(seq | source) (one teacher-forced pass)."""
    tgt = np.full((1, BART_TGT), BART.pad_id, np.int32)  # fixed width: one compile per source
    tgt[0, 0], tgt[0, 1 : len(seq)] = BOS, seq[:-1]
    logits = np.asarray(bart_forward()(params, np.array([source], np.int32), tgt))  # [1, T, V]
    z = logits[0, :, :BART_LIMIT].astype(np.float64)  # [T, V'] within the vocab limit
    z -= z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))  # [T, V']
    total = sum(logp[t, token] for t, token in enumerate(seq))
    return total / ((5 + len(seq)) / 6) ** alpha


def test_wider_beam_scores_match_uncached_beat_greedy_and_rows_are_independent(bart_params):
    greedy = uncached_greedy_bart(bart_params, SOURCES[0], 5)
    eos = int(greedy[2])  # so that row 0's greedy path ends at 3 tokens
    kwargs = dict(max_new_tokens=5, bos_id=BOS, vocab_limit=BART_LIMIT, alpha=0.6, eos_id=eos)
    tokens, lengths, scores = beam_search(BART, bart_params, SOURCES, beam_size=4, **kwargs)
    for b, source in enumerate(SOURCES):
        n = lengths[b]
        assert tokens[b, n - 1] == eos or n == 5
        np.testing.assert_array_equal(tokens[b, n:], BART.pad_id)
        np.testing.assert_allclose(
            scores[b], bart_score(bart_params, source, tokens[b, :n], 0.6), rtol=1e-4
        )
    assert scores[0] >= bart_score(bart_params, SOURCES[0], greedy[:3], 0.6) - 1e-5
    alone = beam_search(BART, bart_params, SOURCES[1:2], beam_size=4, **kwargs)
    np.testing.assert_array_equal(alone[0][0], tokens[1])
    np.testing.assert_allclose(alone[2][0], scores[1], rtol=1e-5)


# ------------------------------------------------------------------------ host checks
@pytest.mark.parametrize(
    "prompts, kwargs, message",
    [
        ([[]], {}, "prompt 0 is empty"),
        ([[1, 2], []], {}, "prompt 1 is empty"),
        ([], {}, "No prompts given"),
        ([list(range(1, 34))], {}, "prompt 0 has 33 tokens, more than .* max_len=32"),
        (
            [[1, 2]],
            dict(max_new_tokens=31),
            r"\(2 tokens\) \+ max_new_tokens=31 = 33 exceeds .*max_len=32",
        ),
        ([[1, 2]], dict(max_new_tokens=0), "max_new_tokens=0 must be a positive integer"),
        ([[1, 2]], dict(max_new_tokens=-3), "max_new_tokens=-3 must be a positive integer"),
        ([[1, 2]], dict(temperature=-1.0), r"temperature=-1.0 must be .* >= 0"),
        ([[1, 2]], dict(top_p=0.0), r"top_p=0.0 must be in \(0, 1\]"),
        ([[1, 2]], dict(top_p=1.01), r"top_p=1.01 must be in \(0, 1\]"),
        ([[1, 2]], dict(top_k=-2), "top_k=-2 must be an integer >= 0"),
        ([[1, 512]], {}, r"token id 512 at index 1, outside .*\[0, 512\)"),
        ([[-1, 5]], {}, r"token id -1 at index 0, outside"),
        ([[1, 2]], dict(eos_id=600), r"eos_id=600 must be a token id in \[0, vocab_size=512\)"),
        ([[1, 2]], dict(vocab_limit=600), r"vocab_limit=600 must be in \[1, vocab_size=512\]"),
        ([[1, 2]], dict(eos_id=50, vocab_limit=40), "eos_id=50 is >= vocab_limit=40"),
        ([[1.5, 2]], {}, "token ids must be integers"),
    ],
)
def test_generate_rejects_bad_arguments_before_jit(prompts, kwargs, message):
    kwargs = {"max_new_tokens": 4, "temperature": 0.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(GPT, None, prompts, **kwargs)  # params=None: fails before any tracing


def test_other_entry_point_checks():
    with pytest.raises(ValueError, match="needs bos_id"):
        generate(BART, None, [[1, 2]], max_new_tokens=3, temperature=0.0)
    with pytest.raises(ValueError, match="decoder start 0 .* max_new_tokens=32 = 33 exceeds"):
        generate(BART, None, [[1, 2]], max_new_tokens=32, temperature=0.0, bos_id=BOS)
    with pytest.raises(ValueError, match="needs an rng"):
        generate(GPT, None, [[1, 2]], max_new_tokens=3)
    with pytest.raises(ValueError, match="beam_size=0 must be a positive integer"):
        beam_search(GPT, None, [[1, 2]], beam_size=0, max_new_tokens=3)
    with pytest.raises(ValueError, match="Encoder-only models do not generate"):
        generate(presets.get("bert-tiny"), None, [[1, 2]], max_new_tokens=3, temperature=0.0)
    no_pad = BART.replace(pad_id=None)
    with pytest.raises(ValueError, match="pad_id is None so pads cannot be masked"):
        generate(no_pad, None, [[1, 2], [3]], max_new_tokens=3, temperature=0.0, bos_id=BOS)


def test_pad_id_is_never_generated_unless_it_is_eos():
    """A model that prefers its pad id above all: the sampler still never emits it (the
    uncached forward masks pad keys, so a generated pad would break cached == uncached)."""
    cfg = presets.get("gpt-tiny").replace(pad_id=0, max_len=32, output={"bias": True})
    params = models.init_params(cfg, jax.random.key(0))
    params = {**params, "logits_bias": params["logits_bias"].at[0].set(1e4)}
    tokens, lengths = generate(cfg, params, [[5, 6]], max_new_tokens=6, temperature=0.0)
    assert lengths[0] == 6 and 0 not in tokens[0].tolist()
    # With eos_id == pad_id the pad is the end-of-sequence token and may be produced.
    tokens, lengths = generate(cfg, params, [[5, 6]], max_new_tokens=6, temperature=0.0, eos_id=0)
    assert lengths[0] == 1 and tokens[0, 0] == 0


def test_prompt_holding_the_pad_id_is_rejected():
    cfg = presets.get("gpt-tiny").replace(pad_id=0, max_len=32)
    with pytest.raises(ValueError, match="prompt 1 holds the pad id 0 at index 2"):
        generate(cfg, None, [[5, 6], [7, 8, 0, 9]], max_new_tokens=2, temperature=0.0)


def test_bfloat16_weights_decode_the_rounded_model(gpt_params):
    """weights_dtype='bfloat16' stores every floating parameter in bfloat16 (half the bytes
    read per token): the tokens are exactly float32 greedy decoding of the bfloat16-rounded
    weights, and the logits stay within bfloat16 rounding of float32's (the tokens then follow
    float32's wherever the argmax margins exceed that rounding: here 15 of 18)."""
    half = cast_weights(gpt_params, "bfloat16")
    assert {leaf.dtype for leaf in jax.tree.leaves(half)} == {jnp.dtype(jnp.bfloat16)}
    rounded = jax.tree.map(lambda p: np.asarray(p).astype(np.float32), half)  # exact
    greedy = functools.partial(generate, GPT, prompts=PROMPTS, max_new_tokens=6, temperature=0.0)
    tokens, _ = greedy(params=gpt_params, weights_dtype="bfloat16")
    np.testing.assert_array_equal(tokens, greedy(params=rounded)[0])
    want, got = gpt_logits(gpt_params, PROMPTS[1]), gpt_logits(half, PROMPTS[1])  # [7, V]
    scale = float(np.max(np.abs(want)))
    np.testing.assert_allclose(got, want, atol=0.05 * scale)
    assert not np.array_equal(got, want)  # the weights did change
    with pytest.raises(ValueError, match="weights_dtype='float16'"):
        greedy(params=gpt_params, weights_dtype="float16")


def test_sampler_programs_use_region_based_copy_insertion_on_cpu():
    """On CPUs the sampler's programs compile with XLA:CPU's region-based copy insertion (the
    carried KV caches written in place; BENCHMARKS.md, issue 12). The probe that checks the
    installed XLA knows the option must succeed with the pinned jax: an empty answer here
    would silently drop the option."""
    module = importlib.import_module("transformer_jax.sampling.generate")
    assert jax.default_backend() == "cpu"
    assert dict(module._loop_compiler_options()) == module._CPU_LOOP_OPTIONS
