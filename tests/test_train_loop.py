"""train_and_evaluate end to end: a translation run through the project's parallel-text TFDS
builder, the workdir layout, and two processes (jax.distributed on 127.0.0.1 with gloo)
training exactly like one process on the same global batch."""

import json
import os
import random
import socket
import subprocess
import sys

import _robustness_util as U
import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

from transformer_jax.eval import report
from transformer_jax.train import default_config, train_and_evaluate
from transformer_jax.train import workdir as wd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_cmd(workdir, data_files, batch, steps, extra=()):
    return [
        sys.executable, os.path.join(ROOT, "train.py"),
        f"--workdir={workdir}",
        "--config.dataset=text_files", f"--config.train_files={data_files[0]}",
        f"--config.eval_files={data_files[1]}",
        "--config.vocab_size=512", "--config.max_length=32",
        f"--config.per_device_batch_size={batch}", "--config.eval_batch_size=4",
        f"--config.num_train_steps={steps}", "--config.log_every_steps=1",
        f"--config.eval_every_steps={steps}", f"--config.checkpoint_every_steps={steps}",
        "--config.model_overrides.dropout_rate=0.0", "--config.progress_bar=False",
        "--config.num_eval_batches=2", "--config.async_checkpoints=False",
        "--config.peak_flops=1e12",  # skips the start-up matmul measurement (seconds on CPU)
        # The robustness tests' tiny model (_robustness_util.config_fields): cheap to compile.
        "--config.model_overrides.d_model=64", "--config.model_overrides.num_heads=4",
        "--config.model_overrides.d_ff=128", "--config.model_overrides.num_layers=2",
        *extra,
    ]  # fmt: skip


def _losses(workdir):
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return U.reference(tmp_path_factory)


@pytest.mark.slow
@pytest.mark.serial  # binds a port; two processes exchange collectives
def test_two_processes_train_like_one(ref):
    # Both runs start from copies of the reference workdir: its corpus, tokenizer and token
    # cache (the data is prepared once per test run; the point here is the collectives).
    env = dict(os.environ, XLA_FLAGS=U.xla_flags(1), JAX_PLATFORMS="cpu")
    single = ref.new_workdir("single")
    out = subprocess.run(
        _train_cmd(single, ref.corpus, 8, 4), env=env, capture_output=True, text=True, timeout=400
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Tokenizing and packing" not in out.stderr  # the copied token cache was used

    multi = ref.new_workdir("multi")
    port = _free_port()
    procs = [
        subprocess.Popen(
            _train_cmd(
                multi,
                ref.corpus,
                4,
                4,
                [
                    f"--coordinator_address=127.0.0.1:{port}",
                    "--num_processes=2",
                    f"--process_id={i}",
                    "--cpu_collectives=gloo",
                ],
            ),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    results = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]

    one, two = _losses(single), _losses(multi)
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5), step
    _, p1, _ = wd.load_params(str(single))
    _, p2, _ = wd.load_params(str(multi))
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
