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

from transformer_jax import console, runtime  # noqa: E402

runtime.tune_gc()  # before JAX, Flax and TensorFlow load (transformer_jax/runtime.py)
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
def main(argv: list[str]) -> int:
    del argv
    from transformer_jax.eval import report

    console.setup(FLAGS.verbose)
    if not FLAGS.verbose:
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
    try:
        result = report.evaluate(
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
    print(report.table(result))
    if FLAGS.json == "-":
        print(json.dumps(result, indent=2))
    elif FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
