"""Invalid configs fail before any work with a message naming the field and the allowed range;
text edge cases in the data path have defined behaviour (issue #4, points 10 and 11)."""

from __future__ import annotations

import collections
import os
import random

import _robustness_util as U
import numpy as np
import pytest

from transformer_jax import data
from transformer_jax.data import tokenizer as tok_lib
from transformer_jax.train import steps, train_and_evaluate

pytestmark = pytest.mark.slow  # needs the reference run (train.py) of _robustness_util


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return U.reference(tmp_path_factory)


# ----------------------------------------------------------------------------- point 10

INVALID = [
    ({"per_device_batch_size": 0}, r"config.per_device_batch_size=0: must be a positive integer"),
    ({"eval_batch_size": -1}, r"config.eval_batch_size=-1: must be a positive integer"),
    ({"num_train_steps": 0}, r"config.num_train_steps=0: must be a positive integer"),
    ({"max_length": 256}, r"config.max_length=256: exceeds the model's position limit max_len=128"),
    ({"max_length": 4}, r"config.max_length=4 must be an integer >= 8"),
    ({"model": "gpt-huge"}, r"config.model='gpt-huge': unknown preset; choose one of"),
    ({"dataset": "no_such_dataset"}, r"config.dataset='no_such_dataset' is unknown; use one of"),
    ({"train_files": ""}, r"dataset 'text_files' needs config.train_files"),
    ({"vocab_size": 100}, r"vocab_size=100 is too small: .* special pieces"),
    ({"vocab_size": 0}, r"config.vocab_size=0: must be a positive integer"),
    ({"warmup_steps": -1}, r"config.warmup_steps=-1: must be an integer >= 0"),
    ({"learning_rate": 0.0}, r"config.learning_rate=0.0: must be a finite number > 0"),
    ({"learning_rate": float("nan")}, r"config.learning_rate=nan: must be a finite number > 0"),
    ({"b2": 1.0}, r"config.b2=1.0: must be in \[0, 1\)"),
    ({"eps": 0.0}, r"config.eps=0.0: must be a finite number > 0"),
    ({"weight_decay": -0.1}, r"config.weight_decay=-0.1: must be a finite number >= 0"),
    ({"grad_clip_norm": -1.0}, r"config.grad_clip_norm=-1.0: must be a finite number > 0"),
    ({"label_smoothing": 1.0}, r"config.label_smoothing=1.0: must be in \[0, 1\)"),
    ({"grad_accum_steps": 3}, r"config.grad_accum_steps=3: must divide per_device_batch_size=4"),
    ({"keep_checkpoints": 0}, r"config.keep_checkpoints=0: must be an integer >= 1"),
    ({"log_every_steps": 0}, r"config.log_every_steps=0: must be a positive integer"),
    ({"num_eval_batches": 0}, r"config.num_eval_batches=0: must be > 0 or None"),
    ({"schedule": "cosine"}, r"config.schedule='cosine': must be one of"),
    ({"dtype": "float16"}, r"config.dtype='float16': must be 'float32' or 'bfloat16'"),
    ({"objective": "mlm"}, r"config.objective='mlm': model 'gpt-tiny' is decoder; use one of"),
    ({"corrupt_checkpoint": "ignore"}, r"config.corrupt_checkpoint='ignore': must be one of"),
    ({"seed": -1}, r"config.seed=-1 must be an integer >= 0"),
    ({"bleu_sentences": -1}, r"config.bleu_sentences=-1: must be an integer >= 0"),
    ({"bleu_beam_size": 0}, r"config.bleu_beam_size=0: must be a positive integer"),
    ({"model_overrides.num_heads": 5}, r"config.model='gpt-tiny' with model_overrides=.*heads"),
]


@pytest.mark.parametrize(("overrides", "message"), INVALID, ids=[str(o) for o, _ in INVALID])
def test_invalid_config_fails_before_any_work(ref, tmp_path, overrides, message):
    config = U.make_config(ref.corpus, 8, **overrides)
    workdir = tmp_path / "never"
    with pytest.raises(ValueError, match=message):
        train_and_evaluate(config, str(workdir))
    assert not workdir.exists()  # nothing was written, prepared or compiled


def _no_compute(*args, **kwargs):
    raise AssertionError("a train step was built: the error must come before any compute")


