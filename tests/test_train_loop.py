"""train_and_evaluate end to end: a translation run through the project's parallel-text TFDS
builder and the workdir layout. Two processes (jax.distributed on 127.0.0.1 with gloo)
training exactly like one process: tests/test_reliability_multiprocess.py."""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

from transformer_jax.eval import report
from transformer_jax.train import default_config, train_and_evaluate
from transformer_jax.train import workdir as wd

SACREBLEU = os.path.join(os.path.dirname(sys.executable), "sacrebleu")  # the venv's command line
WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
]  # fmt: skip
LEXICON = {w: w[::-1].upper() for w in WORDS}  # "translation": reverse and upper-case


def _parallel_corpus(directory, n: int, seed: int) -> tuple[str, str]:
    rng = random.Random(seed)
    src_lines, tgt_lines = [], []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 6))]
        src_lines.append(" ".join(words))
        tgt_lines.append(" ".join(LEXICON[w] for w in reversed(words)))
    src, tgt = os.path.join(directory, f"src{seed}.txt"), os.path.join(directory, f"tgt{seed}.txt")
    with open(src, "w") as f:
        f.write("\n".join(src_lines) + "\n")
    with open(tgt, "w") as f:
        f.write("\n".join(tgt_lines) + "\n")
    return src, tgt


def _translation_config(tmp_path):
    c = default_config()
    c.model = "transformer-tiny"
    c.model_overrides.dropout_rate = 0.0
    c.dataset = "parallel_text"
    c.train_source, c.train_target = _parallel_corpus(tmp_path, 400, seed=1)
    c.eval_source, c.eval_target = _parallel_corpus(tmp_path, 40, seed=2)
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


@pytest.mark.slow
def test_translation_run_learns_and_fills_the_workdir(tmp_path):
    config = _translation_config(tmp_path)
    workdir = str(tmp_path / "wmt_tiny")
    summary = train_and_evaluate(config, workdir)
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    evals = [r for r in records if r["split"] == "eval"]
    trains = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in evals] == [60, 120]
    # The target is a deterministic function of the source: the model must learn much of it.
    assert summary["eval"]["nll"] < 0.5 * trains[0]["nll"], (trains[0], summary["eval"])
    assert summary["eval"]["accuracy"] > 0.2  # chance is ~1/vocab; 120 steps learn part of it
    assert all(np.isfinite(r["tokens_per_second"]) and r["mfu"] > 0 for r in trains[1:])
    for name in ("config.json", "model_config.json", "tokenizer.model", "tensorboard"):
        assert os.path.exists(os.path.join(workdir, name)), name
    # TensorBoard's own reader sees every scalar of metrics.jsonl (written without TF).
    events = EventAccumulator(os.path.join(workdir, "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    for split, rows in (("train", trains), ("eval", evals)):
        for key in ("loss", "accuracy"):
            logged = {e.step: float(make_ndarray(e.tensor_proto)) for e in events.Tensors(
                f"{split}/{key}")}  # fmt: skip
            assert logged == {r["step"]: pytest.approx(r[key], rel=1e-6) for r in rows}, key
    plugin = events.SummaryMetadata("train/loss").plugin_data.plugin_name
    assert plugin == "scalars"  # shown in TensorBoard's scalar dashboard
    model_cfg, params, step = wd.load_params(workdir)
    assert step == 120 and model_cfg.arch == "encoder_decoder"
    # BLEU and chrF of the beam-search translations of the eval sentences (all 40 < the 64 of
    # bleu_sentences): logged at each evaluation, equal to the sacrebleu command line's on the
    # files the run keeps.
    trans = os.path.join(workdir, "translations")
    with open(config.eval_target) as f:
        targets = set(f.read().splitlines())
    with open(os.path.join(trans, "reference.txt")) as f:
        references = f.read().splitlines()
    assert len(references) == 40 and set(references) <= targets
    for r in evals:
        hyp = os.path.join(trans, f"step_{r['step']}.txt")
        bleu, chrf = _sacrebleu(os.path.join(trans, "reference.txt"), hyp)
        assert r["bleu"] == pytest.approx(bleu, abs=1e-5), r
        assert r["chrf"] == pytest.approx(chrf, abs=1e-5), r
    assert evals[-1]["bleu"] > 0  # 120 steps translate some word pairs
    # A second call in the same workdir resumes at the end and only re-evaluates.
    again = train_and_evaluate(config, workdir)
    assert again["step"] == 120 and again["eval"]["loss"] == pytest.approx(summary["eval"]["loss"])
    assert again["eval"]["bleu"] == pytest.approx(summary["eval"]["bleu"])
    # evaluate.py on the eval files as given (file order): the command line's scores too, and
    # the perplexity of the run's own evaluation (the same sentence pairs).
    hyp = str(tmp_path / "hyp.txt")
    result = report.evaluate(workdir=workdir, source_file=config.eval_source,
                             reference_file=config.eval_target, output_file=hyp)  # fmt: skip
    bleu, chrf = _sacrebleu(config.eval_target, hyp)
    assert result["metrics"]["bleu"] == pytest.approx(bleu, abs=1e-5)
    assert result["metrics"]["chrf"] == pytest.approx(chrf, abs=1e-5)
    assert result["metrics"]["sentences"] == 40
    assert result["metrics"]["perplexity"] == pytest.approx(summary["eval"]["perplexity"], rel=1e-5)


def _sacrebleu(reference: str, hypotheses: str) -> tuple[float, float]:
    """(BLEU, chrF) as the sacrebleu command line prints them for these files."""
    cli = subprocess.run(
        [SACREBLEU, reference, "-i", hypotheses, "-m", "bleu", "chrf", "-b", "-w", "6"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return tuple(json.loads(cli.stdout))  # -b with two metrics: a JSON list of the scores
