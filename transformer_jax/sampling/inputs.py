"""Host-side checks and padding of prompts, before anything is traced.

JAX clamps out-of-bounds cache writes and position lookups silently, so every length and id
is checked here, with a ValueError naming the value and the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MIN_BUCKET = 16  # shortest padded prompt length


def bucket_length(length: int, max_len: int, floor: int = MIN_BUCKET) -> int:
    """Padded length for a prompt block of `length`: the next power of two >= floor, capped
    by max_len. Prompts in the same bucket share one compiled program."""
    bucket = max(floor, 1 << max(0, length - 1).bit_length())
    return min(bucket, max_len)


def as_rows(prompts: Any, lengths: Any = None, *, what: str = "prompt") -> list[np.ndarray]:
    """A list of lists of ids, or an int array [B, T] (+ optional lengths [B]) -> list of 1-D
    int64 rows. Raises ValueError on an empty batch, an empty row, or non-integer ids."""
    if isinstance(prompts, (list, tuple)):
        if lengths is not None:
            raise ValueError(f"`lengths` is only for {what}s given as an array [B, T].")
        rows = [np.asarray(row) for row in prompts]
    else:
        array = np.asarray(prompts)
        if array.ndim != 2:
            raise ValueError(
                f"{what}s must be a list of lists of ids or an array [batch, length]; "
                f"got an array of shape {array.shape}."
            )
        if lengths is None:
            rows = list(array)
        else:
            lengths = np.asarray(lengths)
            if lengths.shape != (array.shape[0],):
                raise ValueError(
                    f"lengths has shape {lengths.shape}; expected ({array.shape[0]},), "
                    f"one length per {what}."
                )
            for i, n in enumerate(lengths):
                if not 0 <= n <= array.shape[1]:
                    raise ValueError(
                        f"lengths[{i}]={n} is outside [0, {array.shape[1]}] "
                        f"(the {what} array's width)."
                    )
            rows = [row[:n] for row, n in zip(array, lengths, strict=True)]
    if not rows:
        raise ValueError(f"No {what}s given: pass at least one.")
    for i, row in enumerate(rows):
        if row.ndim != 1:
            raise ValueError(f"{what} {i} must be a flat sequence of ids; got shape {row.shape}.")
        if row.size == 0:
            raise ValueError(f"{what} {i} is empty; every {what} needs at least one token.")
        if not np.issubdtype(row.dtype, np.integer):
            raise ValueError(f"{what} {i} holds {row.dtype} values; token ids must be integers.")
    return [row.astype(np.int64) for row in rows]


def check_ids(rows: Sequence[np.ndarray], vocab_size: int, *, what: str = "prompt") -> None:
    for i, row in enumerate(rows):
        bad = (row < 0) | (row >= vocab_size)
        if bad.any():
            j = int(np.argmax(bad))
            raise ValueError(
                f"{what} {i} has token id {int(row[j])} at index {j}, outside the model's "
                f"vocabulary [0, {vocab_size})."
            )


def check_no_pad(rows: Sequence[np.ndarray], pad_id: int | None) -> None:
    """Decoder prompts must not hold the pad id: the uncached forward masks such keys while
    the cache (filled by position) would attend to them, so the two would disagree."""
    if pad_id is None:
        return
    for i, row in enumerate(rows):
        if (row == pad_id).any():
            j = int(np.argmax(row == pad_id))
            raise ValueError(
                f"prompt {i} holds the pad id {pad_id} at index {j}; pass each prompt "
                "unpadded (a list of lists, or an array with `lengths`)."
            )


def check_id(name: str, value: int | None, vocab_size: int) -> None:
    if value is not None and not (isinstance(value, int | np.integer) and 0 <= value < vocab_size):
        raise ValueError(f"{name}={value!r} must be a token id in [0, vocab_size={vocab_size}).")


def check_lengths(
    rows: Sequence[np.ndarray], max_len: int, *, what: str = "prompt", extra: int = 0
) -> None:
    """Each row, plus `extra` generated tokens, must fit the model's position limit."""
    for i, row in enumerate(rows):
        if len(row) > max_len:
            raise ValueError(
                f"{what} {i} has {len(row)} tokens, more than the model's position limit "
                f"max_len={max_len}; truncate it."
            )
        if len(row) + extra > max_len:
            raise ValueError(
                f"{what} {i} ({len(row)} tokens) + max_new_tokens={extra} = {len(row) + extra} "
                f"exceeds the model's position limit max_len={max_len}; lower max_new_tokens "
                f"to <= {max_len - len(row)} or shorten the {what}."
            )


def check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer.")
    return int(value)


def padded_width(rows: Sequence[np.ndarray], max_len: int, pad_id: int | None, what: str) -> int:
    """Width of the padded block: bucketed when pads can be masked (pad_id set); otherwise
    every row must have the same length and the block is exactly that long."""
    longest = max(len(row) for row in rows)
    if pad_id is not None:
        return bucket_length(longest, max_len)
    if any(len(row) != longest for row in rows):
        raise ValueError(
            f"{what}s of different lengths need padding, but ModelConfig.pad_id is None so "
            "pads cannot be masked: pass equal-length inputs or set pad_id."
        )
    return longest


def pad_rows(rows: Sequence[np.ndarray], width: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pads rows into a block [B, width] int32; returns (block, lengths [B] int32)."""
    block = np.full((len(rows), width), pad, np.int32)  # [B, width]
    for i, row in enumerate(rows):
        block[i, : len(row)] = row
    lengths = np.array([len(row) for row in rows], np.int32)  # [B]
    return block, lengths
