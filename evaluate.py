"""Evaluate a trained workdir or a Hugging Face checkpoint directory on held-out text:

    python evaluate.py --workdir DIR                      # the run's own eval split
    python evaluate.py --workdir DIR --text_file FILE     # perplexity (or MLM accuracy) on FILE
    python evaluate.py --workdir DIR --dataset NAME [--data_dir D]   # a TFDS catalog eval split
    python evaluate.py --workdir DIR --source_file S --reference_file R [--output_file H]
    python evaluate.py --hf_dir DIR ...                   # the same for an HF checkpoint

Reports, as a table on stdout (and as JSON with --json FILE, '-' for stdout):
  * decoder-only and encoder-decoder models: perplexity = exp(mean nll per target token), nll,
    token accuracy, over every batch of the split (the training eval step, the same framing);
  * encoder-only models: MLM accuracy (masked tokens chosen as in training) and nll;
  * translation (a seq2seq run's own split, or --source_file/--reference_file): BLEU and chrF
    from sacrebleu on the detokenized beam-search output (--output_file keeps it), the numbers
    `sacrebleu R -i H -m bleu chrf` prints.
Exit codes: 0 done; 2 invalid input (a missing file, a bad flag combination).
"""

from __future__ import annotations

import json
import sys

from transformer_jax import console  # noqa: E402

console.quiet_environment(console.verbose_flag(sys.argv))  # before anything imports TensorFlow

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A workdir written by train.py.")
flags.DEFINE_string("hf_dir", None, "A Hugging Face checkpoint directory (instead of --workdir).")
flags.DEFINE_string("text_file", None, "Plain text to score (perplexity / MLM accuracy).")
flags.DEFINE_string("dataset", None, "A TFDS catalog name; its eval split is scored.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir for --dataset.")
flags.DEFINE_string("source_file", None, "Source sentences, one per line (translation).")
flags.DEFINE_string("reference_file", None, "Reference translations, aligned with --source_file.")
flags.DEFINE_string("output_file", None, "Write the translations here, one per line.")
flags.DEFINE_integer("beam_size", 4, "Beam size of the translations.")
flags.DEFINE_float("length_penalty", 0.6, "Beam search length penalty alpha.")
flags.DEFINE_integer("max_new_tokens", None, "Tokens per translation (default: max_length).")
flags.DEFINE_integer("max_sentences", None, "Translate only the first N sentences (BLEU).")
flags.DEFINE_integer("batch_size", 8, "Rows per eval batch (perplexity) / sentences per beam "
                     "search batch x 8 (translation).")  # fmt: skip
flags.DEFINE_integer("max_batches", None, "Score only the first N eval batches (default: all).")
flags.DEFINE_integer("max_length", None, "Tokens per row (default: the run's max_length).")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest finalized one).")
flags.DEFINE_string("json", None, "Also write the results as JSON to this file ('-': stdout).")
flags.DEFINE_bool("verbose", False, "Also print the INFO lines of absl, orbax, jax and TF.")

EXIT_INVALID = 2
ORDER = ("perplexity", "nll", "loss", "accuracy", "tokens", "nsp_accuracy", "nsp_loss", "bleu",
         "chrf", "sentences")  # fmt: skip


def _read_lines(path: str, flag: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"{flag} {path!r} does not exist.") from None


