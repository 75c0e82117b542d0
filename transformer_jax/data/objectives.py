"""Training objectives on token ids: pure NumPy, host side.

Objectives: clm, mlm (BERT 80/10/10), mlm_nsp, denoise (BART), span_corruption (T5),
seq2seq, plm (XLNet's permutation LM). Every random draw for row r of the global batch at
step s comes from `np.random.default_rng([seed, s, r])` (`row_rng`), so a batch does not
depend on how its rows are split over processes, and MLM masks / denoising noise are fresh at
every step.

Two kinds of functions:
  * `*_examples`: turn one tokenized document into the examples that are packed and cached.
  * `*_batch`: turn cached rows into a model batch (corruption drawn per row, on the fly).

Conventions: pad = 0 and weight 0 on padding; `segment_ids` 1, 2, ... per packed example;
`positions` restart at 0 per example. NSP label 1 means "B is the true next segment".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from transformer_jax.data import packing
from transformer_jax.data import tokenizer as tok_lib


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """Ids the objectives need. Special ids (ids < `num_special`, or those listed in
    `special` for a checkpoint's own tokenizer) are never masked or sampled as tokens.
    `bos` starts every decoder row (the decoder start); an id the tokenizer lacks is -1."""

    vocab_size: int
    pad: int = tok_lib.PAD_ID
    bos: int = tok_lib.BOS_ID
    eos: int = tok_lib.EOS_ID
    mask: int = tok_lib.MASK_ID
    cls: int = tok_lib.CLS_ID
    sep: int = tok_lib.SEP_ID
    newline: int = tok_lib.NEWLINE_ID
    num_special: int = tok_lib.NUM_SPECIAL
    special: tuple[int, ...] | None = None  # None: exactly the ids below num_special
    # Span corruption: sentinel k is `sentinels[k]` (T5's <extra_id_k>: the tokenizer's own,
    # or `after_vocab_sentinels`); () = none.
    sentinels: tuple[int, ...] = ()

    @classmethod
    def from_tokenizer(cls, tokenizer) -> SpecialIds:
        """From any TextTokenizer (transformer_jax/text_tokenizer.py)."""
        if isinstance(tokenizer, tok_lib.Tokenizer):
            return cls(vocab_size=tokenizer.vocab_size)
        get = lambda v: -1 if v is None else int(v)  # noqa: E731
        start = tokenizer.decoder_start_id
        return cls(
            vocab_size=tokenizer.vocab_size,
            pad=get(tokenizer.pad_id if tokenizer.pad_id is not None else 0),
            bos=get(start if start is not None else tokenizer.bos_id),
            eos=get(tokenizer.eos_id),
            mask=get(tokenizer.mask_id),
            cls=get(tokenizer.cls_id),
            sep=get(tokenizer.sep_id),
            newline=get(tokenizer.newline_id),
            num_special=0,
            special=tuple(sorted(tokenizer.special_ids)),
            sentinels=tuple(int(i) for i in tokenizer.sentinel_ids),
        )

    def is_special(self, tokens: np.ndarray) -> np.ndarray:
        if self.special is None:
            return tokens < self.num_special
        return np.isin(tokens, self.special)

    def random_ordinary(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` ids drawn uniformly from the non-special ones."""
        if self.special is None:
            return rng.integers(self.num_special, self.vocab_size, n)
        ordinary = np.setdiff1d(np.arange(self.vocab_size), self.special)
        return ordinary[rng.integers(0, len(ordinary), n)]

    def missing(self, objective: str) -> list[str]:
        """Names of the ids `objective` needs that the tokenizer does not have."""
        need = {"clm": ("bos", "eos"), "mlm": ("mask", "cls", "sep"),
                "mlm_nsp": ("mask", "cls", "sep"), "denoise": ("bos", "eos", "mask"),
                "seq2seq": ("bos", "eos"), "span_corruption": ("bos", "eos", "sentinel"),
                "plm": ("eos",),
                }[objective]  # fmt: skip
        missing = [n for n in need if n != "sentinel" and getattr(self, n) < 0]
        return missing + (["sentinel"] if "sentinel" in need and not self.sentinels else [])


TRAIN_STREAM, EVAL_STREAM = 0, 1


def row_rng(seed: int, step: int, row: int, stream: int = TRAIN_STREAM) -> np.random.Generator:
    """The generator of global batch row `row` at `step`: `default_rng([seed, step, row])`
    for training, `[seed, step, row, stream]` for other streams (eval batches)."""
    entropy = [seed, step, row] if stream == TRAIN_STREAM else [seed, step, row, stream]
    return np.random.default_rng(entropy)


def shift_right(
    targets: np.ndarray, positions: np.ndarray, segment_ids: np.ndarray, bos: int
) -> np.ndarray:
    """Decoder inputs of packed rows: each segment shifted right by one, BOS at its start."""
    shifted = np.zeros_like(targets)  # [B, T]
    shifted[:, 1:] = targets[:, :-1]
    out = np.where(positions == 0, bos, shifted)
    return np.where(segment_ids > 0, out, 0).astype(np.int32)


# ----------------------------------------------------------------------------- examples


def clm_examples(doc: Sequence[int], max_length: int, ids: SpecialIds) -> list[np.ndarray]:
    """Document + EOS, split into chunks of `max_length` (each chunk a separate example)."""
    return packing.split_into_chunks(list(doc) + [ids.eos], max_length)


def mlm_examples(doc: Sequence[int], max_length: int, ids: SpecialIds) -> list[np.ndarray]:
    """`[CLS] chunk [SEP]` for chunks of `max_length - 2` tokens of the document."""
    return [
        np.concatenate([[ids.cls], c, [ids.sep]]).astype(np.int32)
        for c in packing.split_into_chunks(doc, max_length - 2)
    ]


def denoise_examples(doc: Sequence[int], max_length: int, ids: SpecialIds) -> list[np.ndarray]:
    """`chunk EOS` for chunks of `max_length - 1` tokens: the decoder targets."""
    return [
        np.append(c, ids.eos).astype(np.int32)
        for c in packing.split_into_chunks(doc, max_length - 1)
    ]


def seq2seq_example(
    source: Sequence[int], target: Sequence[int], max_length: int, ids: SpecialIds
) -> tuple[np.ndarray, np.ndarray]:
    """(source + EOS, target + EOS), each truncated to `max_length - 1` tokens before EOS."""
    src = np.append(np.asarray(source, np.int32)[: max_length - 1], ids.eos)
    tgt = np.append(np.asarray(target, np.int32)[: max_length - 1], ids.eos)
    return src.astype(np.int32), tgt.astype(np.int32)


def line_chunks(doc: np.ndarray, chunk_length: int, newline: int) -> list[tuple[int, int]]:
    """(start, end) of consecutive chunks of whole lines, each <= `chunk_length` tokens;
    a line longer than that is cut. Used as NSP segments."""
    ends = np.flatnonzero(doc == newline) + 1  # a line ends after its newline
    if not len(ends) or ends[-1] != len(doc):
        ends = np.append(ends, len(doc))
    chunks, start, prev = [], 0, 0
    for end in ends:
        if end - start > chunk_length and prev > start:
            chunks.append((start, int(prev)))
            start = int(prev)
        while end - start > chunk_length:
            chunks.append((start, start + chunk_length))
            start += chunk_length
        prev = end
    if prev > start:
        chunks.append((start, int(prev)))
    return chunks


# ----------------------------------------------------------------------------- CLM


def clm_batch(rows: Mapping[str, np.ndarray], ids: SpecialIds) -> dict[str, np.ndarray]:
    """Next-token prediction on packed rows ({'tokens', 'segment_ids', 'positions'})."""
    targets, segs, pos = rows["tokens"], rows["segment_ids"], rows["positions"]
    return {
        "inputs": shift_right(targets, pos, segs, ids.bos),
        "targets": targets.astype(np.int32),
        "weights": (segs > 0).astype(np.float32),
        "positions": pos.astype(np.int32),
        "segment_ids": segs.astype(np.int32),
    }


# ----------------------------------------------------------------------------- PLM


def plm_predictions(max_length: int, k: int) -> int:
    """P, prediction slots per row: max_length // K (at least 1)."""
    return max(1, max_length // k)


def plm_row(
    segment_ids: np.ndarray, rng: np.random.Generator, k: int, num_predict: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """XLNet's permutation LM on one packed row [T] (segment ids 1, 2, ...; 0 = padding).

    Each example gets a random factorisation order of its positions; the last len // K of it
    (at least 1 for examples of >= 2 tokens, within the row's `num_predict` slots) are its
    targets. perm_mask[i, j] = True (HF's 1: i may NOT attend to j) when j is a target not
    earlier in the order than i (so non-targets, which come first, see no target) or when i
    and j belong to different examples (packing).
    Returns (perm_mask [T, T] bool, target positions [P] int32 (padded with 0),
    weights [P] float32 (1 = a used slot)).
    """
    length = len(segment_ids)
    rank = np.full(length, -1, np.int64)  # effective rank: -1 = not a target
    targets: list[int] = []
    for seg in np.unique(segment_ids[segment_ids > 0]):
        where = np.flatnonzero(segment_ids == seg)
        order = rng.permutation(where)
        n = len(where) // k
        if n == 0 and len(where) >= 2:
            n = 1
        n = min(n, num_predict - len(targets))
        chosen = order[len(order) - n :] if n > 0 else order[:0]
        rank[chosen] = np.arange(len(order) - n, len(order))
        targets.extend(chosen.tolist())
    is_target = rank >= 0
    perm = is_target[None, :] & (rank[None, :] >= rank[:, None])  # [T, T]
    perm |= segment_ids[:, None] != segment_ids[None, :]
    positions = np.zeros(num_predict, np.int32)
    weights = np.zeros(num_predict, np.float32)
    chosen = np.sort(np.asarray(targets, np.int64))
    positions[: len(chosen)] = chosen
    weights[: len(chosen)] = 1.0
    return perm, positions, weights


def plm_batch(
    rows: Mapping[str, np.ndarray],
    seed: int,
    step: int,
    row_ids: Sequence[int],
    k: int = 6,
    stream: int = TRAIN_STREAM,
) -> dict[str, np.ndarray]:
    """Permutation LM (XLNet) on packed rows ({'tokens', 'segment_ids', ...}): the model sees
    the uncorrupted tokens; `perm_mask` [B, T, T] bool and `target_mapping` [B, P, T]
    (P = T // K) come from a fresh factorisation order per example (`plm_row`); `targets` /
    `weights` [B, P] are the tokens at the target positions (weight 0 on unused slots)."""
    tokens, segs = rows["tokens"], rows["segment_ids"]
    batch, length = tokens.shape
    num_predict = plm_predictions(length, k)
    perm = np.zeros((batch, length, length), bool)
    where = np.zeros((batch, num_predict), np.int32)
    weights = np.zeros((batch, num_predict), np.float32)
    for i, r in enumerate(row_ids):
        perm[i], where[i], weights[i] = plm_row(
            np.asarray(segs[i]), row_rng(seed, step, r, stream), k, num_predict
        )
    mapping = np.eye(length, dtype=np.float32)[where] * weights[:, :, None]  # [B, P, T]
    targets = np.take_along_axis(np.asarray(tokens), where, axis=1) * (weights > 0)  # [B, P]
    return {
        "inputs": np.asarray(tokens, np.int32),
        "targets": targets.astype(np.int32),
        "weights": weights,
        "perm_mask": perm,
        "target_mapping": mapping,
        "segment_ids": np.asarray(segs, np.int32),
    }


# ----------------------------------------------------------------------------- MLM


def mask_tokens(
    tokens: np.ndarray, rng: np.random.Generator, ids: SpecialIds, probability: float = 0.15
) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking of one row: each non-special token is chosen with `probability`; chosen
    ones become [MASK] (80%), a random non-special token (10%) or stay (10%).

    Returns (corrupted inputs [T] int32, weights [T] float32 = 1 on chosen positions).
    """
    n = len(tokens)
    chosen = (rng.random(n) < probability) & ~ids.is_special(tokens)
    action = rng.random(n)
    random_tokens = ids.random_ordinary(rng, n)
    inputs = np.where(chosen & (action < 0.8), ids.mask, tokens)
    inputs = np.where(chosen & (action >= 0.8) & (action < 0.9), random_tokens, inputs)
    return inputs.astype(np.int32), chosen.astype(np.float32)


def mlm_batch(
    rows: Mapping[str, np.ndarray],
    ids: SpecialIds,
    seed: int,
    step: int,
    row_ids: Sequence[int],
    probability: float = 0.15,
    stream: int = TRAIN_STREAM,
) -> dict[str, np.ndarray]:
    """Masked LM on packed `[CLS] ... [SEP]` rows; `row_ids` are the global row indices."""
    targets, segs, pos = rows["tokens"], rows["segment_ids"], rows["positions"]
    inputs, weights = np.zeros_like(targets, np.int32), np.zeros(targets.shape, np.float32)
    for i, r in enumerate(row_ids):
        inputs[i], weights[i] = mask_tokens(
            targets[i], row_rng(seed, step, r, stream), ids, probability
        )
    return {
        "inputs": inputs,
        "targets": targets.astype(np.int32),
        "weights": weights,
        "positions": pos.astype(np.int32),
        "segment_ids": segs.astype(np.int32),
        "token_types": np.zeros(targets.shape, np.int32),
    }


# ----------------------------------------------------------------------------- NSP


def nsp_pair(
    a: np.ndarray, b: np.ndarray, ids: SpecialIds, max_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """`[CLS] A [SEP] B [SEP]` and its token types (0 up to the first [SEP], 1 after).

    The longer of A and B loses tokens from its end until the pair fits `max_length`.
    """
    budget = max_length - 3
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        (a if len(a) >= len(b) else b).pop()
    tokens = [ids.cls, *a, ids.sep, *b, ids.sep]
    types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    return np.asarray(tokens, np.int32), np.asarray(types, np.int32)


def nsp_batch(
    store: Mapping[str, np.ndarray],
    anchors: np.ndarray,
    ids: SpecialIds,
    max_length: int,
    seed: int,
    step: int,
    row_ids: Sequence[int],
    probability: float = 0.15,
    stream: int = TRAIN_STREAM,
) -> dict[str, np.ndarray]:
    """One `[CLS] A [SEP] B [SEP]` pair per row (no packing), with MLM on top.

    `store`: 'stream' (all documents' tokens, concatenated), 'chunks' [C, 2] (start, end) of
    line chunks in document order, 'chunk_docs' [C]. `anchors` [B]: chunk index of A; its
    true next segment is chunk A + 1 (same document). With probability 0.5 (per-row rng), B
    is instead a uniformly random chunk of another document and `nsp_labels` is 0.
    """
    flat, chunks, docs = store["stream"], store["chunks"], store["chunk_docs"]
    num_chunks, batch = len(chunks), len(anchors)
    out = {k: np.zeros((batch, max_length), np.int32) for k in
           ("inputs", "targets", "positions", "segment_ids", "token_types")}  # fmt: skip
    out["weights"] = np.zeros((batch, max_length), np.float32)
    out["nsp_labels"] = np.zeros((batch,), np.int32)
    for i, (anchor, r) in enumerate(zip(anchors, row_ids, strict=True)):
        rng = row_rng(seed, step, r, stream)
        is_next = rng.random() < 0.5
        doc = docs[anchor]
        lo, hi = np.searchsorted(docs, doc, "left"), np.searchsorted(docs, doc, "right")
        other = int(rng.integers(num_chunks - (hi - lo)))  # a chunk outside A's document
        other = other + (hi - lo) if other >= lo else other
        b = anchor + 1 if is_next else other
        tokens, types = nsp_pair(
            flat[chunks[anchor, 0] : chunks[anchor, 1]],
            flat[chunks[b, 0] : chunks[b, 1]],
            ids,
            max_length,
        )
        n = len(tokens)
        inputs, weights = mask_tokens(tokens, rng, ids, probability)
        out["inputs"][i, :n], out["weights"][i, :n] = inputs, weights
        out["targets"][i, :n], out["token_types"][i, :n] = tokens, types
        out["positions"][i, :n], out["segment_ids"][i, :n] = np.arange(n), 1
        out["nsp_labels"][i] = int(is_next)
    return out


# ----------------------------------------------------------------------------- denoising


def permute_sentences(tokens: np.ndarray, newline: int, rng: np.random.Generator) -> np.ndarray:
    """BART sentence permutation with sentences = lines: the complete lines (each ending with
    its newline token) are shuffled; an unterminated last line stays last, so the output
    splits into exactly the same lines as the input."""
    ends = np.flatnonzero(tokens == newline) + 1  # [lines] end offsets of complete lines
    if len(ends) < 2:
        return tokens
    starts = np.concatenate([[0], ends[:-1]])
    order = rng.permutation(len(ends))
    return np.concatenate([tokens[starts[j] : ends[j]] for j in order] + [tokens[ends[-1] :]])


def infill_spans(
    tokens: np.ndarray,
    mask: int,
    ratio: float,
    poisson_lambda: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """BART text infilling: spans with Poisson(`poisson_lambda`) lengths covering
    round(`ratio` * len) tokens; each span (0-length ones insert) becomes ONE mask token.

    Spans never touch (at least one kept token between two masks), and there are no more
    spans than masked tokens, so the output is never longer than the input.
    Returns (corrupted tokens, span lengths in output order).
    """
    n = len(tokens)
    goal = int(np.floor(n * ratio + 0.5))
    lengths: list[int] = []
    covered = 0
    while covered < goal:
        length = min(int(rng.poisson(poisson_lambda)), goal - covered)
        lengths.append(length)
        covered += length
    while len(lengths) > covered:  # drop 0-length spans that would lengthen the sequence
        lengths.remove(0)
    kept = n - covered
    if len(lengths) > kept + 1:  # cannot separate that many spans: drop the shortest
        lengths = sorted(lengths, reverse=True)[: kept + 1]
        covered = sum(lengths)
        kept = n - covered
    gaps = np.sort(rng.choice(kept + 1, size=len(lengths), replace=False))
    out, at, kept_so_far = [], 0, 0
    for gap, length in zip(gaps, lengths, strict=True):
        out.append(tokens[at : at + gap - kept_so_far])
        at += gap - kept_so_far
        kept_so_far = gap
        out.append(np.asarray([mask], tokens.dtype))
        at += length
    out.append(tokens[at:])
    return np.concatenate(out).astype(np.int32), np.asarray(lengths, np.int32)


def denoise_example(
    tokens: np.ndarray,
    ids: SpecialIds,
    rng: np.random.Generator,
    ratio: float = 0.3,
    poisson_lambda: float = 3.0,
) -> np.ndarray:
    """Encoder input for one `body EOS` example: permute lines, infill spans, keep the EOS."""
    body = tokens[:-1] if len(tokens) and tokens[-1] == ids.eos else tokens
    body = permute_sentences(body, ids.newline, rng)
    corrupted, _ = infill_spans(body, ids.mask, ratio, poisson_lambda, rng)
    return np.append(corrupted, tokens[len(body) :]).astype(np.int32)


def denoise_batch(
    rows: Mapping[str, np.ndarray],
    ids: SpecialIds,
    seed: int,
    step: int,
    row_ids: Sequence[int],
    ratio: float = 0.3,
    poisson_lambda: float = 3.0,
    stream: int = TRAIN_STREAM,
) -> dict[str, np.ndarray]:
    """BART denoising on packed `chunk EOS` rows: decoder reconstructs the original rows.

    Each example's encoder side gets the same segment id in the encoder row; since
    corruption never lengthens an example, the encoder row always fits.
    """
    targets, segs, pos = rows["tokens"], rows["segment_ids"], rows["positions"]
    enc = np.zeros_like(targets, np.int32)  # [B, T]
    enc_segs, enc_pos = np.zeros_like(enc), np.zeros_like(enc)
    for i, r in enumerate(row_ids):
        rng = row_rng(seed, step, r, stream)
        at = 0
        for k in range(1, int(segs[i].max(initial=0)) + 1):
            corrupted = denoise_example(targets[i][segs[i] == k], ids, rng, ratio, poisson_lambda)
            n = len(corrupted)
            enc[i, at : at + n], enc_segs[i, at : at + n] = corrupted, k
            enc_pos[i, at : at + n] = np.arange(n)
            at += n
    return {
        "inputs": enc,
        "inputs_positions": enc_pos,
        "inputs_segment_ids": enc_segs,
        "decoder_inputs": shift_right(targets, pos, segs, ids.bos),
        "targets": targets.astype(np.int32),
        "weights": (segs > 0).astype(np.float32),
        "targets_positions": pos.astype(np.int32),
        "targets_segment_ids": segs.astype(np.int32),
    }


# ----------------------------------------------------------------------------- seq2seq


def seq2seq_batch(rows: Mapping[str, np.ndarray], ids: SpecialIds) -> dict[str, np.ndarray]:
    """Teacher forcing on packed pairs (`packing.pack_pairs` of `seq2seq_example`s)."""
    targets, segs, pos = rows["targets"], rows["targets_segment_ids"], rows["targets_positions"]
    return {
        "inputs": rows["inputs"].astype(np.int32),
        "inputs_positions": rows["inputs_positions"].astype(np.int32),
        "inputs_segment_ids": rows["inputs_segment_ids"].astype(np.int32),
        "decoder_inputs": shift_right(targets, pos, segs, ids.bos),
        "targets": targets.astype(np.int32),
        "weights": (segs > 0).astype(np.float32),
        "targets_positions": pos.astype(np.int32),
        "targets_segment_ids": segs.astype(np.int32),
    }


# ----------------------------------------------------------------------------- span corruption
NUM_SENTINELS = 100  # T5's extra ids: the most noise spans one example may have


def after_vocab_sentinels(vocab_size: int) -> tuple[int, ...]:
    """Sentinels for a tokenizer without its own: the NUM_SENTINELS ids after its vocabulary,
    sentinel k = vocab_size + NUM_SENTINELS - 1 - k (T5's layout: <extra_id_0> on top)."""
    return tuple(range(vocab_size + NUM_SENTINELS - 1, vocab_size - 1, -1))


def random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths [num_segments] of a uniformly random split of `num_items` items into that many
    non-empty consecutive segments (T5's `_random_segmentation`)."""
    cuts = np.sort(rng.choice(np.arange(1, num_items), num_segments - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [num_items]])).astype(np.int64)


def span_noise_mask(
    length: int, rng: np.random.Generator, density: float = 0.15, mean_span: float = 3.0
) -> np.ndarray:
    """T5's `random_spans_noise_mask` of one example, bool [length]: round(density * length)
    noise tokens (at least 1, at most length - 1) in round(noise / mean_span) spans (at least
    1), alternating with as many non-noise spans; the example starts with non-noise."""
    if length < 2:
        return np.zeros(length, bool)
    num_noise = min(max(int(np.round(length * density)), 1), length - 1)
    num_spans = max(int(np.round(num_noise / mean_span)), 1)
    num_spans = min(num_spans, num_noise, length - num_noise)
    noise = random_segmentation(num_noise, num_spans, rng)  # [spans]
    keep = random_segmentation(length - num_noise, num_spans, rng)  # [spans]
    flags = np.repeat(np.tile([False, True], num_spans), np.stack([keep, noise], 1).reshape(-1))
    return flags


def span_corrupt_example(
    tokens: np.ndarray,
    ids: SpecialIds,
    rng: np.random.Generator,
    density: float = 0.15,
    mean_span: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One `body EOS` example -> (encoder input, decoder target), T5's span corruption: each
    noise span of the body becomes one sentinel in the input; the target is each sentinel
    followed by the span it replaced; both keep the EOS. Sentinel k is `ids.sentinels[k]`."""
    if not ids.sentinels:
        raise ValueError(
            "span corruption needs sentinel ids: SpecialIds(sentinels=...), the tokenizer's "
            "<extra_id_k> or after_vocab_sentinels(vocab_size)."
        )
    body = tokens[:-1] if len(tokens) and tokens[-1] == ids.eos else tokens
    tail = tokens[len(body) :]
    noise = span_noise_mask(len(body), rng, density, mean_span)  # [T] bool
    starts = noise & ~np.concatenate([[False], noise[:-1]])  # first token of each noise span
    num_spans = int(starts.sum())
    if num_spans > len(ids.sentinels):
        raise ValueError(
            f"span corruption: an example of {len(body)} tokens has {num_spans} noise spans, "
            f"more than the {len(ids.sentinels)} sentinels; lower max_length."
        )
    span = np.maximum(np.cumsum(starts) - 1, 0)  # [T] the index of each token's span
    sentinel = np.asarray(ids.sentinels, np.int64)[span]  # [T] the sentinel of each span
    inputs = np.where(starts, sentinel, body)[~noise | starts]  # a span -> its sentinel
    is_start = starts[noise]  # [N] per noise token: it opens a span
    token_at = np.cumsum(1 + is_start) - 1  # [N] its index in the target
    targets = np.empty(int(noise.sum()) + num_spans, body.dtype)
    targets[token_at] = body[noise]
    targets[token_at[is_start] - 1] = sentinel[noise][is_start]  # each span's sentinel first
    return (
        np.concatenate([inputs, tail]).astype(np.int32),
        np.concatenate([targets, tail]).astype(np.int32),
    )


def span_corruption_batch(
    rows: Mapping[str, np.ndarray],
    ids: SpecialIds,
    seed: int,
    step: int,
    row_ids: Sequence[int],
    density: float = 0.15,
    mean_span: float = 3.0,
    stream: int = TRAIN_STREAM,
) -> dict[str, np.ndarray]:
    """T5 span corruption on packed `chunk EOS` rows: per example, the encoder row holds the
    corrupted input and the decoder row its sentinel-delimited spans, both under the
    example's segment id (neither is longer than the example, so both rows fit)."""
    tokens, segs = rows["tokens"], rows["segment_ids"]
    names = ("inputs", "inputs_positions", "inputs_segment_ids", "targets",
             "targets_positions", "targets_segment_ids")  # fmt: skip
    out = {k: np.zeros_like(tokens, np.int32) for k in names}  # [B, T] each
    for i, r in enumerate(row_ids):
        rng = row_rng(seed, step, r, stream)
        at_in = at_out = 0
        for k in range(1, int(segs[i].max(initial=0)) + 1):
            example = tokens[i][segs[i] == k]
            inputs, targets = span_corrupt_example(example, ids, rng, density, mean_span)
            for name, values, at in (("inputs", inputs, at_in), ("targets", targets, at_out)):
                n = len(values)
                out[name][i, at : at + n] = values
                out[f"{name}_positions"][i, at : at + n] = np.arange(n)
                out[f"{name}_segment_ids"][i, at : at + n] = k
            at_in, at_out = at_in + len(inputs), at_out + len(targets)
    segs_out, pos_out = out["targets_segment_ids"], out["targets_positions"]
    out["decoder_inputs"] = shift_right(out["targets"], pos_out, segs_out, ids.bos)
    out["weights"] = (segs_out > 0).astype(np.float32)
    return out
