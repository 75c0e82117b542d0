"""Objectives: CLM shift, MLM statistics, NSP pairs, BART denoising, seq2seq teacher forcing."""

import numpy as np
import pytest

from transformer_jax.data import objectives as obj
from transformer_jax.data import packing

V = 500
IDS = obj.SpecialIds(vocab_size=V)


def _packed_rows(rng, num_rows=400, length=128, wrap_mlm=True):
    """Packed rows of `[CLS] text [SEP]` examples (text may contain newlines), with padding."""
    examples = []
    while len(examples) < num_rows * 3:
        body = rng.integers(IDS.num_special, V, int(rng.integers(5, 60)))
        body[rng.random(len(body)) < 0.1] = IDS.newline
        examples.append(np.concatenate([[IDS.cls], body, [IDS.sep]]) if wrap_mlm else body)
    return packing.pack_sequences(examples, length)


def test_shift_right_restarts_at_each_segment():
    targets = np.array([[5, 6, 7, 8, 9, 0]])
    segs = np.array([[1, 1, 2, 2, 2, 0]])
    pos = np.array([[0, 1, 0, 1, 2, 0]])
    np.testing.assert_array_equal(obj.shift_right(targets, pos, segs, 2), [[2, 5, 2, 7, 8, 0]])
    batch = obj.clm_batch({"tokens": targets, "segment_ids": segs, "positions": pos}, IDS)
    np.testing.assert_array_equal(batch["weights"], [[1, 1, 1, 1, 1, 0]])
    assert batch["weights"].dtype == np.float32


def test_clm_examples_split_with_eos_at_document_end():
    chunks = obj.clm_examples(list(range(10, 30)), 8, IDS)
    assert [len(c) for c in chunks] == [8, 8, 5]
    assert chunks[-1][-1] == IDS.eos and IDS.eos not in np.concatenate(chunks[:-1])


def test_mlm_statistics():
    rows = _packed_rows(np.random.default_rng(0))
    batch = obj.mlm_batch(rows, IDS, seed=3, step=7, row_ids=range(len(rows["tokens"])))
    tokens, inputs, weights = batch["targets"], batch["inputs"], batch["weights"] > 0
    candidates = (rows["segment_ids"] > 0) & (tokens >= IDS.num_special)
    assert not (weights & ~candidates).any()  # never pad, [CLS], [SEP] or other specials
    assert abs(weights.sum() / candidates.sum() - 0.15) < 0.01
    chosen_inputs, chosen_targets = inputs[weights], tokens[weights]
    masked = chosen_inputs == IDS.mask
    kept = chosen_inputs == chosen_targets
    randomized = ~masked & ~kept
    assert abs(masked.mean() - 0.8) < 0.02
    assert abs(kept.mean() - 0.1) < 0.02
    assert abs(randomized.mean() - 0.1) < 0.02
    assert (chosen_inputs[randomized] >= IDS.num_special).all()
    assert (chosen_inputs[randomized] < V).all()
    np.testing.assert_array_equal(inputs[~weights], tokens[~weights])  # unchosen: unchanged
    np.testing.assert_array_equal(batch["token_types"], 0)


def test_mlm_is_fresh_per_step_and_deterministic():
    rows = _packed_rows(np.random.default_rng(1), num_rows=8)
    a = obj.mlm_batch(rows, IDS, seed=0, step=1, row_ids=range(8))
    b = obj.mlm_batch(rows, IDS, seed=0, step=1, row_ids=range(8))
    c = obj.mlm_batch(rows, IDS, seed=0, step=2, row_ids=range(8))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert (a["weights"] != c["weights"]).any()
    # A row's mask depends on its global row id only, not on the rows beside it.
    single = obj.mlm_batch({k: v[5:6] for k, v in rows.items()}, IDS, 0, 1, [5])
    np.testing.assert_array_equal(single["inputs"][0], a["inputs"][5])