def run(
    *,
    workdir: str | None = None,
    hf_dir: str | None = None,
    text_file: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    source_file: str | None = None,
    reference_file: str | None = None,
    output_file: str | None = None,
    beam_size: int = 4,
    length_penalty: float = 0.6,
    max_new_tokens: int | None = None,
    max_sentences: int | None = None,
    batch_size: int = 8,
    max_batches: int | None = None,
    max_length: int | None = None,
    step: int | None = None,
) -> dict:
    """{"model", "step", "arch", "data", "metrics": {name: value}} (see the module docstring)."""
    import jax

    from transformer_jax import data as data_lib
    from transformer_jax.eval import heldout, translation

    if (workdir is None) == (hf_dir is None):
        raise ValueError("Give exactly one of --workdir or --hf_dir.")
    if workdir is not None:
        from transformer_jax.train import workdir as wd

        model_cfg, params, step = wd.load_params(workdir, step)
        tokenizer = wd.load_tokenizer(workdir)
    else:
        from transformer_jax import hf

        if step is not None:
            raise ValueError("--step applies to --workdir checkpoints, not to --hf_dir.")
        model_cfg, params = hf.load(hf_dir)
        params = jax.device_put(params)
        tokenizer = hf.load_tokenizer(hf_dir)
    base = heldout.run_config(workdir)
    own = text_file is None and dataset is None and source_file is None
    if own and workdir is None:
        raise ValueError("An --hf_dir has no eval split of its own: give --text_file, "
                         "--dataset or --source_file/--reference_file.")  # fmt: skip
    config = heldout.data_config(
        base, model_cfg.arch, text_file=text_file, dataset=dataset, data_dir=data_dir,
        source_file=source_file, reference_file=reference_file, own_split=own,
        batch_size=batch_size, max_batches=max_batches, max_length=max_length,
    )  # fmt: skip
    what = text_file or dataset or (f"{source_file} -> {reference_file}" if source_file else None)
    result = {
        "model": workdir or hf_dir,
        "step": step,
        "arch": model_cfg.arch,
        "data": what or f"the run's eval split ({config.dataset})",
        "metrics": heldout.heldout_metrics(
            model_cfg, params, tokenizer, config, workdir if own else None
        ),
    }
    if config.objective == "seq2seq":
        if source_file is not None:
            sources = _read_lines(source_file, "--source_file")
            references = _read_lines(reference_file, "--reference_file")
            if len(sources) != len(references):
                raise ValueError(
                    f"--source_file has {len(sources)} lines but --reference_file "
                    f"{len(references)}: they must be aligned line by line."
                )
            pairs = list(zip(sources, references, strict=True))[:max_sentences]
        else:
            pairs = data_lib.read_pairs(config, workdir, "eval", limit=max_sentences)
        hyps = translation.translate(
            model_cfg, params, tokenizer, [s for s, _ in pairs], beam_size=beam_size,
            alpha=length_penalty, max_new_tokens=max_new_tokens or config.max_length,
            batch_size=8 * batch_size,
        )  # fmt: skip
        if output_file is not None:
            translation.write_lines(output_file, hyps)
        result["metrics"].update(translation.corpus_scores(hyps, [t for _, t in pairs]))
        result["metrics"]["sentences"] = len(pairs)
    return result


def table(result: dict) -> str:
    """The results as aligned `metric  value` lines under a title line."""
    step = "" if result["step"] is None else f"step {result['step']}, "
    lines = [f"# {result['model']} ({step}{result['arch']}) on {result['data']}"]
    metrics = result["metrics"]
    names = [n for n in ORDER if n in metrics] + sorted(set(metrics) - set(ORDER))
    width = max(len(n) for n in names)
    for name in names:
        value = metrics[name]
        text = f"{value:.0f}" if name in ("tokens", "sentences") else f"{value:.4f}"
        lines.append(f"{name:<{width}}  {text:>12}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    del argv
    console.setup(FLAGS.verbose)
    if not FLAGS.verbose:
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
    try:
        result = run(
            workdir=FLAGS.workdir, hf_dir=FLAGS.hf_dir, text_file=FLAGS.text_file,
            dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, source_file=FLAGS.source_file,
            reference_file=FLAGS.reference_file, output_file=FLAGS.output_file,
            beam_size=FLAGS.beam_size, length_penalty=FLAGS.length_penalty,
            max_new_tokens=FLAGS.max_new_tokens, max_sentences=FLAGS.max_sentences,
            batch_size=FLAGS.batch_size, max_batches=FLAGS.max_batches,
            max_length=FLAGS.max_length, step=FLAGS.step,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        print(f"evaluate.py: {e}", file=sys.stderr)
        return EXIT_INVALID
    print(table(result))
    if FLAGS.json == "-":
        print(json.dumps(result, indent=2))
    elif FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