@pytest.mark.parametrize("which", ["train", "validation"])
def test_empty_split_fails_before_compiling(ref, tmp_path, monkeypatch, which):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    if which == "train":  # a glob that matches nothing
        overrides = {"train_files": str(tmp_path / "missing" / "*.txt")}
        message = r"split 'train' of dataset 'text_files' is empty: train_files=.* matched no"
    else:  # a file with no text, named as such
        overrides = {"eval_files": str(empty)}
        message = r"config.eval_files='.*empty.txt': the file '.*empty.txt' is empty \(0 bytes\)"
    monkeypatch.setattr(steps, "make_train_step", _no_compute)
    with pytest.raises(ValueError, match=message):
        train_and_evaluate(U.make_config(ref.corpus, 8, **overrides), ref.new_workdir("empty"))


# ----------------------------------------------------------------------------- point 11


def _edge_corpus(folder, ref) -> dict[str, bytes]:
    """Files that exercise the text edge cases, next to enough ordinary text for 512 pieces."""
    rng = random.Random(1)
    long_line = " ".join("".join(rng.choice("qxzjv") for _ in range(6)) for _ in range(40_000))
    files = {
        "ordinary.txt": open(ref.corpus[0], "rb").read(),
        "invalid_utf8.txt": b"valid \xff\xfe invalid \xc3 truncated\nnext line\n",
        "surrogates.txt": b"lone surrogate \xed\xa0\x80 encoded as UTF-8\n",
        "controls.txt": "nul \x00 bom \ufeff crlf \r\n tab \t end\n".encode(),
        "empty.txt": b"",
        "long_line.txt": long_line.encode(),  # ~280 KB, one line, no newline
    }
    os.makedirs(folder)
    for name, content in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(content)
    return files


def test_text_edge_cases_have_defined_behaviour(ref, tmp_path):
    files = _edge_corpus(str(tmp_path / "corpus"), ref)
    config = U.make_config(ref.corpus, 8, train_files=str(tmp_path / "corpus" / "*.txt"))
    train, eval_source, tok = data.make_datasets(config, str(tmp_path / "work"))
    # Every document is read as UTF-8 with each bad byte -> U+FFFD, encoded in full (the
    # ~280 KB line too), round-trips exactly and ends with one eos; an empty file is skipped.
    expected = collections.Counter()
    for name in sorted(files):
        text = files[name].decode("utf-8", errors="replace")
        ids = tok.encode(text)
        assert tok.decode(ids) == text, name
        expected.update(ids + [tok.eos_id] if ids else [])
    assert "\ufffd" in files["surrogates.txt"].decode("utf-8", errors="replace")
    # The first epoch's rows hold exactly those targets.
    got, size = collections.Counter(), train.global_batch_size
    for step in range(train.steps_per_epoch):
        batch = train.get_batch(step)
        first_epoch = step * size + np.arange(size) < train.num_items  # [B]
        weights = (batch["weights"] > 0) & first_epoch[:, None]
        got.update(batch["targets"][weights].tolist())
    assert got == expected
    assert next(iter(eval_source.iterate_eval()))["targets"].shape == (4, 32)


def test_tokenizer_edge_cases(ref, tmp_path):
    tok = tok_lib.Tokenizer.load(os.path.join(ref.workdir, "tokenizer.model"))
    # A Python str may hold lone surrogates (no file read here can): each becomes U+FFFD.
    for text in ("a\ud800b", "\udfff", "é\udc80ü"):
        ids = tok.encode(text)
        assert tok.encode_batch([text]) == [ids]
        assert tok.decode(ids) == text.encode("utf-8", "surrogatepass").decode(
            "utf-8", errors="replace"
        ).replace("\ufffd\ufffd\ufffd", "\ufffd")
    assert tok.encode("") == [] and tok.decode([]) == ""
    # A corpus whose every line is longer than SentencePiece's sentence limit still trains.
    rng = random.Random(0)
    long_line = " ".join("".join(rng.choice("abcdefghij") for _ in range(5)) for _ in range(60_000))
    trained = tok_lib.train_tokenizer([long_line], 512, str(tmp_path / "long.model"))
    assert trained.vocab_size == 512
    assert trained.decode(trained.encode(long_line)) == long_line
    # Text with no lines at all is a ValueError, not a SentencePiece crash.
    with pytest.raises(ValueError, match="no text to train the tokenizer on"):
        tok_lib.train_tokenizer(["", "\n\n"], 512, str(tmp_path / "none.model"))
    assert np.all(np.asarray(tok.encode("x" * 100_000)) < tok.vocab_size)
