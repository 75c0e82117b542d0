"""Tokenizer: fixed special ids, exact round trips, reuse from a workdir, vocab size errors."""

import os

import numpy as np
import pytest

from transformer_jax.data import synthetic
from transformer_jax.data import tokenizer as tok_lib

VOCAB = 400


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    return [synthetic.code_document(rng) for _ in range(30)]


@pytest.fixture(scope="module")
def tok(corpus, tmp_path_factory):
    path = os.path.join(tmp_path_factory.mktemp("tok"), "tokenizer.model")
    return tok_lib.train_tokenizer(corpus, VOCAB, path)


def test_special_ids_are_fixed(tok):
    assert tok.vocab_size == VOCAB
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert (tok.mask_id, tok.cls_id, tok.sep_id) == (4, 5, 6)
    pieces = [tok.id_to_piece(i) for i in range(8)]
    assert pieces == ["<pad>", "<unk>", "<s>", "</s>", "[MASK]", "[CLS]", "[SEP]", "\n"]


@pytest.mark.parametrize(
    "text",
    [
        "def f(x):\n    if x:\n\treturn x  # tab\n\n\n        deep = 1\n",
        "  leading spaces and trailing   \n",
        "ünïcødé 日本語 emoji 😀 never seen in training ☃\r\n",
        "literal specials [MASK] [CLS] [SEP] <s> </s> <pad> <0x0A>",
        "sentencepiece marks \u2581 and \u2581\u2581 and the escape \ue000w \ue000\ue000 x",
        "",
        "\n",
    ],
)
def test_round_trip_is_exact(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(i == tok.newline_id or i >= tok.num_special + 1 for i in ids)  # no unk/specials


def test_round_trip_of_training_corpus(tok, corpus):
    for doc, ids in zip(corpus, tok.encode_batch(corpus), strict=True):
        assert tok.decode(ids) == doc


def test_decode_drops_special_and_out_of_range_ids(tok):
    ids = tok.encode("x = 1\n")
    noisy = [tok.bos_id, tok.cls_id, *ids, tok.mask_id, tok.sep_id, VOCAB, 10**6, -1, 0, 3]
    assert tok.decode(noisy) == "x = 1\n"
    assert tok.decode(np.asarray(ids, np.int32)) == "x = 1\n"


def test_reuse_from_workdir(corpus, tmp_path):
    first = tok_lib.get_or_train_tokenizer(str(tmp_path), corpus, VOCAB)
    assert os.path.exists(tmp_path / "tokenizer.model")

    def must_not_read():
        raise AssertionError("texts were read although tokenizer.model exists")

    again = tok_lib.get_or_train_tokenizer(str(tmp_path), must_not_read, VOCAB)
    assert again.digest == first.digest
    with pytest.raises(ValueError, match="vocab_size=500.*set vocab_size=400"):
        tok_lib.get_or_train_tokenizer(str(tmp_path), must_not_read, 500)


@pytest.mark.parametrize("vocab_size", [0, 7, 100, 264])
def test_too_small_vocab_is_rejected(corpus, tmp_path, vocab_size):
    with pytest.raises(ValueError, match=r"vocab_size=\d+ is too small.*256 byte pieces"):
        tok_lib.train_tokenizer(corpus, vocab_size, str(tmp_path / "t.model"))


def test_vocab_larger_than_corpus_supports_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="vocab_size=5000.*choose a vocab_size"):
        tok_lib.train_tokenizer(["a b c\n"] * 3, 5000, str(tmp_path / "t.model"))
    assert not os.path.exists(tmp_path / "t.model")


def test_load_rejects_foreign_models(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        tok_lib.Tokenizer.load(str(tmp_path / "missing.model"))
