"""The model-free sampling loop and the token choice, driven by fake tokens_to_logits."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from transformer_jax.sampling import SamplingSettings, sample_loop

V = 7  # vocabulary of the fake models (distinct from batch and step counts)
FIXED_LOGITS = np.log(np.array([0.28, 0.2, 0.16, 0.13, 0.1, 0.08, 0.05]))  # [V], sorted


def fixed_logits_fn(tokens, positions, cache):
    """Ignores its input: the same distribution at every step. Counts calls in the cache."""
    batch = tokens.shape[0]
    logits = jnp.broadcast_to(jnp.asarray(FIXED_LOGITS, jnp.float32), (batch, 1, V))  # [B, 1, V]
    return logits, {"calls": cache["calls"] + 1}


@functools.cache
def draw_program(batch, steps):
    """One jitted loop per shape; the settings are an argument (their mode flags are static
    metadata, so each mode compiles once and temperature / top_p values never recompile)."""

    @jax.jit
    def run(settings, rng):
        logits = jnp.broadcast_to(jnp.asarray(FIXED_LOGITS, jnp.float32), (batch, V))  # [B, V]
        cache = {"calls": jnp.zeros((batch,), jnp.int32)}
        start = jnp.zeros((batch,), jnp.int32)
        return sample_loop(
            fixed_logits_fn, logits, cache, start, rng, settings, max_new_tokens=steps
        )

    return run


def draw(settings, *, batch, steps, seed=0):
    """[batch * steps] draws from FIXED_LOGITS through the loop (one jit per shape and mode)."""
    state = draw_program(batch, steps)(settings, jax.random.key(seed))
    assert int(state.step) == steps
    np.testing.assert_array_equal(state.cache["calls"], steps - 1)  # the last token is not fed
    return np.asarray(state.tokens).reshape(-1)  # [B * N]


def truncated_softmax(
    logits, temperature=1.0, top_k=0, top_p=1.0, vocab_limit=None, suppress_tokens=()
):
    """NumPy reference: vocab limit and banned ids, temperature, top-k, then nucleus;
    renormalised."""
    z = np.array(logits, np.float64)
    if vocab_limit is not None:
        z[vocab_limit:] = -np.inf
    z[list(suppress_tokens)] = -np.inf
    z = z / temperature
    order = np.argsort(-z, kind="stable")
    keep = np.zeros(len(z), bool)
    keep[order[: top_k or len(z)]] = True
    z[~keep] = -np.inf
    p = np.exp(z - z.max())
    p /= p.sum()
    mass_before = np.cumsum(p[order]) - p[order]
    p[order[mass_before >= top_p]] = 0.0
    return p / p.sum()


# The shape of every draw below: the tests share the compiled loop of each sampling mode.
DRAWS = dict(batch=4000, steps=5)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(top_k=3),
        dict(top_p=0.6),
        dict(temperature=0.5),
        dict(temperature=2.0),
        dict(temperature=0.7, top_k=5, top_p=0.8),
        dict(vocab_limit=4),
        dict(top_k=3, suppress_tokens=(0, 2)),  # HF's suppress_tokens / bad_words_ids
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_draw_frequencies_match_truncated_softmax(kwargs):
    settings = SamplingSettings.create(vocab_size=V, **kwargs)
    tokens = draw(settings, **DRAWS)  # 20k draws
    expected = truncated_softmax(FIXED_LOGITS, **kwargs)  # [V]
    counts = np.bincount(tokens, minlength=V)
    kept = expected > 0
    assert counts[~kept].sum() == 0, f"drew truncated ids: {counts}"
    assert kept.sum() >= 2
    result = stats.chisquare(counts[kept], expected[kept] * len(tokens))
    assert result.pvalue > 1e-3, (counts, expected * len(tokens))


def test_top_k_one_and_temperature_zero_are_argmax():
    for settings in (
        SamplingSettings.create(vocab_size=V, temperature=0.0),
        SamplingSettings.create(vocab_size=V, top_k=1, temperature=3.0),
        SamplingSettings.create(vocab_size=V, top_p=0.01),
    ):
        np.testing.assert_array_equal(draw(settings, batch=3, steps=4), 0)
    banned = SamplingSettings.create(vocab_size=V, temperature=0.0, suppress_tokens=[0, 0])
    assert banned.suppress == (0,)
    np.testing.assert_array_equal(draw(banned, batch=3, steps=4), 1)  # the argmax is banned


def test_same_rng_same_draws_and_new_rng_new_draws():
    settings = SamplingSettings.create(vocab_size=V, temperature=1.0)
    a, b = draw(settings, **DRAWS, seed=3), draw(settings, **DRAWS, seed=3)
    np.testing.assert_array_equal(a, b)
    assert (a != draw(settings, **DRAWS, seed=4)).any()


EOS, PAD = 5, 6


def countdown_fn(tokens, positions, cache):
    """Greedy-deterministic fake: emits token 1 until position 4, then EOS (5)."""
    logits = jnp.where(
        positions[:, :, None] + 1 >= 4, jax.nn.one_hot(EOS, V), jax.nn.one_hot(1, V)
    )  # [B, 1, V]: the logits predict the token at position + 1
    return logits * 10.0, {"calls": cache["calls"] + 1}


def test_eos_stops_rows_pads_after_and_exits_loop_early():
    # Rows start at positions 1, 2, 3: their EOS lands at position 4, i.e. after 4, 3, 2 tokens.
    start = jnp.array([1, 2, 3])  # [B]
    first = jax.nn.one_hot(jnp.where(start >= 4, EOS, 1), V) * 10.0  # [B, V]
    cache = {"calls": jnp.zeros((3,), jnp.int32)}
    settings = SamplingSettings.create(vocab_size=V, temperature=0.0)
    state = jax.jit(
        lambda c: sample_loop(
            countdown_fn,
            first,
            c,
            start,
            jax.random.key(0),
            settings,
            max_new_tokens=10,
            eos_id=EOS,
            pad_id=PAD,
        )
    )(cache)
    np.testing.assert_array_equal(
        state.tokens,
        [
            [1, 1, 1, EOS, PAD, PAD, PAD, PAD, PAD, PAD],
            [1, 1, EOS, PAD, PAD, PAD, PAD, PAD, PAD, PAD],
            [1, EOS, PAD, PAD, PAD, PAD, PAD, PAD, PAD, PAD],
        ],
    )
    np.testing.assert_array_equal(state.lengths, [4, 3, 2])
    assert int(state.step) == 4  # stopped after 4 of 10 steps
    np.testing.assert_array_equal(state.cache["calls"], 3)  # 3 model calls, not 9


def test_settings_validation_messages():
    with pytest.raises(ValueError, match="temperature=-0.5"):
        SamplingSettings.create(vocab_size=V, temperature=-0.5)
    with pytest.raises(ValueError, match="top_k=-1"):
        SamplingSettings.create(vocab_size=V, top_k=-1)
    for top_p in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=f"top_p={top_p}"):
            SamplingSettings.create(vocab_size=V, top_p=top_p)
    with pytest.raises(ValueError, match=r"vocab_limit=8 must be in \[1, vocab_size=7\]"):
        SamplingSettings.create(vocab_size=V, vocab_limit=8)
    with pytest.raises(ValueError, match=r"suppress_tokens=\[7\] must be token ids in \[0, vo"):
        SamplingSettings.create(vocab_size=V, suppress_tokens=[7])
    # Mode flags are static metadata, values are traced leaves.
    s = SamplingSettings.create(vocab_size=V, temperature=0.5, top_k=3, top_p=0.9)
    assert (s.greedy, s.top_k, s.nucleus) == (False, 3, True)
    assert len(jax.tree_util.tree_leaves(s)) == 2
