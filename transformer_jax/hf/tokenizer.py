"""A checkpoint's own tokenizer: `load_tokenizer(dir)` -> a `TextTokenizer`.

  tokenizer.json                                -> `tokenizers` (byte-level BPE of GPT-2,
                                                   RoBERTa, BART, Falcon, ...; WordPiece of BERT)
  source.spm + target.spm + vocab.json          -> Marian (MarianTokenizer): pieces from the
                                                   source model for `encode`, from the target
                                                   model for `encode_target` and `decode`; ids
                                                   from the shared vocab.json
  tokenizer.model / spiece.model / source.spm   -> sentencepiece (LLaMA, Mistral, T5)
  tokenizer.model + tokenizer_config.json with tokenizer_class "TransformerJaxTokenizer"
                                                -> this library's own sentencepiece tokenizer

tokenizer.json wins when a directory holds both (it is what transformers uses then). Special
ids come from the files next to it (special_tokens.py). `save` writes the files read, byte for
byte, so a saved directory tokenizes exactly as the one loaded.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from transformer_jax.hf import special_tokens
from transformer_jax.hf.files import read_json
from transformer_jax.text_tokenizer import TextTokenizer

TOKENIZER_JSON = "tokenizer.json"
SENTENCEPIECE_FILES = ("tokenizer.model", "spiece.model", "source.spm")
MARIAN_FILES = ("source.spm", "target.spm", "vocab.json")
SIDE_FILES = (special_tokens.TOKENIZER_CONFIG, special_tokens.SPECIAL_TOKENS_MAP)
OWN_CLASS = "TransformerJaxTokenizer"


_CLEAN_UP = (
    (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
    (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
)  # fmt: skip


def _clean_up(text: str) -> str:
    """transformers' `clean_up_tokenization` (WordPiece tokenizers that ask for it)."""
    for a, b in _CLEAN_UP:
        text = text.replace(a, b)
    return text


class _Files:
    """The tokenizer's files as read (name -> bytes): the digest and `save` use them."""

    def __init__(self, directory: str, names: Sequence[str]):
        self.data: dict[str, bytes] = {}
        for name in names:
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    self.data[name] = f.read()
        sha = hashlib.sha256()
        for name in sorted(self.data):
            sha.update(name.encode() + b"\0" + self.data[name] + b"\0")
        self.digest = sha.hexdigest()

    def save(self, directory: str) -> list[str]:
        for name, data in self.data.items():
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data)
        return sorted(self.data)


class _Base:
    """What both HF kinds share: special ids, decode filtering, save."""

    _files: _Files
    vocab_size: int

    def _init_specials(self, directory: str, defaults: dict[str, int | None], extra: set[int]):
        ids = special_tokens.special_ids(directory, self._token_to_id, defaults)
        self.pad_id, self.unk_id, self.bos_id = ids["pad"], ids["unk"], ids["bos"]
        self.eos_id, self.mask_id = ids["eos"], ids["mask"]
        self.cls_id, self.sep_id = ids["cls"], ids["sep"]
        self.decoder_start_id = ids["decoder_start"]
        named = {ids[n] for n in special_tokens.NAMES if n != "unk" and ids[n] is not None}
        self.special_ids = frozenset(named | extra)
        self.digest = self._files.digest
        self._drop = np.zeros(self.vocab_size, bool)
        self._drop[[i for i in self.special_ids if 0 <= i < self.vocab_size]] = True
        newline = self.encode("\n")
        self.newline_id = newline[0] if len(newline) == 1 else None
        self.sentinel_ids = special_tokens.sentinel_ids(self._token_to_id)

    def _token_to_id(self, token: str) -> int | None:
        raise NotImplementedError

    def _keep(self, ids: Iterable[int]) -> list[int]:
        ids = np.asarray(ids if hasattr(ids, "__array__") else list(ids), np.int64).reshape(-1)
        ids = ids[(ids >= 0) & (ids < self.vocab_size)]
        return ids[~self._drop[ids]].tolist()

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def save(self, directory: str) -> list[str]:
        return self._files.save(directory)


class HFTokenizer(_Base):
    """A `tokenizer.json` (the `tokenizers` package), as transformers' fast tokenizers use it."""

    def __init__(self, directory: str):
        import tokenizers

        self._files = _Files(directory, (TOKENIZER_JSON, *SIDE_FILES))
        path = os.path.join(directory, TOKENIZER_JSON)
        try:
            self._tok = tokenizers.Tokenizer.from_str(self._files.data[TOKENIZER_JSON].decode())
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON
            raise ValueError(f"{path}: not a tokenizers file the package can read ({e}).") from e
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        added = self._tok.get_added_tokens_decoder()  # id -> AddedToken
        config = special_tokens.read_optional(directory, special_tokens.TOKENIZER_CONFIG)
        self._clean_up = bool(config.get("clean_up_tokenization_spaces", False)) and (
            type(self._tok.model).__name__ != "BPE"  # transformers skips it for BPE
        )
        self._init_specials(directory, {}, {i for i, t in added.items() if t.special})
        framed = self._tok.encode("a", add_special_tokens=True).ids
        self.add_bos = self.bos_id is not None and len(framed) > 1 and framed[0] == self.bos_id

    def _token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], num_threads: int = 2) -> list[list[int]]:
        del num_threads  # tokenizers sizes its own pool (RAYON_NUM_THREADS)
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [e.ids for e in encodings]

    def decode(self, ids: Iterable[int]) -> str:
        text = self._tok.decode(self._keep(ids), skip_special_tokens=True)
        return _clean_up(text) if self._clean_up else text

    def id_to_piece(self, token_id: int) -> str:
        return self._tok.id_to_token(int(token_id))


