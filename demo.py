"""`make demo`: train the default recipe, compare with the unigram baseline, sample.

Trains configs/gpt_tiny.py (a small GPT on the Python standard library's source) in
workdirs/demo — a rerun resumes or, when finished, re-evaluates — then prints the validation
loss next to the unigram-entropy baseline of the same tokenizer, a greedy continuation, and
the paths of the training curves it draws into workdirs/demo/plots/.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from transformer_jax import console, runtime  # noqa: E402

runtime.tune_gc()  # before JAX, Flax and TensorFlow load (transformer_jax/runtime.py)
console.quiet_environment(console.verbose_flag(sys.argv))  # before anything imports TensorFlow

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.abspath(__file__))
PROMPT = "def __init__(self"


def _load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def main() -> int:
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()  # our own bar is the one to watch
    import jax

    from transformer_jax import data, models, sampling
    from transformer_jax.train import train_and_evaluate
    from transformer_jax.train import workdir as wd

    config = _load_recipe("gpt_tiny")
    workdir = os.path.join(ROOT, "workdirs", "demo")
    print(
        f"Training {config.model} (overrides {dict(config.model_overrides)}) on the stdlib "
        f"corpus for {config.num_train_steps} steps in {workdir} ..."
    )
    summary = train_and_evaluate(config, workdir)

    train_src, eval_src, tokenizer = data.make_datasets(config, workdir)
    baseline = data.unigram_entropy(train_src, eval_src, tokenizer.vocab_size)
    loss = summary["eval"]["nll"]  # plain cross-entropy, comparable with the baseline
    print(
        f"\nvalidation loss {loss:.3f} nats/token (perplexity {summary['eval']['perplexity']:.1f})"
        f" vs unigram baseline {baseline:.3f} nats/token: {baseline - loss:+.3f} better"
    )
    if summary.get("compile_seconds") is not None and "train" in summary:
        t = summary["train"]
        print(
            f"last train log: {t.get('tokens_per_second', 0):.0f} tokens/s, MFU "
            f"{100 * t.get('mfu', 0):.1f}% of {jax.devices()[0].device_kind}; first step "
            f"(with compilation) {summary['compile_seconds']:.1f}s"
        )

    model_cfg, params, step = wd.load_params(workdir)
    prompt = tokenizer.encode(PROMPT)
    tokens, lengths = sampling.generate(
        models.build(model_cfg), params, [prompt], max_new_tokens=48, temperature=0.0,
        bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, vocab_limit=tokenizer.vocab_size,
    )  # fmt: skip
    print(f"\ngreedy sample from step {step}:\n{PROMPT}{tokenizer.decode(tokens[0, : lengths[0]])}")
    from transformer_jax import plot

    print("\ntraining curves (python -m transformer_jax.plot WORKDIR):")
    print("\n".join(plot.plot_metrics(workdir)))
    return 0 if loss < baseline else 1


if __name__ == "__main__":
    sys.exit(main())
