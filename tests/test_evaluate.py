"""evaluate.py on the session's trained tiny workdirs (tests/_workdirs.py): perplexity equals
exp of the mean NLL recomputed here in NumPy from the model's logits (an encoder's MLM accuracy
comes from the same eval step). BLEU/chrF against the sacrebleu command line: test_train_loop.py,
on the translation run that learns."""

import json

import jax
import numpy as np
import pytest

from transformer_jax import data, models
from transformer_jax.eval import heldout, report
from transformer_jax.train import workdir as wd

pytestmark = pytest.mark.slow  # reads the session's trained workdirs


def _numpy_stats(workdir, text_file, tmp_path, apply):
    """(mean NLL, accuracy) over the weighted targets of the eval rows that the data pipeline
    builds for `text_file`, from the model's float32 logits, in float64 NumPy."""
    model_cfg, params, _ = wd.load_params(workdir)
    tok = wd.load_tokenizer(workdir)
    config = heldout.data_config(heldout.run_config(workdir), model_cfg.arch, text_file=text_file)
    _, eval_source, _ = data.make_datasets(config, str(tmp_path / "rows"), tokenizer=tok)
    model = models.build(model_cfg)
    forward = jax.jit(lambda p, b: apply(model, p, b))  # one compile for the equal-shape batches
    nll = correct = weight = 0.0
    for batch in eval_source.iterate_eval():
        logits = np.asarray(forward(params, batch), np.float64)  # [B, T, V]
        logp = logits - logits.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        target_logp = np.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
        w = np.asarray(batch["weights"], np.float64)
        nll -= (target_logp * w).sum()
        correct += ((logits.argmax(-1) == batch["targets"]) * w).sum()
        weight += w.sum()
    assert weight > 50  # the file gives several rows of real targets
    return nll / weight, correct / weight


def test_perplexity_is_exp_of_the_mean_nll(workdirs, tmp_path):
    text = tmp_path / "held_out.py"
    text.write_text(data.synthetic.code_document(np.random.default_rng(7), 6))
    result = report.evaluate(workdir=workdirs["gpt-tiny"], text_file=str(text), batch_size=2)
    assert result["step"] == workdirs.steps("gpt-tiny") and result["arch"] == "decoder"
    printed = report.table(result)  # what evaluate.py prints (and writes as JSON with --json)
    assert f"perplexity  {result['metrics']['perplexity']:>12.4f}" in printed
    assert json.loads(json.dumps(result)) == result

    def logits(model, params, batch):
        return model.apply({"params": params}, batch["inputs"], positions=batch.get(
            "positions"), segment_ids=batch.get("segment_ids"))  # fmt: skip

    nll, accuracy = _numpy_stats(workdirs["gpt-tiny"], str(text), tmp_path, logits)
    assert result["metrics"]["nll"] == pytest.approx(nll, rel=1e-5)
    assert result["metrics"]["perplexity"] == pytest.approx(np.exp(nll), rel=1e-5)
    assert result["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_bad_inputs_are_named(workdirs, tmp_path):
    text = tmp_path / "held_out.py"
    text.write_text("x = 1\n")
    with pytest.raises(FileNotFoundError, match="--text_file .*nothing.txt' does not exist"):
        report.evaluate(workdir=workdirs["bert-tiny"], text_file=str(tmp_path / "nothing.txt"))
    with pytest.raises(ValueError, match="not encoder-decoder; use --text_file"):
        report.evaluate(
            workdir=workdirs["bert-tiny"], source_file=str(text), reference_file=str(text)
        )
    with pytest.raises(ValueError, match="give --source_file and --reference_file instead"):
        report.evaluate(workdir=workdirs["transformer-tiny"], text_file=str(text))
    with pytest.raises(ValueError, match="Choose exactly one evaluation set"):
        report.evaluate(workdir=workdirs["gpt-tiny"], text_file=str(text), dataset="lm1b")