class SentencePieceTokenizer(_Base):
    """A sentencepiece model file as a checkpoint ships it (LLaMA's tokenizer.model, T5's
    spiece.model, Marian's source.spm). Tokens added past the model's pieces (T5's
    <extra_id_N>) count in vocab_size and are special; they are not parsed out of text.

    Encodings follow transformers (what the checkpoint was used with), which differs from
    sentencepiece's own in one place: with a dummy prefix, a text that already starts with a
    space gets no second one (" a" is "▁a", not "▁▁a"; Metaspace prepend_scheme="first")."""

    def __init__(self, directory: str, filename: str):
        import sentencepiece as spm

        self._files = _Files(directory, (filename, *SIDE_FILES))
        path = os.path.join(directory, filename)
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=self._files.data[filename])
        except Exception as e:  # RuntimeError from the C++ parser
            raise ValueError(f"{path}: not a sentencepiece model ({e}).") from e
        config = special_tokens.read_optional(directory, special_tokens.TOKENIZER_CONFIG)
        decoder = config.get("added_tokens_decoder") or {}  # id -> serialized AddedToken
        added = {int(i) for i in decoder}
        self._added = {special_tokens.content(t): int(i) for i, t in decoder.items()}
        self._pieces = self._sp.vocab_size()
        self.vocab_size = max([self._pieces, *(i + 1 for i in added)])
        own = lambda i: i if 0 <= i < self._pieces else None  # noqa: E731  (-1: none)
        defaults = {"pad": own(self._sp.pad_id()), "unk": own(self._sp.unk_id()),
                    "bos": own(self._sp.bos_id()), "eos": own(self._sp.eos_id())}  # fmt: skip
        # XLNet's (and ALBERT's) text preprocessing, as their tokenizer_config.json asks:
        # whitespace runs collapsed, ``/'' as ", accents stripped (NFKD), lowercase.
        self._remove_space = bool(config.get("remove_space", False))
        self._strip_accents = config.get("keep_accents", True) is False
        self._lower = bool(config.get("do_lower_case", False))
        control = {i for i in range(self._pieces) if self._sp.is_control(i)}
        self._init_specials(directory, defaults, control | {i for i in added if i >= self._pieces})
        self.add_bos = bool(config.get("add_bos_token", False)) and self.bos_id is not None

    def _prepare(self, text: str) -> str:
        import unicodedata

        if self._remove_space:
            text = " ".join(text.strip().split()).replace("``", '"').replace("''", '"')
        if self._strip_accents:
            text = unicodedata.normalize("NFKD", text)
            text = "".join(c for c in text if not unicodedata.combining(c))
        return text.lower() if self._lower else text

    def _token_to_id(self, token: str) -> int | None:
        if token in self._added:  # tokens added past the pieces (T5's <extra_id_N>)
            return self._added[token]
        i = self._sp.piece_to_id(token)
        return None if i == self._sp.unk_id() and token != self._sp.id_to_piece(i) else i

    @property
    def _dummy_prefix(self) -> bool:
        first = self._sp.encode("a", out_type=str)
        return bool(first) and first[0].startswith("\u2581")

    def encode(self, text: str) -> list[int]:
        text = self._prepare(text)
        if text.startswith(" ") and self._dummy_prefix:
            # the leading space stands for the prefix; a lone space is the piece "▁"
            return self._sp.encode(text[1:]) if len(text) > 1 else [self._sp.piece_to_id("\u2581")]
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str], num_threads: int = 2) -> list[list[int]]:
        texts = [self._prepare(t) for t in texts]
        if any(t.startswith(" ") for t in texts):
            return [self.encode(t) for t in texts]  # (prepared twice: idempotent)
        return self._sp.encode(texts, num_threads=num_threads)

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([i for i in self._keep(ids) if i < self._pieces])

    def id_to_piece(self, token_id: int) -> str:
        token_id = int(token_id)
        return self._sp.id_to_piece(token_id) if token_id < self._pieces else f"<id {token_id}>"


