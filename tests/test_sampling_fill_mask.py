"""fill_mask on a tiny BERT: top candidates equal the softmax of the unpadded forward pass."""

import jax
import numpy as np
import pytest

from transformer_jax import models, presets
from transformer_jax.sampling import fill_mask

BERT = presets.get("bert-tiny").replace(max_len=32, init_std=0.3)
MASK = 103


@pytest.fixture(scope="module")
def params():
    return models.init_params(BERT, jax.random.key(0))


def test_candidates_match_softmax_of_each_row_alone(params):
    rows = [[5, MASK, 7, 9], [8, MASK, MASK, 4, 11, 12, 13]]  # mixed lengths: padded, masked
    predictions = fill_mask(BERT, params, rows, MASK, top_k=4)
    model = models.build(BERT)
    forward = jax.jit(lambda p, tokens: model.apply({"params": p}, tokens))  # [1, T, V]
    for row, found in zip(rows, predictions, strict=True):
        logits = np.asarray(forward(params, np.array([row])))[0]  # [T, V]
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)  # [T, V]
        assert [p.position for p in found] == [i for i, t in enumerate(row) if t == MASK]
        for p in found:
            want = np.argsort(-probs[p.position])[:4]
            np.testing.assert_array_equal(p.ids, want)
            np.testing.assert_allclose(p.probs, probs[p.position, want], rtol=1e-4, atol=1e-6)
            assert np.all(np.diff(p.probs) <= 0)


def test_vocab_limit_and_checks(params):
    (found,) = fill_mask(BERT, params, [[5, MASK, 7]], MASK, top_k=3, vocab_limit=50)
    assert found[0].ids.max() < 50 and found[0].probs.sum() <= 1.0 + 1e-6
    # No mask: no predictions (the arguments of the call above: its compiled program).
    assert fill_mask(BERT, params, [[5, 6, 7]], MASK, top_k=3, vocab_limit=50) == [[]]
    with pytest.raises(ValueError, match="encoder-only"):
        fill_mask(presets.get("gpt-tiny"), params, [[1]], MASK)
    with pytest.raises(ValueError, match=r"top_k=0 must be an integer in \[1, 512\]"):
        fill_mask(BERT, params, [[1, MASK]], MASK, top_k=0)
    with pytest.raises(ValueError, match=r"mask_id=600 must be a token id"):
        fill_mask(BERT, params, [[1, 2]], 600)
    with pytest.raises(ValueError, match="input 0 has 33 tokens, more than"):
        fill_mask(BERT, params, [[1] * 33], MASK)
