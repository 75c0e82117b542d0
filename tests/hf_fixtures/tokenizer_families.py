"""Tokenizer fixtures of issue 10, made with transformers' own classes (run with the
`reference` extra: transformers, sentencepiece, protobuf; no hub):

    /path/to/reference-venv/bin/python tests/hf_fixtures/tokenizer_families.py

t5_tokenizer/: a tiny unigram sentencepiece model with T5's layout (<pad> 0, </s> 1, <unk> 2,
no bos) read by `T5Tokenizer` (extra_ids=100: `<extra_id_0>` the last id) and written with
`save_pretrained` (tokenizer.json, tokenizer_config.json); its tokenizer_reference.json (as
make_fixtures.py writes it) adds `sentinels`: `convert_tokens_to_ids("<extra_id_k>")` for
k = 0..99.
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


if __name__ == "__main__":
    make_t5_tokenizer()
