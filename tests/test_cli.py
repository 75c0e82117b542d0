"""sample.py and train.py as a user runs them: workdirs from short real training runs."""

import os
import pathlib
import subprocess
import sys

import pytest
from _session_fixtures import build_once, shared_dir

from transformer_jax.data import synthetic
from transformer_jax.train import default_config, train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import sample  # noqa: E402

pytestmark = pytest.mark.slow  # three training runs, sample.py subprocesses


def _config(tmp, preset, objective):
    c = default_config()
    c.model = preset
    c.objective = objective
    if objective == "seq2seq":
        c.dataset = "parallel_text"
        c.train_source, c.train_target = str(tmp / "s.txt"), str(tmp / "t.txt")
        c.eval_source, c.eval_target = str(tmp / "es.txt"), str(tmp / "et.txt")
        synthetic.write_parallel_corpus(c.train_source, c.train_target, 300, seed=0)
        synthetic.write_parallel_corpus(c.eval_source, c.eval_target, 20, seed=1)
        c.bleu_sentences = 0  # BLEU in training: test_train_loop.py (saves a beam compile)
    else:
        c.dataset = "text_files"
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
    c.peak_flops = 1e12  # MFU against a given peak: no start-up matmul measurement
    return c


ARCHITECTURES = (("gpt-tiny", "clm"), ("transformer-tiny", "seq2seq"), ("bert-tiny", "mlm"))


class _Workdirs:
    """One trained workdir per architecture, each built once per run by whichever xdist worker
    asks for it first, and only read by the tests. Separate builds: a test waits only for its
    own architecture's run, and the other worker can build another one meanwhile."""

    def __init__(self, root):
        self.root = root

    def __getitem__(self, preset):
        objective = dict(ARCHITECTURES)[preset]
        directory = os.path.join(self.root, preset)
        os.makedirs(directory, exist_ok=True)

        def build(tmp):
            tmp = pathlib.Path(tmp)
            train_and_evaluate(_config(tmp, preset, objective), str(tmp / "work"))

        build_once(directory, build)
        return os.path.join(directory, "work")


@pytest.fixture(scope="session")
def workdirs(tmp_path_factory):
    return _Workdirs(shared_dir(tmp_path_factory, "cli_workdirs"))


OPTIONS = dict(max_new_tokens=5, temperature=0.0, top_k=0, top_p=1.0, length_penalty=0.6)


def test_decoder_continues_each_prompt(workdirs):
    lines = sample.run(workdirs["gpt-tiny"], ["def alpha(", "x = 1"], **OPTIONS)
    assert lines[0].startswith("#") and "step 4" in lines[0] and "decoder" in lines[0]
    assert len(lines) == 3
    assert lines[1].startswith("> def alpha(") and lines[2].startswith("> x = 1")
    # Greedy is deterministic; sampling with several samples gives one line per sample.
    assert sample.run(workdirs["gpt-tiny"], ["def alpha("], **OPTIONS)[1] == lines[1]
    sampled = sample.run(
        workdirs["gpt-tiny"], ["a", "b"], **{**OPTIONS, "temperature": 1.0, "num_samples": 3}
    )
    assert [line[:3] for line in sampled[1:]] == ["> a"] * 3 + ["> b"] * 3
    beam = sample.run(workdirs["gpt-tiny"], ["def alpha("], **{**OPTIONS, "beam_size": 3})
    assert len(beam) == 2 and beam[1].startswith("> def alpha(")


def test_encoder_decoder_translates_the_source(workdirs):
    lines = sample.run(workdirs["transformer-tiny"], ["alpha beta"], **OPTIONS)
    assert lines[1] == "> alpha beta" and lines[2].startswith("= ")


def test_encoder_fills_masks(workdirs):
    lines = sample.run(
        workdirs["bert-tiny"], ["x = [MASK] + [MASK]", "no mask"], **{**OPTIONS, "top_k": 3}
    )
    assert lines[1] == "> x = [MASK] + [MASK]"
    assert lines[2].startswith("  position ") and lines[3].startswith("  position ")
    assert lines[2].count(" 0.") + lines[2].count(" 1.0") == 3  # three candidates, p in [0, 1]
    assert lines[4] == "> no mask" and "no [MASK]" in lines[5]


def _cli(*args):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "sample.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sample_command_line(workdirs, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("def alpha(\n\nx = 1\n")
    out = _cli(f"--workdir={workdirs['gpt-tiny']}", f"--prompt_file={prompts}",
               "--max_new_tokens=4", "--temperature=0")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("\n> ") == 2  # the blank line is skipped
    assert out.stderr == ""  # no absl/orbax/jax INFO lines (--verbose brings them back)
    bad = _cli(f"--workdir={tmp_path / 'nothing'}", "--prompt=x")
    assert bad.returncode == 2 and "not a transformer_jax workdir" in bad.stderr
    both = _cli(f"--workdir={workdirs['gpt-tiny']}", "--prompt=x", f"--prompt_file={prompts}")
    assert both.returncode == 2 and "exactly one of --prompt or --prompt_file" in both.stderr


def test_prompt_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"--prompt_file '{path}' is not UTF-8 text \(byte 3 "):
        sample.read_prompts(None, str(path))
