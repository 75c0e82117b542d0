"""Beam search against brute force over every sequence of a tiny vocabulary (fake model)."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.sampling import beam_search_loop

V, EOS, PAD, N, SLOTS = 3, 0, 2, 5, 16  # vocabulary, end token, pad, new tokens, cache slots
RNG = np.random.default_rng(7)
BY_POSITION = RNG.normal(0, 1.5, (SLOTS, V, V)).astype(np.float32)  # [pos, last token, next]
BY_HISTORY = RNG.normal(0, 1.5, (V, V)).astype(np.float32)  # [sum of history % V, next]
BY_POSITION[..., EOS] -= 1.0  # rarer EOS: longer best sequences, where the history matters


def fake_logits(history, position):
    """NumPy: logits for the token after `position`, from the whole history [position + 1]."""
    return BY_POSITION[position, history[position]] + BY_HISTORY[sum(history) % V]


def tokens_to_logits(tokens, positions, cache):
    """Writes the tokens into a token-history cache [B, S]; logits depend on that history, so
    a cache not reordered with its beams gives wrong logits."""
    hist = cache["hist"]  # [B, S]
    rows = jnp.arange(hist.shape[0])
    hist = hist.at[rows, positions[:, 0]].set(tokens[:, 0])  # [B, S]
    seen = jnp.arange(SLOTS)[None, :] <= positions  # [B, S]
    total = jnp.sum(jnp.where(seen, hist, 0), axis=1) % V  # [B]
    logits = (
        jnp.asarray(BY_POSITION)[positions[:, 0], tokens[:, 0]] + jnp.asarray(BY_HISTORY)[total]
    )
    return logits[:, None], {"hist": hist}  # [B, 1, V]


def log_softmax(x):
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def score_of(prompt, seq, alpha):
    """Length-penalised log-probability of `seq` after `prompt` under the fake model."""
    history, logp = list(prompt), 0.0
    for token in seq:
        logp += log_softmax(fake_logits(history, len(history) - 1))[token]
        history.append(token)
    return logp / ((5 + len(seq)) / 6) ** alpha


def brute_force(prompt, alpha):
    """Best (score, tokens) over all sequences that end in EOS or reach N tokens."""
    best = (-np.inf, None)
    for n in range(1, N + 1):
        for seq in itertools.product(range(V), repeat=n):
            if EOS in seq[:-1] or (n < N and seq[-1] != EOS):
                continue
            best = max(best, (score_of(prompt, seq, alpha), seq))
    return best


@functools.cache
def beam_program(beam_size, eos_id):
    """One jitted search per (beam_size, eos_id); alpha is traced, as beam_search passes it,
    so that the alphas of a parametrised test share one compiled program."""

    @jax.jit
    def run(first, hist, start, alpha):
        return beam_search_loop(
            tokens_to_logits,
            first,
            {"hist": hist},
            start,
            beam_size=beam_size,
            max_new_tokens=N,
            alpha=alpha,
            eos_id=eos_id,
            pad_id=PAD,
        )

    return run


def run_beam(prompts, beam_size, alpha, eos_id=EOS):
    """The final BeamState, as NumPy arrays."""
    hist = np.zeros((len(prompts), SLOTS), np.int32)
    for b, p in enumerate(prompts):
        hist[b, : len(p)] = p
    start = np.array([len(p) for p in prompts], np.int32)
    first = np.stack([fake_logits(p, len(p) - 1) for p in prompts])  # [B, V]
    state = beam_program(beam_size, eos_id)(first, hist, start, np.float32(alpha))
    return jax.device_get(state)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_beam_finds_the_brute_force_best(alpha):
    # Beam 24 >= 2^4 live prefixes x 3 extensions / 2: the search is exhaustive, so it must
    # return the exact best; rows with different prompt lengths use different positions.
    prompts = [[1], [2, 1, 1], [1, 2]]
    state = run_beam(prompts, beam_size=24, alpha=alpha)
    for b, prompt in enumerate(prompts):
        score, seq = brute_force(prompt, alpha)
        n = int(state.finished_lengths[b, 0])
        assert tuple(np.asarray(state.finished_tokens[b, 0, :n])) == seq
        np.testing.assert_array_equal(state.finished_tokens[b, 0, n:], PAD)  # pad after EOS
        np.testing.assert_allclose(state.finished_scores[b, 0], score, rtol=1e-5)
        # Every kept hypothesis has its true score: the cache followed each beam's ancestry.
        for w in np.flatnonzero(np.isfinite(state.finished_scores[b])):
            seq = np.asarray(state.finished_tokens[b, w, : int(state.finished_lengths[b, w])])
            np.testing.assert_allclose(
                state.finished_scores[b, w], score_of(prompt, seq, alpha), rtol=1e-5
            )


def test_small_beam_scores_are_consistent_and_stop_early():
    prompts = [[1], [2, 1, 1]]
    state = run_beam(prompts, beam_size=2, alpha=0.6)
    for b, prompt in enumerate(prompts):
        n = int(state.finished_lengths[b, 0])
        seq = list(np.asarray(state.finished_tokens[b, 0, :n]))
        assert seq[-1] == EOS or n == N
        np.testing.assert_allclose(state.finished_scores[b, 0], score_of(prompt, seq, 0.6), 1e-5)
        assert state.finished_scores[b, 0] <= brute_force(prompt, 0.6)[0] + 1e-6


def test_beam_of_one_without_eos_is_greedy():
    prompts = [[1, 2]]
    state = run_beam(prompts, beam_size=1, alpha=0.6, eos_id=None)
    history = [1, 2]
    for _ in range(N):
        history.append(int(np.argmax(fake_logits(history, len(history) - 1))))
    np.testing.assert_array_equal(state.finished_tokens[0, 0], history[2:])
    assert int(state.finished_lengths[0, 0]) == N
