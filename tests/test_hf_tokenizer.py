"""hf.load_tokenizer against transformers' own tokenizers (references made by
tests/hf_fixtures/make_fixtures.py: byte-level BPE as GPT-2 and BART ship it, BERT's
WordPiece, a LLaMA-style sentencepiece model; T5's and Marian's from
tests/hf_fixtures/tokenizer_families.py), the shared TextTokenizer interface, and the files
hf.save writes: tokenizer, shards, our own format."""

from __future__ import annotations

import filecmp
import json
import os

import jax
import numpy as np
import pytest

from transformer_jax import hf, models
from transformer_jax.data.tokenizer import Tokenizer, train_tokenizer
from transformer_jax.families import PRESETS
from transformer_jax.hf.tokenizer import HFTokenizer, MarianTokenizer, SentencePieceTokenizer
from transformer_jax.text_tokenizer import TextTokenizer, frame_prompt

FIXTURES = os.path.join(os.path.dirname(__file__), "hf_fixtures")
# fixture -> (our class, the arch whose framing is transformers' `tok(text)`)
KINDS = {
    "gpt2": (HFTokenizer, "decoder"),  # no special tokens around a sequence
    "bart": (HFTokenizer, "encoder_decoder"),  # <s> text </s>
    "bert_mlm": (HFTokenizer, "encoder"),  # [CLS] text [SEP]
    "spm": (SentencePieceTokenizer, "decoder"),  # <s> text (add_bos_token)
    "t5_tokenizer": (HFTokenizer, "encoder_decoder"),  # text </s>, <extra_id_k> on top
}


def _reference(name):
    with open(os.path.join(FIXTURES, name, "tokenizer_reference.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_encodings_match_transformers(name):
    cls, arch = KINDS[name]
    ref = _reference(name)
    tok = hf.load_tokenizer(os.path.join(FIXTURES, name))
    assert type(tok) is cls and isinstance(tok, TextTokenizer)
    assert [tok.encode(t) for t in ref["texts"]] == ref["ids"]
    assert tok.encode_batch(ref["texts"]) == ref["ids"]
    assert [tok.decode(i) for i in ref["ids"]] == ref["decoded"]
    assert [frame_prompt(tok, i, arch) for i in ref["ids"]] == ref["framed"]
    assert [tok.decode(i) for i in ref["framed"]] == ref["decoded_framed"]
    ours = {n: getattr(tok, f"{n}_id") for n in ref["special"]}
    assert ours == ref["special"] and tok.vocab_size == ref["vocab_size"]


def test_special_ids_and_decoder_start():
    bart = hf.load_tokenizer(os.path.join(FIXTURES, "bart"))
    assert bart.decoder_start_id == 2 and bart.add_bos  # config.json's decoder_start_token_id
    assert {0, 1, 2, 3, 300} <= bart.special_ids and 4 not in bart.special_ids
    gpt2 = hf.load_tokenizer(os.path.join(FIXTURES, "gpt2"))
    assert gpt2.decoder_start_id is None and not gpt2.add_bos and gpt2.special_ids == {299}
    assert gpt2.id_to_piece(gpt2.newline_id) == "Ċ"  # byte-level "\n"
    bert = hf.load_tokenizer(os.path.join(FIXTURES, "bert_mlm"))
    assert bert.newline_id is None  # WordPiece drops whitespace
    assert bert.decode([2, 0, 999, -1, 3]) == ""  # specials and out-of-range ids dropped


@pytest.mark.parametrize("name", ["bart", "spm"])
def test_save_writes_the_files_back(name, tmp_path):
    src = os.path.join(FIXTURES, name)
    tok = hf.load_tokenizer(src)
    names = tok.save(str(tmp_path))
    assert names and all(filecmp.cmp(os.path.join(src, n), tmp_path / n, False) for n in names)
    again = hf.load_tokenizer(str(tmp_path))
    assert again.digest == tok.digest and again.encode("the cat") == tok.encode("the cat")


def test_marian_tokenizer_matches_transformers(tmp_path):
    """source.spm pieces for the encoder, target.spm pieces for targets and decoding, ids from
    the shared vocab.json: equal to transformers' MarianTokenizer (its <unk> dropped on
    decode, as there)."""
    name = "marian_tokenizer"
    ref = _reference(name)
    tok = hf.load_tokenizer(os.path.join(FIXTURES, name))
    assert type(tok) is MarianTokenizer and isinstance(tok, TextTokenizer)
    assert [tok.encode(t) for t in ref["texts"]] == ref["ids"]
    assert tok.encode_batch(ref["texts"]) == ref["ids"]
    assert [frame_prompt(tok, i, "encoder_decoder") for i in ref["ids"]] == ref["framed"]
    assert [[*tok.encode_target(t), tok.eos_id] for t in ref["targets"]] == ref["target_ids"]
    assert [tok.decode(i) for i in ref["target_ids"]] == ref["decoded_targets"]
    assert tok.encode("Größe") != tok.encode_target("Größe")  # two sentencepiece models
    assert {n: getattr(tok, f"{n}_id") for n in ref["special"]} == ref["special"]
    assert tok.vocab_size == ref["vocab_size"] and tok.sentinel_ids == ()
    assert tok.encode(">>de<< the dog")[0] == tok.unk_id  # a language code is one token
    names = tok.save(str(tmp_path))
    assert sorted(names) == ["source.spm", "target.spm", "tokenizer_config.json", "vocab.json"]
    assert hf.load_tokenizer(str(tmp_path)).encode(ref["texts"][0]) == ref["ids"][0]
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "separate_vocabs": 1}))
    with pytest.raises(ValueError, match="separate source and target vocabularies"):
        hf.load_tokenizer(str(tmp_path))


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="No tokenizer directory"):
        hf.load_tokenizer(str(tmp_path / "nothing"))
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(FileNotFoundError, match="no tokenizer file.*vocab.txt.*save_pretrained"):
        hf.load_tokenizer(str(tmp_path))
    src = os.path.join(FIXTURES, "bart")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / f).write_bytes(open(os.path.join(src, f), "rb").read())
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "mask_token": "<m>"}))
    with pytest.raises(ValueError, match=r"mask_token='<m>' is not in the tokenizer's vocab"):
        hf.load_tokenizer(str(tmp_path))
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json: not a tokenizers file"):
        hf.load_tokenizer(str(tmp_path))


