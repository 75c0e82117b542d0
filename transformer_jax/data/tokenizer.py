"""SentencePiece tokenizer with fixed special ids and exact text round trips.

Vocabulary layout (always):

    0 <pad>   1 <unk>   2 <s> (bos)   3 </s> (eos)   4 [MASK]   5 [CLS]   6 [SEP]
    7 "\\n" (newline piece)   8..263 byte pieces <0x00>..<0xFF>   264.. learned pieces

Design for exact round trips (code keeps its indentation and newlines):
  * `normalization_rule_name='identity'`, `remove_extra_whitespaces=False`,
    `add_dummy_prefix=False`: every space survives; no unicode normalization.
  * Newline is a user-defined piece, so `encode` takes whole documents; SentencePiece trains
    on lines (one sentence per line), and the newline piece joins them back.
  * `byte_fallback=True`: a character never seen in training becomes its UTF-8 byte pieces,
    so `<unk>` never comes out of `encode`.
  * `[MASK]`, `[CLS]`, `[SEP]` are *control* symbols: they have reserved ids but the literal
    text "[MASK]" is encoded as ordinary characters, so no input text can forge them.
  * SentencePiece writes a space as U+2581 ("▁") and decodes every U+2581 back to a space.
    To keep a literal U+2581 (and the escape character itself) exact, text is escaped before
    encoding: U+E000 -> U+E000 U+E000, U+2581 -> U+E000 "w"; decode undoes it.

Text edge cases (defined behaviour, never an error from inside SentencePiece or TensorFlow):
  * Files are read as UTF-8 with invalid bytes (including UTF-8-encoded surrogates) replaced
    by U+FFFD, one per bad byte; a Python `str` holding lone surrogates (which no file read
    here can produce) has each of them replaced by U+FFFD before encoding.
  * NUL, BOM, CR and every other code point are ordinary text and round-trip exactly.
  * An empty document encodes to no ids (the pipeline skips it); a split with no text at all
    is a `ValueError` naming the split.
  * Lines of any length are encoded in full. Tokenizer TRAINING skips lines longer than
    `max_sentence_bytes` (4192); if no line is shorter, it trains on pieces of the long ones.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import sentencepiece as spm

PAD_ID, UNK_ID, BOS_ID, EOS_ID, MASK_ID, CLS_ID, SEP_ID, NEWLINE_ID = range(8)
NUM_SPECIAL = 7  # ids 0..6 never appear in text; the newline piece (7) is ordinary text
CONTROL_PIECES = ("[MASK]", "[CLS]", "[SEP]")
NEWLINE_PIECE = "\n"
NUM_BYTE_PIECES = 256
# Specials + newline + 256 byte pieces; SentencePiece also needs one piece per character kept
# by `character_coverage`, so real minimums are a few dozen (ASCII text) to hundreds higher.
MIN_VOCAB_SIZE = NUM_SPECIAL + 1 + NUM_BYTE_PIECES
TOKENIZER_FILENAME = "tokenizer.model"

_ESC = "\ue000"
_SPACE_MARK = "\u2581"
_UNESCAPE = re.compile(_ESC + "(.)", re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(text: str) -> str:
    if not text.isascii() and _SURROGATE.search(text):  # unencodable: SentencePiece would fail
        text = _SURROGATE.sub("\ufffd", text)
    if _ESC not in text and _SPACE_MARK not in text:
        return text
    return text.replace(_ESC, _ESC + _ESC).replace(_SPACE_MARK, _ESC + "w")


def _unescape(text: str) -> str:
    if _ESC not in text:
        return text
    return _UNESCAPE.sub(lambda m: {"w": _SPACE_MARK, _ESC: _ESC}.get(m[1], m[0]), text)


def check_vocab_size(vocab_size: int) -> None:
    """ValueError unless `vocab_size` can hold the special, newline and byte pieces."""
    if not isinstance(vocab_size, int | np.integer) or vocab_size < MIN_VOCAB_SIZE + 1:
        raise ValueError(
            f"vocab_size={vocab_size!r} is too small: with byte_fallback the vocabulary holds "
            f"{NUM_SPECIAL} special pieces + 1 newline piece + {NUM_BYTE_PIECES} byte pieces "
            f"= {MIN_VOCAB_SIZE}, plus one piece per distinct character and the learned "
            f"pieces; use vocab_size >= 512 (2000-32000 is typical)"
        )


class Tokenizer:
    """A SentencePiece model with this module's fixed special ids (see the module docstring)."""

    def __init__(self, model_proto: bytes, path: str | None = None):
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self._proto = model_proto
        self.path = path
        self.digest = hashlib.sha256(model_proto).hexdigest()
        expected = {
            PAD_ID: "<pad>", UNK_ID: "<unk>", BOS_ID: "<s>", EOS_ID: "</s>",
            MASK_ID: "[MASK]", CLS_ID: "[CLS]", SEP_ID: "[SEP]", NEWLINE_ID: NEWLINE_PIECE,
        }  # fmt: skip
        actual = {i: self._sp.id_to_piece(i) for i in expected if i < self._sp.vocab_size()}
        if actual != expected:
            raise ValueError(
                f"tokenizer {path or '<bytes>'} does not have this library's special pieces "
                f"(expected {expected}, got {actual}); train it with train_tokenizer()"
            )
        self._drop = np.zeros(self.vocab_size, bool)
        self._drop[[PAD_ID, BOS_ID, EOS_ID, MASK_ID, CLS_ID, SEP_ID]] = True
        self.sentinel_ids: tuple[int, ...] = ()  # span corruption's come after the vocab

    @classmethod
    def load(cls, path: str) -> Tokenizer:
        """Loads a `.model` file written by `train_tokenizer`."""
        if not os.path.exists(path):
            raise ValueError(f"tokenizer model {path!r} does not exist; train one first")
        with open(path, "rb") as f:
            return cls(f.read(), path)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no bos/eos added); never contains special ids."""
        return self._sp.encode(_escape(text))

    def encode_batch(self, texts: Sequence[str], num_threads: int = 2) -> list[list[int]]:
        """`encode` over a batch, in SentencePiece's C++ threads."""
        return self._sp.encode([_escape(t) for t in texts], num_threads=num_threads)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; pad/bos/eos/mask/cls/sep and ids outside [0, vocab_size) are dropped."""
        ids = np.asarray(ids if hasattr(ids, "__array__") else list(ids), np.int64).reshape(-1)
        ids = ids[(ids >= 0) & (ids < self.vocab_size)]
        ids = ids[~self._drop[ids]]
        return _unescape(self._sp.decode(ids.tolist()))

    def id_to_piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(int(token_id))

    @property
    def vocab_size(self) -> int:
        return self._sp.vocab_size()

    pad_id = property(lambda self: PAD_ID)
    unk_id = property(lambda self: UNK_ID)
    bos_id = property(lambda self: BOS_ID)
    eos_id = property(lambda self: EOS_ID)
    mask_id = property(lambda self: MASK_ID)
    cls_id = property(lambda self: CLS_ID)
    sep_id = property(lambda self: SEP_ID)
    newline_id = property(lambda self: NEWLINE_ID)
    num_special = property(lambda self: NUM_SPECIAL)
    # The TextTokenizer interface (transformer_jax/text_tokenizer.py): decoders start from
    # BOS (training rows are shifted right with it); sources carry no BOS.
    decoder_start_id = property(lambda self: BOS_ID)
    add_bos = property(lambda self: False)
    special_ids = property(lambda self: frozenset(range(NUM_SPECIAL)))

    def save(self, directory: str) -> list[str]:
        """Writes tokenizer.model and a tokenizer_config.json that names this class, so
        `transformer_jax.hf.load_tokenizer(directory)` reads it back as this tokenizer."""
        import json

        from transformer_jax.hf.tokenizer import own_tokenizer_config

        with open(os.path.join(directory, TOKENIZER_FILENAME), "wb") as f:
            f.write(self._proto)
        with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
            json.dump(own_tokenizer_config(), f, indent=2)
        return [TOKENIZER_FILENAME, "tokenizer_config.json"]


def _sample_lines(
    texts: Iterable[str], max_sentences: int, max_sentence_bytes: int, seed: int
) -> list[str]:
    """Non-empty lines of `texts` (escaped), at most `max_sentences`, sampled deterministically.

    Reads at most 20 * max_sentences lines, so huge corpora stay cheap. Lines longer than
    `max_sentence_bytes` are skipped; if no line is shorter, pieces of the long lines are used.
    """
    budget = 20 * max_sentences
    lines: list[str] = []
    pieces: list[str] = []  # of long lines, kept only while no line fits
    width = max(1, max_sentence_bytes // 4)  # characters: UTF-8 needs at most 4 bytes each
    for text in texts:
        for line in _escape(text).split("\n"):
            if line and len(line.encode("utf-8")) <= max_sentence_bytes:
                lines.append(line)
            elif line and not lines and len(pieces) < max_sentences:
                pieces.extend(line[i : i + width] for i in range(0, len(line), width))
        if len(lines) >= budget:
            break
    if not lines:
        lines = pieces[:max_sentences]
    if len(lines) > max_sentences:
        keep = np.random.default_rng(seed).choice(len(lines), max_sentences, replace=False)
        lines = [lines[i] for i in np.sort(keep)]
    return lines


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    model_path: str,
    *,
    model_type: str = "bpe",
    max_sentences: int = 100_000,
    max_sentence_bytes: int = 4192,
    character_coverage: float = 0.9995,
    seed: int = 0,
    num_threads: int = 2,
) -> Tokenizer:
    """Trains SentencePiece on the lines of `texts` (train split only) and writes `model_path`.

    Lines are sampled down to `max_sentences`. BPE (default) trains the stdlib corpus (100k
    lines, vocab 8000) in ~2 s on 2 cores; unigram takes ~10x longer for a similar fit.
    The vocabulary has exactly `vocab_size` pieces; ValueError if the corpus cannot fill it.
    """
    check_vocab_size(vocab_size)
    if model_type not in ("unigram", "bpe"):
        raise ValueError(f"model_type={model_type!r}; use 'unigram' or 'bpe'")
    lines = _sample_lines(texts, max_sentences, max_sentence_bytes, seed)
    if not lines:
        raise ValueError("no text to train the tokenizer on: the train split has no lines")
    spm.set_random_generator_seed(seed)
    proto = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=proto,
            vocab_size=int(vocab_size),
            model_type=model_type,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            control_symbols=list(CONTROL_PIECES),
            user_defined_symbols=[NEWLINE_PIECE],
            byte_fallback=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            allow_whitespace_only_pieces=True,
            split_digits=False,
            character_coverage=character_coverage,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=True,
            max_sentence_length=max_sentence_bytes,
            train_extremely_large_corpus=False,
            num_threads=num_threads,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise ValueError(
            f"SentencePiece could not train vocab_size={vocab_size} on {len(lines)} lines "
            f"({e}); choose a vocab_size the corpus supports, or add text"
        ) from e
    model_proto = proto.getvalue()
    folder = os.path.dirname(os.path.abspath(model_path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")  # atomic: no half-written model
    with os.fdopen(fd, "wb") as f:
        f.write(model_proto)
    os.replace(tmp, model_path)
    return Tokenizer(model_proto, model_path)


def get_or_train_tokenizer(
    workdir: str,
    texts: Iterable[str] | Callable[[], Iterable[str]],
    vocab_size: int,
    **train_kwargs,
) -> Tokenizer:
    """Loads `WORKDIR/tokenizer.model`, or trains it on `texts` (an iterable or a zero-argument
    callable returning one, only called when training is needed) and saves it there."""
    path = os.path.join(workdir, TOKENIZER_FILENAME)
    if os.path.exists(path):
        tok = Tokenizer.load(path)
        if tok.vocab_size != vocab_size:
            raise ValueError(
                f"{path} has vocab_size={tok.vocab_size} but vocab_size={vocab_size} was asked; "
                f"set vocab_size={tok.vocab_size} or delete the file to retrain"
            )
        return tok
    return train_tokenizer(texts() if callable(texts) else texts, vocab_size, path, **train_kwargs)
