"""train_and_evaluate end to end: a translation run through the project's parallel-text TFDS
builder and the workdir layout. Two processes (jax.distributed on 127.0.0.1 with gloo)
training exactly like one process: tests/test_reliability_multiprocess.py."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from _workdirs import translation_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

from transformer_jax.eval import report
from transformer_jax.train import train_and_evaluate
from transformer_jax.train import workdir as wd

SACREBLEU = os.path.join(os.path.dirname(sys.executable), "sacrebleu")  # the venv's command line


@pytest.mark.slow
def test_translation_run_learns_and_fills_the_workdir(workdirs, tmp_path):
    # The run (tests/_workdirs.py) is shared with the tests that sample from its workdir.
    workdir = workdirs["transformer-tiny"]
    config = translation_config(workdirs.build_dir("transformer-tiny"))
    summary = workdirs.summary("transformer-tiny")  # what train_and_evaluate returned
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    evals = [r for r in records if r["split"] == "eval"]
    trains = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in evals] == [40, 80]
    # The target is a deterministic function of the source: the model must learn much of it.
    assert summary["eval"]["nll"] < 0.5 * trains[0]["nll"], (trains[0], summary["eval"])
    assert summary["eval"]["accuracy"] > 0.2  # chance is ~1/vocab; 80 steps learn part of it
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
    assert step == 80 and model_cfg.arch == "encoder_decoder"
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
    assert evals[-1]["bleu"] > 0  # 80 steps translate some word pairs
    # A second call in the same workdir (a copy: the shared one is only read) resumes at the
    # end and only re-evaluates.
    again = train_and_evaluate(config, shutil.copytree(workdir, str(tmp_path / "again")))
    assert again["step"] == 80 and again["eval"]["loss"] == pytest.approx(summary["eval"]["loss"])
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