def test_own_tokenizer_shares_the_interface(tmp_path):
    text = "def f(x):\n    return x * 2  # ünïcode\n" * 40
    tok = train_tokenizer([text], 300, str(tmp_path / "t.model"))
    assert isinstance(tok, TextTokenizer)
    assert (tok.decoder_start_id, tok.add_bos, tok.special_ids) == (2, False, set(range(7)))
    assert frame_prompt(tok, [9], "encoder_decoder") == [9, 3]  # as seq2seq training rows
    out = tmp_path / "saved"
    out.mkdir()
    tok.save(str(out))
    again = hf.load_tokenizer(str(out))
    assert type(again) is Tokenizer and again.digest == tok.digest
    assert again.decode(again.encode(text)) == text


def _random_params(config, seed=0):
    shapes = jax.eval_shape(lambda r: models.init_params(config, r), jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)


def _same(a, b):
    la, lb = jax.tree_util.tree_leaves_with_path(a), dict(jax.tree_util.tree_leaves_with_path(b))
    return len(la) == len(lb) and all(
        np.array_equal(v, lb[p]) and v.dtype == lb[p].dtype for p, v in la
    )


def test_save_with_tokenizer_and_shards(tmp_path):
    src = os.path.join(FIXTURES, "gpt2")
    config, params = hf.load(src)
    tok = hf.load_tokenizer(src)
    written = hf.save(config, params, str(tmp_path), tokenizer=tok, max_shard_size=30_000)
    shards = [n for n in written if n.startswith("model-")]
    assert len(shards) >= 3 and "model.safetensors.index.json" in written
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(written)
    assert sorted(written) == sorted(os.listdir(tmp_path))
    config2, params2 = hf.load(str(tmp_path))
    assert config2 == config and _same(params, params2)
    assert hf.load_tokenizer(str(tmp_path)).digest == tok.digest
    with pytest.raises(ValueError, match="max_shard_size=0 must be a number of bytes"):
        hf.save(config, params, str(tmp_path), max_shard_size=0)


def test_own_format_round_trip(tmp_path):
    """The paper Transformer has no HF class: format='auto' writes our own format, which
    hf.load reads back bitwise; format='hf' refuses it."""
    config = PRESETS["transformer-tiny"].replace(vocab_size=50)
    params = _random_params(config)
    with pytest.raises(hf.api.NotExpressible, match="format='own' or 'auto'"):
        hf.save(config, params, str(tmp_path / "hf"))
    written = hf.save(config, params, str(tmp_path / "own"), format="auto")
    assert written == ["config.json", "model.safetensors"]
    stored = json.loads((tmp_path / "own" / "config.json").read_text())
    assert stored["model_type"] == "transformer_jax"
    config2, params2 = hf.load(str(tmp_path / "own"))
    assert config2 == config and _same(params, params2)
    stored["transformer_jax_config"]["d_model"] = 48
    (tmp_path / "own" / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="has shape"):
        hf.load(str(tmp_path / "own"))
