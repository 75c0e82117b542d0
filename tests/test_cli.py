"""sample.py and train.py as a user runs them: workdirs from short real training runs."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import sample  # noqa: E402

pytestmark = pytest.mark.slow  # trained workdirs (tests/_workdirs.py), sample.py subprocesses


OPTIONS = dict(max_new_tokens=5, temperature=0.0, top_k=0, top_p=1.0, length_penalty=0.6)


def test_decoder_continues_each_prompt(workdirs):
    lines = sample.run(workdirs["gpt-tiny"], ["def alpha(", "x = 1"], **OPTIONS)
    steps = workdirs.steps("gpt-tiny")
    assert lines[0].startswith("#") and f"step {steps}" in lines[0] and "decoder" in lines[0]
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