def _nsp_store(rng, num_docs=30):
    flat, chunks, chunk_docs, offset = [], [], [], 0
    for d in range(num_docs):
        doc = rng.integers(IDS.num_special + 1, V, int(rng.integers(20, 200))).astype(np.int32)
        doc[rng.random(len(doc)) < 0.12] = IDS.newline
        for s, e in obj.line_chunks(doc, 20, IDS.newline):
            chunks.append((offset + s, offset + e))
            chunk_docs.append(d)
        flat.append(doc)
        offset += len(doc)
    store = {
        "stream": np.concatenate(flat),
        "chunks": np.asarray(chunks),
        "chunk_docs": np.asarray(chunk_docs),
    }
    anchors = np.flatnonzero(store["chunk_docs"][:-1] == store["chunk_docs"][1:])
    return store, anchors


def test_line_chunks_cover_the_document_in_order():
    doc = np.array([9, 9, 7, 9, 7, 9, 9, 9, 9, 9, 9, 7, 9])
    chunks = obj.line_chunks(doc, 4, 7)
    assert chunks[0][0] == 0 and chunks[-1][1] == len(doc)
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:], strict=False))
    assert all(0 < e - s <= 4 for s, e in chunks)
    assert chunks[:2] == [(0, 3), (3, 5)]  # whole lines when they fit


def test_nsp_pairs():
    store, anchors = _nsp_store(np.random.default_rng(2))
    rows = np.random.default_rng(3).choice(anchors, 2000)
    length = 48
    batch = obj.nsp_batch(store, rows, IDS, length, seed=1, step=0, row_ids=range(len(rows)))
    labels = batch["nsp_labels"]
    assert batch["targets"].shape == (2000, length) and labels.shape == (2000,)
    assert abs(labels.mean() - 0.5) < 0.03
    flat, chunks, docs = store["stream"], store["chunks"], store["chunk_docs"]
    for i in range(200):
        t, types, segs = batch["targets"][i], batch["token_types"][i], batch["segment_ids"][i]
        n = int(segs.sum())
        assert t[0] == IDS.cls and t[n - 1] == IDS.sep and (t[n:] == 0).all()
        seps = np.flatnonzero(t == IDS.sep)
        assert len(seps) == 2 and seps[1] == n - 1
        np.testing.assert_array_equal(types[: seps[0] + 1], 0)
        np.testing.assert_array_equal(types[seps[0] + 1 : n], 1)
        np.testing.assert_array_equal(types[n:], 0)
        np.testing.assert_array_equal(batch["positions"][i][:n], np.arange(n))
        a, b = t[1 : seps[0]], t[seps[0] + 1 : n - 1]
        anchor = rows[i]
        chunk = lambda c: flat[chunks[c, 0] : chunks[c, 1]]  # noqa: E731
        np.testing.assert_array_equal(a, chunk(anchor))  # chunks <= 20: no truncation at 48
        if labels[i]:  # B is the true next chunk
            np.testing.assert_array_equal(b, chunk(anchor + 1))
        else:  # B is a chunk of another document
            matches = [c for c in range(len(chunks)) if np.array_equal(chunk(c), b)]
            assert matches and all(docs[c] != docs[anchor] for c in matches)
    assert not (batch["weights"] > 0)[batch["targets"] < IDS.num_special].any()


def test_infill_spans():
    rng = np.random.default_rng(4)
    total, masked, lengths_all = 0, 0, []
    for _ in range(300):
        tokens = rng.integers(IDS.num_special, V, int(rng.integers(1, 200))).astype(np.int32)
        out, lengths = obj.infill_spans(tokens, IDS.mask, 0.3, 3.0, rng)
        assert (out == IDS.mask).sum() == len(lengths)  # each span is ONE mask token
        assert len(out) <= len(tokens)
        assert not ((out[1:] == IDS.mask) & (out[:-1] == IDS.mask)).any()
        # Re-expanding every mask with its span gives back the original.
        i, m = 0, 0
        for t in out:
            if t == IDS.mask:
                i += lengths[m]
                m += 1
            else:
                assert t == tokens[i]
                i += 1
        assert i == len(tokens)
        total += len(tokens)
        masked += lengths.sum()
        lengths_all.extend(lengths.tolist())
    assert abs(masked / total - 0.3) < 0.01
    assert 0 in lengths_all  # 0-length spans insert a mask
    assert 2.0 < np.mean(lengths_all) < 3.5  # Poisson(3), last span of each example clipped


