"""Export a training checkpoint as a model directory someone else can use:

    python export.py --workdir W --out DIR [--step N] [--format auto|hf|own]

DIR gets config.json, model.safetensors (shards + index with --max_shard_size), the run's
tokenizer files, generation_config.json and transformer_jax_export.json (the step, the
training config, the library version, where an init_from run started).

--format auto (default) writes the Hugging Face format when a Hugging Face class expresses the
model exactly (GPT-2, BERT, BART configs; transformers then loads DIR as is), else this
library's own format (the paper Transformer, presets that mask pad keys, ...), which
`transformer_jax.hf.load` reads back bitwise; the output says which was written.
Exit codes: 0 done; 2 bad input (no workdir or checkpoint, a config HF cannot express with
--format hf), with the reason in one line.
"""

from __future__ import annotations

import json
import os
import sys

from transformer_jax import console, runtime  # noqa: E402

runtime.tune_gc()  # before JAX, Flax and TensorFlow load (transformer_jax/runtime.py)
console.quiet_environment(console.verbose_flag(sys.argv))  # before anything imports TensorFlow

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defined only when run as a program, so that tests can import `export` next to
    sample.py (absl refuses two modules defining --workdir)."""
    flags.DEFINE_string("workdir", None, "A workdir written by train.py.")
    flags.DEFINE_string("out", None, "The directory to write (created; its files replaced).")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest finalized one).")
    flags.DEFINE_enum("format", "auto", ["auto", "hf", "own"], "Which format to write.")
    flags.DEFINE_integer("max_shard_size", None, "Bytes per safetensors shard (default: one).")
    flags.DEFINE_bool("verbose", False, "Also print the INFO lines of absl, orbax, jax and TF.")


METADATA_FILE = "transformer_jax_export.json"


def export(
    workdir: str,
    out: str,
    step: int | None = None,
    format: str = "auto",
    max_shard_size: int | None = None,
) -> list[str]:
    """Writes `out` from the workdir's checkpoint; returns the lines to print."""
    import transformer_jax
    from transformer_jax import hf
    from transformer_jax.train import workdir as wd

    model_cfg, params, step = wd.load_params(workdir, step)
    tokenizer = wd.load_tokenizer(workdir)
    written = hf.save(
        model_cfg, params, out, tokenizer=tokenizer, max_shard_size=max_shard_size, format=format
    )
    with open(os.path.join(out, "config.json")) as f:
        stored = json.load(f)
    own = stored.get("model_type") == hf.own_format.MODEL_TYPE
    metadata = {
        "step": step,
        "format": "transformer_jax" if own else "huggingface",
        "library": "transformer_jax",
        "library_version": transformer_jax.__version__,
        "workdir": os.path.abspath(workdir),
        "training_config": _read_json(os.path.join(workdir, wd.CONFIG_FILE)),
        "init_from": _read_json(os.path.join(workdir, wd.INIT_FROM_FILE)),
    }
    with open(os.path.join(out, METADATA_FILE), "w") as f:
        json.dump(metadata, f, indent=2)
    written.append(METADATA_FILE)
    if own:
        kind = (
            "this library's own format (no Hugging Face class expresses this model config); "
            "transformers cannot load it, transformer_jax.hf.load reads it back bitwise"
        )
    else:
        kind = f"Hugging Face format ({stored['architectures'][0]}); transformers loads it as is"
    lines = [f"Exported step {step} of {workdir} to {out}: {kind}."]
    if type(tokenizer).__name__ == "Tokenizer":
        lines.append(
            "Tokenizer: this library's sentencepiece model (tokenizer.model); "
            "transformer_jax.hf.load_tokenizer reads it, transformers does not."
        )
    lines.append("Files: " + ", ".join(sorted(written)))
    return lines


def _read_json(path: str):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def main(argv: list[str]) -> int:
    del argv
    console.setup(FLAGS.get_flag_value("verbose", False))
    try:
        if not FLAGS.workdir or not FLAGS.out:
            raise ValueError("Give --workdir (a train.py workdir) and --out (the directory).")
        lines = export(FLAGS.workdir, FLAGS.out, FLAGS.step, FLAGS.format, FLAGS.max_shard_size)
    except (ValueError, FileNotFoundError) as e:
        print(f"export.py: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    _define_flags()
    app.run(lambda argv: sys.exit(main(argv)))
