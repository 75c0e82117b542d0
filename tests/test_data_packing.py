"""Packing: segment ids / positions layout, nothing lost or duplicated, seq2seq consistency."""

import numpy as np
import pytest

from transformer_jax.data import packing


def _random_examples(rng, count, max_len):
    # Distinct first tokens identify each example.
    return [
        np.concatenate([[1000 + i], rng.integers(7, 500, int(rng.integers(0, max_len)))])
        for i in range(count)
    ]


def _check_layout(tokens, segs, pos):
    for row_t, row_s, row_p in zip(tokens, segs, pos, strict=True):
        n = int((row_s > 0).sum())
        assert (row_s[n:] == 0).all() and (row_t[n:] == 0).all() and (row_p[n:] == 0).all()
        assert (row_s[:n] > 0).all()
        assert row_s[0] == 1 and (np.diff(row_s[:n]) >= 0).all()
        assert (np.diff(row_s[:n]) <= 1).all()  # segments numbered 1, 2, 3, ... with no gaps
        for k in range(1, int(row_s.max()) + 1):
            np.testing.assert_array_equal(row_p[row_s == k], np.arange((row_s == k).sum()))


def test_pack_sequences_layout_and_no_loss():
    rng = np.random.default_rng(0)
    examples = _random_examples(rng, 300, 30)
    out = packing.pack_sequences(examples, max_length=37)
    assert out["tokens"].shape[1] == 37 and out["tokens"].dtype == np.int32
    _check_layout(out["tokens"], out["segment_ids"], out["positions"])
    unpacked = packing.unpack(out["tokens"], out["segment_ids"])
    assert sorted(map(tuple, unpacked)) == sorted(map(tuple, examples))
    fill = (out["segment_ids"] > 0).mean()
    assert fill > 0.9, fill  # first-fit over a window keeps padding low


def test_exact_small_example():
    out = packing.pack_sequences([[11, 12, 13], [21, 22], [31, 32, 33, 34]], max_length=5)
    np.testing.assert_array_equal(out["tokens"], [[11, 12, 13, 21, 22], [31, 32, 33, 34, 0]])
    np.testing.assert_array_equal(out["segment_ids"], [[1, 1, 1, 2, 2], [1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(out["positions"], [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]])


def test_long_sequences_are_split_not_dropped():
    long = list(range(10, 33))  # 23 tokens -> chunks of 10, 10, 3
    out = packing.pack_sequences([long], max_length=10)
    pieces = packing.unpack(out["tokens"], out["segment_ids"])
    assert sorted(len(p) for p in pieces) == [3, 10, 10]
    assert sorted(np.concatenate(pieces).tolist()) == long


def test_pack_pairs_keeps_sides_aligned_and_truncates():
    rng = np.random.default_rng(1)
    pairs = []
    for i in range(200):
        src = [1000 + i, *rng.integers(7, 500, int(rng.integers(0, 20)))]
        tgt = [1000 + i, *rng.integers(7, 500, int(rng.integers(0, 25)))]
        pairs.append((src, tgt))
    pairs.append(([5000, *range(7, 60)], [5000, 8]))  # source longer than max_length
    out = packing.pack_pairs(pairs, max_length=24)
    for side in ("inputs", "targets"):
        _check_layout(out[side], out[f"{side}_segment_ids"], out[f"{side}_positions"])
    seen = []
    for row in range(len(out["inputs"])):
        src_segs, tgt_segs = out["inputs_segment_ids"][row], out["targets_segment_ids"][row]
        assert src_segs.max() == tgt_segs.max()
        for k in range(1, int(src_segs.max()) + 1):
            src = out["inputs"][row][src_segs == k]
            tgt = out["targets"][row][tgt_segs == k]
            assert src[0] == tgt[0]  # segment k of both rows is the same pair
            seen.append(int(src[0]))
            original = pairs[int(src[0]) - 1000] if src[0] < 5000 else pairs[-1]
            np.testing.assert_array_equal(src, original[0][:24])
            np.testing.assert_array_equal(tgt, original[1][:24])
    assert sorted(seen) == sorted(p[0][0] for p in pairs)


def test_packer_rejects_bad_examples():
    packer = packing.Packer(4)
    with pytest.raises(ValueError, match=r"side lengths \[5\]"):
        packer.add(np.arange(5))
    with pytest.raises(ValueError, match="expected 1 sides"):
        packer.add(np.arange(2), np.arange(2))