def test_permute_sentences_is_a_permutation_of_lines():
    rng = np.random.default_rng(5)
    nl = IDS.newline
    tokens = np.array([10, 11, nl, 12, nl, 13, 14, 15, nl, 16, nl, 17])
    lines = lambda x: sorted(tuple(s) for s in np.split(x, np.flatnonzero(x == nl) + 1))  # noqa: E731
    seen = set()
    for _ in range(400):
        out = obj.permute_sentences(tokens, nl, rng)
        assert lines(out) == lines(tokens) and out[-1] == 17  # unterminated line stays last
        seen.add(tuple(out))
    assert len(seen) == 24  # all 4! orders of the complete lines occur
    np.testing.assert_array_equal(obj.permute_sentences(tokens[:3], nl, rng), tokens[:3])


def test_denoise_batch_reconstructs_original():
    rows = _packed_rows(np.random.default_rng(6), num_rows=64, wrap_mlm=False)
    examples = packing.unpack(rows["tokens"], rows["segment_ids"])
    rows = packing.pack_sequences([np.append(e, IDS.eos) for e in examples], 128)
    num_rows = len(rows["tokens"])
    batch = obj.denoise_batch(rows, IDS, seed=0, step=0, row_ids=range(num_rows), ratio=0.3)
    np.testing.assert_array_equal(batch["targets"], rows["tokens"])
    np.testing.assert_array_equal(batch["targets_segment_ids"], rows["segment_ids"])
    np.testing.assert_array_equal(
        batch["decoder_inputs"],
        obj.shift_right(rows["tokens"], rows["positions"], rows["segment_ids"], IDS.bos),
    )
    masked = kept = 0
    for i in range(num_rows):
        enc_segs, dec_segs = batch["inputs_segment_ids"][i], batch["targets_segment_ids"][i]
        assert enc_segs.max() == dec_segs.max()
        for k in range(1, int(dec_segs.max()) + 1):
            enc = batch["inputs"][i][enc_segs == k]
            dec = batch["targets"][i][dec_segs == k]
            assert enc[-1] == IDS.eos and len(enc) <= len(dec)
            np.testing.assert_array_equal(
                batch["inputs_positions"][i][enc_segs == k], np.arange(len(enc))
            )
            kept += int((enc != IDS.mask).sum()) - 1
            masked += len(dec) - 1
    assert abs(1 - kept / masked - 0.3) < 0.02  # ~30% of the text tokens are masked


def test_seq2seq_teacher_forcing():
    src, tgt = obj.seq2seq_example([10, 11, 12], [20, 21], 16, IDS)
    np.testing.assert_array_equal(src, [10, 11, 12, IDS.eos])
    np.testing.assert_array_equal(tgt, [20, 21, IDS.eos])
    packed = packing.pack_pairs([(src, tgt), obj.seq2seq_example([13], [22, 23], 16, IDS)], 8)
    batch = obj.seq2seq_batch(packed, IDS)
    np.testing.assert_array_equal(batch["inputs"], [[10, 11, 12, 3, 13, 3, 0, 0]])
    np.testing.assert_array_equal(batch["decoder_inputs"], [[2, 20, 21, 2, 22, 23, 0, 0]])
    np.testing.assert_array_equal(batch["targets"], [[20, 21, 3, 22, 23, 3, 0, 0]])
    np.testing.assert_array_equal(batch["weights"], [[1, 1, 1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(batch["targets_segment_ids"], [[1, 1, 1, 2, 2, 2, 0, 0]])
    np.testing.assert_array_equal(batch["inputs_segment_ids"], [[1, 1, 1, 1, 2, 2, 0, 0]])
    long_src, _ = obj.seq2seq_example(range(10, 40), [20], 16, IDS)
    assert len(long_src) == 16 and long_src[-1] == IDS.eos


@pytest.mark.parametrize("stream", [obj.TRAIN_STREAM, obj.EVAL_STREAM])
def test_row_rng_streams_differ(stream):
    a = obj.row_rng(0, 1, 2, stream).random()
    b = obj.row_rng(0, 1, 2, 1 - stream).random()
    assert a != b and a == obj.row_rng(0, 1, 2, stream).random()
