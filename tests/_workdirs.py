"""The session's trained tiny workdirs, one per architecture, shared by the tests that read one
(sample.py, evaluate.py, attention maps) and by the tests that check the run that made it:
- "gpt-tiny": the robustness reference run (tests/_robustness_util.py: `Reference`,
  `config_fields`), a real `train.py` process on a generated corpus;
- "transformer-tiny": the translation run of test_train_loop.py, 80 steps of the
  transformer-tiny preset on a generated parallel corpus (word -> reversed, upper-cased word),
  BLEU/chrF at each evaluation;
- "bert-tiny": a 4-step MLM run on generated Python-like files.
Each is built once per pytest run by whichever xdist worker asks first (`build_once`) and is
only read afterwards; a test that writes (a resume) works in a copy.
"""

from __future__ import annotations

import json
import os
import random

import _robustness_util as U
import pytest
from _session_fixtures import build_once, shared_dir

from transformer_jax.data import synthetic
from transformer_jax.train import default_config, train_and_evaluate

WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
]  # fmt: skip
LEXICON = {w: w[::-1].upper() for w in WORDS}  # "translation": reverse and upper-case
SUMMARY = "summary.json"  # what train_and_evaluate returned to the build


def _corpus_paths(directory, seed: int) -> tuple[str, str]:
    return os.path.join(directory, f"src{seed}.txt"), os.path.join(directory, f"tgt{seed}.txt")


def _write_parallel_corpus(directory, n: int, seed: int) -> None:
    rng = random.Random(seed)
    src_lines, tgt_lines = [], []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 6))]
        src_lines.append(" ".join(words))
        tgt_lines.append(" ".join(LEXICON[w] for w in reversed(words)))
    for path, lines in zip(_corpus_paths(directory, seed), (src_lines, tgt_lines), strict=True):
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")


# What every run here shares: a small sentencepiece vocabulary, short rows, no progress bar,
# MFU against a given peak (no start-up matmul measurement).
_COMMON = dict(vocab_size=512, max_length=32, progress_bar=False, peak_flops=1e12)


def _config(**fields):
    c = default_config()
    c.update({**_COMMON, **fields})
    return c


def translation_config(directory):
    """The translation run's config; its corpus lives in `directory` (written by the build)."""
    c = _config(
        model="transformer-tiny", dataset="parallel_text", objective="seq2seq",
        per_device_batch_size=16, eval_batch_size=16, num_train_steps=80,
        schedule="linear_rsqrt", learning_rate=3e-3, warmup_steps=20, label_smoothing=0.1,
        log_every_steps=20, eval_every_steps=40, checkpoint_every_steps=40,
    )  # fmt: skip
    c.model_overrides.dropout_rate = 0.0
    c.train_source, c.train_target = _corpus_paths(directory, seed=1)  # 400 pairs
    c.eval_source, c.eval_target = _corpus_paths(directory, seed=2)  # 40 pairs
    return c


def _build_translation(directory) -> None:
    _write_parallel_corpus(directory, 400, seed=1)
    _write_parallel_corpus(directory, 40, seed=2)
    summary = train_and_evaluate(translation_config(directory), os.path.join(directory, "work"))
    with open(os.path.join(directory, SUMMARY), "w") as f:
        json.dump(summary, f, default=float)  # numpy scalars as floats


def _mlm_config(directory):
    """The MLM run's config; its corpus lives in `directory` (written by the build)."""
    return _config(
        model="bert-tiny", objective="mlm", dataset="text_files",
        train_files=os.path.join(directory, "code", "*.py"),
        eval_files=os.path.join(directory, "eval", "*.py"),
        per_device_batch_size=4, eval_batch_size=4, num_train_steps=4, warmup_steps=2,
        log_every_steps=2, eval_every_steps=4, num_eval_batches=1, checkpoint_every_steps=4,
    )  # fmt: skip


def _build_mlm(directory) -> None:
    synthetic.write_code_corpus(os.path.join(directory, "code"), 30, seed=0)
    synthetic.write_code_corpus(os.path.join(directory, "eval"), 3, seed=1)
    train_and_evaluate(_mlm_config(directory), os.path.join(directory, "work"))


_BUILDS = {  # preset -> (config of its run, build)
    "transformer-tiny": (translation_config, _build_translation),
    "bert-tiny": (_mlm_config, _build_mlm),
}


class Workdirs:
    """workdirs[preset] -> a trained workdir (built on first use, then only read);
    workdirs.build_dir(preset) -> the directory of its build (corpus files, summary)."""

    def __init__(self, tmp_path_factory):
        self._factory = tmp_path_factory
        self.root = shared_dir(tmp_path_factory, "workdirs")

    def build_dir(self, preset: str) -> str:
        if preset == "gpt-tiny":
            return U.reference(self._factory).root
        directory = os.path.join(self.root, preset)
        os.makedirs(directory, exist_ok=True)
        build_once(directory, _BUILDS[preset][1])
        return directory

    def __getitem__(self, preset: str) -> str:
        if preset == "gpt-tiny":
            return U.reference(self._factory).workdir
        return os.path.join(self.build_dir(preset), "work")

    def steps(self, preset: str) -> int:
        """How many steps the run of `preset` trained."""
        if preset == "gpt-tiny":
            return U.reference(self._factory).steps
        return _BUILDS[preset][0](self.build_dir(preset)).num_train_steps

    def summary(self, preset: str) -> dict:
        """What train_and_evaluate returned to the build (the in-process builds only)."""
        with open(os.path.join(self.build_dir(preset), SUMMARY)) as f:
            return json.load(f)


@pytest.fixture(scope="session")
def workdirs(tmp_path_factory):
    return Workdirs(tmp_path_factory)
