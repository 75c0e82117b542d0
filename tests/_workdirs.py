"""The session's trained tiny workdirs, one per architecture, shared by the tests that read one
(sample.py, evaluate.py, attention maps) and by the tests that check the run that made it:
- "gpt-tiny": the robustness reference run (tests/_robustness_util.py), a real `train.py`
  process of 8 steps (2 layers of width 64) on a generated corpus;
- "transformer-tiny": the translation run of test_train_loop.py, 120 steps of the
  transformer-tiny preset on a generated parallel corpus (word -> reversed, upper-cased word),
  BLEU/chrF at each evaluation;
- "bert-tiny": a 4-step MLM run on generated Python-like files.
Each is built once per pytest run by whichever xdist worker asks first (`build_once`) and is
only read afterwards; a test that writes (a resume) works in a copy.
"""

from __future__ import annotations

import json
import os
import pathlib
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


def translation_config(directory):
    """The translation run's config; its corpus lives in `directory` (written by the build)."""
    c = default_config()
    c.model = "transformer-tiny"
    c.model_overrides.dropout_rate = 0.0
    c.dataset = "parallel_text"
    c.train_source, c.train_target = _corpus_paths(directory, seed=1)  # 400 pairs
    c.eval_source, c.eval_target = _corpus_paths(directory, seed=2)  # 40 pairs
    c.objective = "seq2seq"
    c.vocab_size = 512
    c.max_length = 32
    c.per_device_batch_size = 16
    c.eval_batch_size = 16
    c.num_train_steps = 120
    c.schedule = "linear_rsqrt"
    c.learning_rate = 3e-3
    c.warmup_steps = 20
    c.label_smoothing = 0.1
    c.log_every_steps = 20
    c.eval_every_steps = 60
    c.checkpoint_every_steps = 60
    c.progress_bar = False
    c.peak_flops = 1e12  # MFU against a given peak: no start-up matmul measurement
    return c


def _build_translation(directory) -> None:
    _write_parallel_corpus(directory, 400, seed=1)
    _write_parallel_corpus(directory, 40, seed=2)
    summary = train_and_evaluate(translation_config(directory), os.path.join(directory, "work"))
    with open(os.path.join(directory, SUMMARY), "w") as f:
        json.dump(summary, f, default=float)  # numpy scalars as floats


def _mlm_config_at(directory):
    return _mlm_config(pathlib.Path(directory), write=False)


def _mlm_config(tmp: pathlib.Path, write: bool = True):
    c = default_config()
    c.model = "bert-tiny"
    c.objective = "mlm"
    c.dataset = "text_files"
    if write:
        synthetic.write_code_corpus(str(tmp / "code"), 30, seed=0)
        synthetic.write_code_corpus(str(tmp / "eval"), 3, seed=1)
    c.train_files, c.eval_files = str(tmp / "code" / "*.py"), str(tmp / "eval" / "*.py")
    c.vocab_size = 512
    c.max_length = 32
    c.per_device_batch_size = 4
    c.eval_batch_size = 4
    c.num_train_steps = 4
    c.warmup_steps = 2
    c.log_every_steps = 2
    c.eval_every_steps = 4
    c.num_eval_batches = 1
    c.checkpoint_every_steps = 4
    c.progress_bar = False
    c.peak_flops = 1e12
    return c


def _build_mlm(directory) -> None:
    tmp = pathlib.Path(directory)
    train_and_evaluate(_mlm_config(tmp), str(tmp / "work"))


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
        build = {"transformer-tiny": _build_translation, "bert-tiny": _build_mlm}[preset]
        build_once(directory, build)
        return directory

    def __getitem__(self, preset: str) -> str:
        if preset == "gpt-tiny":
            return U.reference(self._factory).workdir
        return os.path.join(self.build_dir(preset), "work")

    def steps(self, preset: str) -> int:
        """How many steps the run of `preset` trained."""
        if preset == "gpt-tiny":
            return U.reference(self._factory).steps
        config = {"transformer-tiny": translation_config, "bert-tiny": _mlm_config_at}[preset]
        return config(self.build_dir(preset)).num_train_steps

    def summary(self, preset: str) -> dict:
        with open(os.path.join(self.build_dir(preset), SUMMARY)) as f:
            return json.load(f)


@pytest.fixture(scope="session")
def workdirs(tmp_path_factory):
    return Workdirs(tmp_path_factory)
