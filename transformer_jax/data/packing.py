"""Packing of variable-length examples into fixed-length rows.

A packed row holds several examples back to back:

    tokens       a a a b b c c c 0 0
    segment_ids  1 1 1 2 2 3 3 3 0 0     (k-th example in the row -> k; padding -> 0)
    positions    0 1 2 0 1 0 1 2 0 0     (restart at 0 for every example)

Padding is pad id 0 (weights come from `segment_ids > 0`). The packer is greedy first-fit
over a small window of open rows, deterministic, and keeps every example exactly once.
Single sequences longer than `max_length` are SPLIT into consecutive chunks
(`pack_sequences`); pairs are TRUNCATED side by side (`pack_pairs`), since a translation
cannot be split.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


class Packer:
    """Greedy first-fit packing of examples with `num_sides` aligned sides (1 or 2).

    An example goes into the first open row where every side fits; side s of example k lands
    in side s of the same row with the same segment id. A row is closed when full, or (the
    fullest one) when more than `window` rows are open.
    """

    def __init__(self, max_length: int, num_sides: int = 1, window: int = 16):
        if max_length < 1:
            raise ValueError(f"max_length={max_length} must be >= 1")
        self.max_length = max_length
        self.num_sides = num_sides
        self.window = window
        self._open: list[list] = []  # each: [fills per side, list of examples]
        self._closed: list[list[np.ndarray]] = [[] for _ in range(num_sides)]

    def add(self, *sides: np.ndarray) -> None:
        """Adds one example (one 1-D int array per side, each 1..max_length long)."""
        if len(sides) != self.num_sides:
            raise ValueError(f"expected {self.num_sides} sides, got {len(sides)}")
        lengths = [len(s) for s in sides]
        limit = self.max_length
        if min(lengths) < 1 or max(lengths) > limit:
            raise ValueError(f"side lengths {lengths} must be in [1, {limit}]")
        target = None
        if max(lengths) < limit:  # a full-length example gets a row of its own
            for row in self._open:
                for fill, n in zip(row[0], lengths, strict=True):
                    if fill + n > limit:
                        break
                else:
                    target = row
                    break
        if target is None:
            target = [[0] * self.num_sides, []]
            self._open.append(target)
        target[1].append(sides)
        target[0] = [f + n for f, n in zip(target[0], lengths, strict=True)]
        if max(target[0]) == limit:
            self._open.remove(target)
            self._close(target)
        elif len(self._open) > self.window:
            fullest = max(self._open, key=lambda r: sum(r[0]))
            self._open.remove(fullest)
            self._close(fullest)

    def _close(self, row: list) -> None:
        for s in range(self.num_sides):
            packed = np.zeros((3, self.max_length), np.int32)  # tokens, segment_ids, positions
            at = 0
            for k, example in enumerate(row[1], start=1):
                n = len(example[s])
                packed[0, at : at + n] = example[s]
                packed[1, at : at + n] = k
                packed[2, at : at + n] = np.arange(n)
                at += n
            self._closed[s].append(packed)

    def finish(self) -> list[dict[str, np.ndarray]]:
        """Closes the open rows; per side {'tokens', 'segment_ids', 'positions'} [rows, L]."""
        for row in self._open:
            self._close(row)
        self._open = []
        out = []
        for rows in self._closed:
            stacked = np.stack(rows) if rows else np.zeros((0, 3, self.max_length), np.int32)
            out.append({
                "tokens": stacked[:, 0],
                "segment_ids": stacked[:, 1],
                "positions": stacked[:, 2],
            })  # fmt: skip
        return out


def split_into_chunks(ids: Sequence[int] | np.ndarray, chunk_length: int) -> list[np.ndarray]:
    """Consecutive chunks of at most `chunk_length` tokens (the last may be shorter)."""
    ids = np.asarray(ids, np.int32)
    return [ids[i : i + chunk_length] for i in range(0, len(ids), chunk_length)]


def pack_sequences(
    examples: Iterable[Sequence[int] | np.ndarray], max_length: int, window: int = 16
) -> dict[str, np.ndarray]:
    """Packs single sequences; longer ones are split into chunks, empty ones are skipped."""
    packer = Packer(max_length, 1, window)
    for example in examples:
        for chunk in split_into_chunks(example, max_length):
            packer.add(chunk)
    return packer.finish()[0]


def pack_pairs(
    pairs: Iterable[tuple[Sequence[int] | np.ndarray, Sequence[int] | np.ndarray]],
    max_length: int,
    window: int = 16,
) -> dict[str, np.ndarray]:
    """Packs (source, target) pairs; each side is truncated to `max_length`, and pairs with
    an empty side are skipped. Returns `inputs*` (source) and `targets*` (target) arrays."""
    packer = Packer(max_length, 2, window)
    for source, target in pairs:
        source = np.asarray(source, np.int32)[:max_length]
        target = np.asarray(target, np.int32)[:max_length]
        if len(source) and len(target):
            packer.add(source, target)
    src, tgt = packer.finish()
    return {
        "inputs": src["tokens"],
        "inputs_segment_ids": src["segment_ids"],
        "inputs_positions": src["positions"],
        "targets": tgt["tokens"],
        "targets_segment_ids": tgt["segment_ids"],
        "targets_positions": tgt["positions"],
    }


def unpack(tokens: np.ndarray, segment_ids: np.ndarray) -> list[np.ndarray]:
    """Inverse of packing: the examples of every row, in row then segment order."""
    out = []
    for row, seg in zip(tokens, segment_ids, strict=True):
        for k in range(1, int(seg.max(initial=0)) + 1):
            out.append(row[seg == k])
    return out
