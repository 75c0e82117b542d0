"""The checkpoint path on the command lines: sample.py --hf_dir (every mode, with the
checkpoint's own tokenizer), train.py's init_from (fine-tune, record, resume without re-reading
the checkpoint), export.py (HF format and our own), and exit status 2 for bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from transformer_jax import hf
from transformer_jax.data import synthetic
from transformer_jax.train import default_config, train_and_evaluate
from transformer_jax.train import workdir as wd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "hf_fixtures")
sys.path.insert(0, ROOT)
import export  # noqa: E402
import sample  # noqa: E402

OPTIONS = dict(max_new_tokens=3, temperature=0.0, top_k=0, top_p=1.0, length_penalty=0.6)


def _same(a, b):
    la, lb = jax.tree_util.tree_leaves_with_path(a), dict(jax.tree_util.tree_leaves_with_path(b))
    return len(la) == len(lb) and all(np.array_equal(v, lb[p]) for p, v in la)


def test_sample_hf_dir_every_mode():
    bart = sample.run_hf(os.path.join(FIXTURES, "bart"), ["the cat sat"], **OPTIONS)
    assert bart[0].endswith("(Hugging Face checkpoint, encoder_decoder)")
    assert bart[1] == "> the cat sat" and bart[2].startswith("= ")
    bert = sample.run_hf(
        os.path.join(FIXTURES, "bert_mlm"), ["the cat [MASK] on the mat"], **{**OPTIONS, "top_k": 2}
    )
    assert bert[1] == "> the cat [MASK] on the mat"
    assert bert[2].startswith("  position 2: ")  # [CLS] the cat [MASK]: text position 2
    assert bert[2].count(" 0.") + bert[2].count(" 1.0") == 2


def _finetune_config(tmp, steps):
    c = default_config()
    c.init_from = os.path.join(FIXTURES, "gpt2")
    c.dataset = "text_files"
    synthetic.write_code_corpus(str(tmp / "code"), 6, seed=0)
    synthetic.write_code_corpus(str(tmp / "eval"), 2, seed=1)
    c.train_files, c.eval_files = str(tmp / "code" / "*.py"), str(tmp / "eval" / "*.py")
    c.objective = "clm"
    c.max_length = 16
    c.per_device_batch_size = 2
    c.eval_batch_size = 2
    c.num_train_steps = steps
    c.schedule, c.warmup_steps = "constant", 0
    c.learning_rate = 1e-9  # the weights stay (almost) where they started
    c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = 2
    c.num_eval_batches = 1
    c.progress_bar = False
    c.peak_flops = 1e12  # MFU against a given peak: no start-up matmul measurement
    return c


@pytest.mark.slow  # two short training runs
def test_finetune_resume_and_export(tmp_path, monkeypatch):
    work = str(tmp_path / "work")
    train_and_evaluate(_finetune_config(tmp_path, 2), work)
    assert not os.path.exists(os.path.join(work, wd.TOKENIZER_FILE))  # no sentencepiece trained
    record = json.loads(open(os.path.join(work, wd.INIT_FROM_FILE)).read())
    tok = hf.load_tokenizer(os.path.join(FIXTURES, "gpt2"))
    assert record["init_from"] == os.path.join(FIXTURES, "gpt2")
    assert record["tokenizer_sha256"] == tok.digest == wd.load_tokenizer(work).digest
    config, start = hf.load(os.path.join(FIXTURES, "gpt2"))
    cfg2, params2, _ = wd.load_params(work)
    assert cfg2 == config
    close = jax.tree.map(lambda a, b: np.allclose(a, b, atol=1e-6), start, jax.device_get(params2))
    assert jax.tree.all(close)  # started from the checkpoint's weights, not a random init

    def no_reload(real):
        def read(directory, *args, **kwargs):
            if os.path.abspath(directory).startswith(FIXTURES):
                raise AssertionError("a resumed run read the init_from checkpoint again")
            return real(directory, *args, **kwargs)

        return read

    monkeypatch.setattr(hf, "load", no_reload(hf.load))
    monkeypatch.setattr(hf, "load_tokenizer", no_reload(hf.load_tokenizer))
    summary = train_and_evaluate(_finetune_config(tmp_path, 4), work)
    assert summary["step"] == 4
    monkeypatch.undo()

    out = str(tmp_path / "out")
    lines = export.export(work, out)
    assert "Hugging Face format (GPT2LMHeadModel)" in lines[0] and "step 4" in lines[0]
    cfg3, params3 = hf.load(out)
    assert cfg3 == config and _same(params3, jax.device_get(wd.load_params(work)[1]))
    assert hf.load_tokenizer(out).digest == tok.digest
    meta = json.loads(open(os.path.join(out, export.METADATA_FILE)).read())
    assert meta["step"] == 4 and meta["training_config"]["init_from"] == record["init_from"]
    assert meta["format"] == "huggingface" and meta["library_version"]
    decoded = sample.run_hf(out, ["def f("], **OPTIONS)
    assert decoded[1].startswith("> def f(")


def test_export_own_format_for_the_paper_transformer(tmp_path):
    """A workdir whose model no HF class expresses exports in our own format, read back
    bitwise with the run's own tokenizer."""
    from transformer_jax import models
    from transformer_jax.data.tokenizer import train_tokenizer
    from transformer_jax.families import PRESETS
    from transformer_jax.train import checkpoints, optimizer, steps

    work = tmp_path / "work"
    text = "def f(x):\n    return x * 2  # ünïcode\n" * 40
    tok = train_tokenizer([text], 300, str(work / wd.TOKENIZER_FILE))
    config = PRESETS["transformer-tiny"].replace(vocab_size=300)
    # Any values do (the check is bitwise): NumPy draws, with no init programs to compile.
    shapes = jax.eval_shape(lambda r: models.init_params(config, r), jax.random.key(0))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)
    state = steps.init_train_state(params, optimizer.make_optimizer(lambda s: 1e-3))
    wd.write_configs(str(work), default_config(), config)
    ckpt = checkpoints.Checkpoints(str(work / wd.CHECKPOINT_DIR), async_save=False)
    ckpt.save(7, state)
    ckpt.close()
    lines = export.export(str(work), str(tmp_path / "out"))
    assert "this library's own format" in lines[0] and "step 7" in lines[0]
    assert "transformers does not" in lines[1]
    config2, params2 = hf.load(str(tmp_path / "out"))
    assert config2 == config and _same(params2, jax.device_get(params))
    assert hf.load_tokenizer(str(tmp_path / "out")).digest == tok.digest


@pytest.mark.slow  # subprocesses
def test_bad_input_exits_2_with_one_line(tmp_path):
    """The exit status is the point: one real process per command line."""
    bad = tmp_path / "truncated"
    shutil.copytree(os.path.join(FIXTURES, "gpt2"), bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    for script, args, reason in (
        ("sample.py", [f"--hf_dir={bad}", "--prompt=x"], "truncated or corrupt"),
        ("export.py", [f"--workdir={tmp_path / 'none'}", f"--out={tmp_path / 'o'}"],
         "not a transformer_jax workdir"),
    ):  # fmt: skip
        out = subprocess.run(
            [sys.executable, os.path.join(ROOT, script), *args],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert out.returncode == 2, out.stderr[-2000:]
        assert reason in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
