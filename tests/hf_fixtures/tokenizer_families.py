"""Tokenizer fixtures of issue 10, made with transformers' own classes (run with the
`reference` extra: transformers, sentencepiece, protobuf; no hub):

    /path/to/reference-venv/bin/python tests/hf_fixtures/tokenizer_families.py

t5_tokenizer/: a tiny unigram sentencepiece model with T5's layout (<pad> 0, </s> 1, <unk> 2,
no bos) read by `T5Tokenizer` (extra_ids=100: `<extra_id_0>` the last id) and written with
`save_pretrained` (tokenizer.json, tokenizer_config.json); its tokenizer_reference.json (as
make_fixtures.py writes it) adds `sentinels`: `convert_tokens_to_ids("<extra_id_k>")` for
k = 0..99.

marian_tokenizer/: Marian's files as Helsinki-NLP/opus-mt-* ship them: source.spm and
target.spm (two unigram models, trained here on an English and a German corpus) and one
shared vocab.json (</s> 0, <unk> 1, the pieces of both, <pad> last), read and written by
`MarianTokenizer` (without sacremoses, as here, it applies no Moses punctuation
normalisation). Its tokenizer_reference.json: source ids (`tok(text)`, `tok.encode(...,
add_special_tokens=False)`), target ids (`tok(text_target=...)`) and their texts decoded with
the target model (`tok.decode(ids, skip_special_tokens=True, use_source_tokenizer=False)`;
transformers' default for a shared vocab.json decodes with source.spm instead). <unk> is
special there: decode drops it ("Größe" -> "Grße", ö being unknown to both models).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile

import transformers
from make_fixtures import CORPUS, HERE, tokenizer_reference


def _train_spm(path, vocab_size, corpus, **kw):
    import sentencepiece as spm

    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=proto, vocab_size=vocab_size,
        model_type="unigram", minloglevel=2, normalization_rule_name="identity",
        character_coverage=1.0, hard_vocab_limit=False, **kw,
    )  # fmt: skip
    with open(path, "wb") as f:
        f.write(proto.getvalue())


def make_t5_tokenizer():
    out_dir = os.path.join(HERE, "t5_tokenizer")
    shutil.rmtree(out_dir, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        _train_spm(os.path.join(tmp, "spiece.model"), 60, CORPUS, pad_id=0, eos_id=1,
                   unk_id=2, bos_id=-1)  # T5's layout  # fmt: skip
        tok = transformers.T5Tokenizer.from_pretrained(tmp)
        tok.save_pretrained(out_dir)
    tok = transformers.AutoTokenizer.from_pretrained(out_dir)
    ref = tokenizer_reference(tok)
    ref["sentinels"] = tok.convert_tokens_to_ids([f"<extra_id_{k}>" for k in range(100)])
    with open(os.path.join(out_dir, "tokenizer_reference.json"), "w") as f:
        json.dump(ref, f, indent=1, ensure_ascii=False)
    size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    print(f"t5_tokenizer: {type(tok).__name__}, {len(tok)} ids, {size / 1024:.0f} KiB")


SOURCE = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "the cat sat on the mat; the dog sat on the log.",
    "How are you today? I am fine, thank you.",
    "This house is small, but the garden is big.",
] * 20
TARGET = [
    "Hallo Welt! Der schnelle braune Fuchs springt über den faulen Hund.",
    "die Katze saß auf der Matte; der Hund saß auf dem Baumstamm.",
    "Wie geht es dir heute? Mir geht es gut, danke.",
    "Dieses Haus ist klein, aber der Garten ist groß.",
] * 20
MARIAN_TEXTS = [
    "Hello world! The quick brown fox.",
    "the dog sat on the garden mat",
    "unseen: ß∑ Ωmega ZZZ",
    "  leading and  double  spaces ",
    "",
]
MARIAN_TARGETS = [
    "Hallo Welt! Der schnelle Fuchs.",
    "der Hund saß im Garten",
    "Größe: ß∑ Ωmega",
    "",
]


def make_marian_tokenizer():
    import sentencepiece as spm

    out_dir = os.path.join(HERE, "marian_tokenizer")
    shutil.rmtree(out_dir, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        pieces = []
        for name, corpus in (("source.spm", SOURCE), ("target.spm", TARGET)):
            _train_spm(os.path.join(tmp, name), 70, corpus, unk_id=0, bos_id=-1, eos_id=1,
                       pad_id=-1)  # fmt: skip
            sp = spm.SentencePieceProcessor(model_file=os.path.join(tmp, name))
            pieces += [sp.id_to_piece(i) for i in range(sp.vocab_size())
                       if not (sp.is_control(i) or sp.is_unknown(i))]  # fmt: skip
        vocab = {"</s>": 0, "<unk>": 1}
        for piece in pieces:
            vocab.setdefault(piece, len(vocab))
        vocab["<pad>"] = len(vocab)
        with open(os.path.join(tmp, "vocab.json"), "w") as f:
            json.dump(vocab, f, indent=2, ensure_ascii=False)
        tok = transformers.MarianTokenizer(
            os.path.join(tmp, "source.spm"), os.path.join(tmp, "target.spm"),
            os.path.join(tmp, "vocab.json"),
        )  # fmt: skip
        tok.save_pretrained(out_dir)
    tok = transformers.AutoTokenizer.from_pretrained(out_dir)
    assert type(tok).__name__ == "MarianTokenizer", type(tok)
    target = [tok(text_target=t)["input_ids"] for t in MARIAN_TARGETS]
    ref = {
        "class": type(tok).__name__,
        "texts": MARIAN_TEXTS,
        "ids": [tok.encode(t, add_special_tokens=False) for t in MARIAN_TEXTS],
        "framed": [tok(t)["input_ids"] for t in MARIAN_TEXTS],
        "targets": MARIAN_TARGETS,
        "target_ids": target,
        "decoded_targets": [
            tok.decode(i, skip_special_tokens=True, use_source_tokenizer=False) for i in target
        ],
        "special": {n: getattr(tok, f"{n}_token_id", None) for n in ("pad", "unk", "eos")},
        "vocab_size": tok.vocab_size,
    }
    with open(os.path.join(out_dir, "tokenizer_reference.json"), "w") as f:
        json.dump(ref, f, indent=1, ensure_ascii=False)
    size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    print(f"marian_tokenizer: {len(vocab)} ids, {size / 1024:.0f} KiB, files {os.listdir(out_dir)}")


if __name__ == "__main__":
    make_t5_tokenizer()
    make_marian_tokenizer()