class MarianTokenizer(_Base):
    """Marian's files (Helsinki-NLP/opus-mt-*), as transformers' MarianTokenizer reads them:
    text -> pieces of source.spm (`encode`, the encoder's inputs) or target.spm
    (`encode_target`, training targets) -> ids of the shared vocab.json (<unk> for a piece it
    lacks); ids -> vocab.json pieces -> text through target.spm (`decode`: generated
    targets; transformers' `decode(..., use_source_tokenizer=False)`). A leading language
    code `>>xx<<` is one token. <unk> is special here (decode drops it, as transformers
    does). Moses punctuation normalisation (transformers applies it only when sacremoses is
    installed) is not applied."""

    def __init__(self, directory: str):
        import sentencepiece as spm

        self._files = _Files(directory, (*MARIAN_FILES, *SIDE_FILES))
        config = special_tokens.read_optional(directory, special_tokens.TOKENIZER_CONFIG)
        if config.get("separate_vocabs") or os.path.isfile(
            os.path.join(directory, "target_vocab.json")
        ):
            raise ValueError(
                f"{directory}: a Marian tokenizer with separate source and target vocabularies "
                "(separate_vocabs / target_vocab.json) is not supported; transformer_jax's "
                "Marian shares one vocabulary between encoder and decoder."
            )
        self._vocab = read_json(os.path.join(directory, "vocab.json"), "Marian vocab.json")
        self.vocab_size = max(self._vocab.values()) + 1
        self._pieces = [""] * self.vocab_size  # id -> piece
        for piece, i in self._vocab.items():
            self._pieces[i] = piece
        self._source, self._target = (
            spm.SentencePieceProcessor(model_proto=self._files.data[name])
            for name in ("source.spm", "target.spm")
        )
        unk = special_tokens.content(config.get("unk_token")) or "<unk>"
        if unk not in self._vocab:
            raise ValueError(f"{directory}/vocab.json has no {unk!r} (Marian's unk token).")
        defaults = {n: self._vocab.get(t) for n, t in
                    (("unk", "<unk>"), ("eos", "</s>"), ("pad", "<pad>"))}  # fmt: skip
        self._init_specials(directory, defaults, set())
        self.special_ids = self.special_ids | {self.unk_id}
        self._drop[self.unk_id] = True
        self.add_bos = False

    def _token_to_id(self, token: str) -> int | None:
        return self._vocab.get(token)

    def _ids(self, sp, text: str) -> list[int]:
        code = []
        if text.startswith(">>") and (end := text.find("<<")) != -1:  # a language code
            code, text = [text[: end + 2]], text[end + 2 :]
        return [self._vocab.get(p, self.unk_id) for p in code + sp.encode(text, out_type=str)]

    def encode(self, text: str) -> list[int]:
        return self._ids(self._source, text)

    def encode_target(self, text: str) -> list[int]:
        """Ids of a target-language `text` (target.spm), with no special tokens added."""
        return self._ids(self._target, text)

    def encode_batch(self, texts: Sequence[str], num_threads: int = 2) -> list[list[int]]:
        del num_threads
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        pieces = [self._pieces[i] for i in self._keep(ids)]
        return self._target.decode_pieces(pieces).replace("\u2581", " ").strip()

    def id_to_piece(self, token_id: int) -> str:
        return self._pieces[int(token_id)]


def load_tokenizer(directory: str) -> TextTokenizer:
    """The tokenizer a checkpoint directory ships (see the module docstring)."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"No tokenizer directory {directory!r}.")
    config_path = os.path.join(directory, special_tokens.TOKENIZER_CONFIG)
    config = read_json(config_path, "tokenizer config") if os.path.isfile(config_path) else {}
    if config.get("tokenizer_class") == OWN_CLASS:
        from transformer_jax.data.tokenizer import TOKENIZER_FILENAME, Tokenizer

        return Tokenizer.load(os.path.join(directory, TOKENIZER_FILENAME))
    if os.path.isfile(os.path.join(directory, TOKENIZER_JSON)):
        return HFTokenizer(directory)
    if all(os.path.isfile(os.path.join(directory, name)) for name in MARIAN_FILES):
        return MarianTokenizer(directory)
    for name in SENTENCEPIECE_FILES:
        if os.path.isfile(os.path.join(directory, name)):
            return SentencePieceTokenizer(directory, name)
    names = ", ".join((TOKENIZER_JSON, *SENTENCEPIECE_FILES))
    legacy = [f for f in ("vocab.json", "vocab.txt") if os.path.isfile(os.path.join(directory, f))]
    hint = (
        f" It holds {legacy[0]} (a slow-tokenizer vocabulary): load it once with transformers' "
        "AutoTokenizer and save_pretrained, which writes tokenizer.json."
        if legacy
        else ""
    )
    raise FileNotFoundError(f"{directory!r} has no tokenizer file ({names}).{hint}")


def own_tokenizer_config() -> dict[str, Any]:
    """tokenizer_config.json written next to this library's own tokenizer.model."""
    return {"tokenizer_class": OWN_CLASS, "note": "transformer_jax sentencepiece tokenizer"}
