"""The one tokenizer interface that train.py, sample.py and the data pipeline use.

Two kinds implement it:
  * `transformer_jax.data.Tokenizer`: this library's sentencepiece model (fixed special ids);
  * `transformer_jax.hf.load_tokenizer(dir)`: a checkpoint's own tokenizer (`tokenizer.json`
    through the `tokenizers` package, or a sentencepiece `tokenizer.model` / `spiece.model` /
    `source.spm`), with the special ids its files name.

How a model's inputs are framed, the same rule for both kinds:
  * decoder-only prompt: `[bos] if add_bos` + ids; the decoder's first input (generation and
    training rows) is `decoder_start_id` when it is not None;
  * encoder-decoder source: `[bos] if add_bos` + ids + `[eos]`; the decoder starts with
    `decoder_start_id`;
  * encoder-only: `[cls]` + ids + `[sep]`.

This module imports nothing heavy (no TensorFlow, no sentencepiece), so anything can name it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class TextTokenizer(Protocol):
    """Text <-> token ids, and the special ids a model needs. An id the tokenizer does not
    have is None (GPT-2 has no pad, mask, cls or sep)."""

    vocab_size: int  # ids are in [0, vocab_size)
    pad_id: int | None
    unk_id: int | None
    bos_id: int | None
    eos_id: int | None
    mask_id: int | None
    cls_id: int | None
    sep_id: int | None
    decoder_start_id: int | None  # the decoder's first input (BART: eos; ours: bos)
    newline_id: int | None  # the id "\n" encodes to, if it is one token (lines, NSP)
    add_bos: bool  # sequences fed to the model start with bos (LLaMA, BART; not GPT-2)
    special_ids: frozenset[int]  # never produced by encode, dropped by decode, never masked
    # T5's span-corruption sentinels: entry k is the id of `<extra_id_k>`; () if it has none
    # (span corruption then puts them after the vocabulary, data/objectives.py)
    sentinel_ids: tuple[int, ...]
    digest: str  # sha256 of the tokenizer's files: the data cache key

    def encode(self, text: str) -> list[int]:
        """Ids of `text`, with no special tokens added."""

    def encode_batch(self, texts: Sequence[str], num_threads: int = 2) -> list[list[int]]:
        """`encode` of each text."""

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; special ids and ids outside [0, vocab_size) are dropped."""

    def id_to_piece(self, token_id: int) -> str:
        """The vocabulary entry of one id (as the tokenizer spells it)."""

    def save(self, directory: str) -> list[str]:
        """Writes the tokenizer's files into `directory` (which exists); returns their names."""


def frame_prompt(tokenizer: TextTokenizer, ids: Sequence[int], arch: str) -> list[int]:
    """One prompt as the model saw its inputs in training (see the module docstring)."""
    ids = list(ids)
    if arch == "encoder":
        if tokenizer.cls_id is None or tokenizer.sep_id is None:
            raise ValueError(
                "An encoder-only model's inputs are [CLS] text [SEP], but this tokenizer has "
                f"cls_id={tokenizer.cls_id}, sep_id={tokenizer.sep_id}; name cls_token and "
                "sep_token in its tokenizer_config.json."
            )
        return [tokenizer.cls_id, *ids, tokenizer.sep_id]
    start = [tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id is not None else []
    if arch in ("decoder", "two_stream"):  # two_stream (XLNet): continued like a decoder
        return start + ids
    if tokenizer.eos_id is None:
        raise ValueError(
            "An encoder-decoder model's sources end with eos, but this tokenizer has no "
            "eos_id; name eos_token in its tokenizer_config.json."
        )
    return start + ids + [tokenizer.eos_id]


def decoder_start(tokenizer: TextTokenizer, arch: str) -> int | None:
    """The id generation starts the decoder with: `decoder_start_id`, else (an
    encoder-decoder whose tokenizer names none) `bos_id`; none for XLNet (`two_stream`), which
    trains with PLM on plain text and continues a prompt without a start token."""
    if arch == "two_stream":
        return None
    start = tokenizer.decoder_start_id
    if start is None and arch == "encoder_decoder":
        start = tokenizer.bos_id
    return start
