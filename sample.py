"""Sample from a trained workdir: `python sample.py --workdir DIR --prompt TEXT [options]`.

Loads the model config, the tokenizer and the latest finalized checkpoint from the workdir.
  * decoder-only: continues the prompt (BOS + prompt);
  * encoder-decoder: the prompt is the source text (source + EOS); prints the target;
  * encoder-only: fills every [MASK] in the prompt and prints the top candidates.
--prompt_file FILE takes one prompt per line and runs them as one batch. --beam_size > 1
uses beam search (deterministic; --num_samples is then ignored).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
MASK_TEXT = "[MASK]"
flags.DEFINE_string("workdir", None, "A workdir written by train.py.")
flags.DEFINE_string("prompt", None, "Prompt (decoder-only), source text (encoder-decoder) or "
                    "text with [MASK] tokens (encoder-only).")  # fmt: skip
flags.DEFINE_string("prompt_file", None, "A file with one prompt per line (run as a batch).")
flags.DEFINE_integer("max_new_tokens", 64, "Tokens to generate per sample.")
flags.DEFINE_float("temperature", 1.0, "0 = greedy.")
flags.DEFINE_integer("top_k", 0, "Sample from the k most likely tokens (0 = all); fill-mask: "
                     "candidates shown (0 = 5).")  # fmt: skip
flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass (1 = off).")
flags.DEFINE_integer("beam_size", 1, "Beam search when > 1.")
flags.DEFINE_float("length_penalty", 0.6, "Beam search length penalty alpha.")
flags.DEFINE_integer("num_samples", 1, "Samples per prompt.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest finalized one).")
flags.mark_flag_as_required("workdir")


def read_prompts(prompt: str | None, prompt_file: str | None) -> list[str]:
    if (prompt is None) == (prompt_file is None):
        raise ValueError("Give exactly one of --prompt or --prompt_file.")
    if prompt is not None:
        return [prompt]
    with open(prompt_file, encoding="utf-8") as f:
        prompts = [line.rstrip("\n") for line in f if line.strip()]
    if not prompts:
        raise ValueError(f"--prompt_file {prompt_file!r} holds no non-empty line.")
    return prompts


def encode_with_masks(tokenizer, text: str) -> list[int]:
    """Token ids of `text` with each literal "[MASK]" replaced by the mask id (the tokenizer
    itself never turns text into the mask id: it is a control symbol)."""
    ids: list[int] = []
    for i, part in enumerate(text.split(MASK_TEXT)):
        if i:
            ids.append(tokenizer.mask_id)
        ids.extend(tokenizer.encode(part))
    return ids


def run(workdir: str, prompts: list[str], **options) -> list[str]:
    """Returns the lines to print (one block per prompt and sample)."""
    from transformer_jax import data, models, sampling
    from transformer_jax.train import workdir as wd

    model_cfg, params, step = wd.load_params(workdir, options.get("step"))
    tokenizer = data.Tokenizer.load(os.path.join(workdir, wd.TOKENIZER_FILE))
    model = models.build(model_cfg)
    lines = [f"# {workdir} (step {step}, {model_cfg.arch})"]
    if model_cfg.arch == "encoder":
        # As in training rows: [CLS] text [SEP]; reported positions count from the text.
        ids = [[tokenizer.cls_id, *encode_with_masks(tokenizer, p), tokenizer.sep_id]
               for p in prompts]  # fmt: skip
        top_k = options.get("top_k") or 5
        results = sampling.fill_mask(
            model, params, ids, tokenizer.mask_id, top_k, vocab_limit=tokenizer.vocab_size
        )
        for prompt, masks in zip(prompts, results, strict=True):
            lines.append(f"> {prompt}")
            if not masks:
                lines.append("  (no [MASK] token in the prompt)")
            for m in masks:
                cands = ", ".join(
                    f"{tokenizer.id_to_piece(i)!r} {p:.3f}"
                    for i, p in zip(m.ids, m.probs, strict=True)
                )
                lines.append(f"  position {m.position - 1}: {cands}")
        return lines

    ids = [tokenizer.encode(p) for p in prompts]
    if model_cfg.arch == "encoder_decoder":
        ids = [row + [tokenizer.eos_id] for row in ids]
    common = dict(
        max_new_tokens=options["max_new_tokens"],
        eos_id=tokenizer.eos_id,
        bos_id=tokenizer.bos_id,
        vocab_limit=tokenizer.vocab_size,
    )
    beam = options.get("beam_size", 1)
    num_samples = 1 if beam > 1 else options.get("num_samples", 1)
    batch = [row for row in ids for _ in range(num_samples)]  # prompt-major
    if beam > 1:
        tokens, lengths, _ = sampling.beam_search(
            model, params, batch, beam_size=beam, alpha=options["length_penalty"], **common
        )
    else:
        tokens, lengths = sampling.generate(
            model,
            params,
            batch,
            options.get("seed", 0),
            temperature=options["temperature"],
            top_k=options["top_k"],
            top_p=options["top_p"],
            **common,
        )
    for i, (row, n) in enumerate(zip(tokens, lengths, strict=True)):
        prompt = prompts[i // num_samples]
        text = tokenizer.decode(row[:n])
        if model_cfg.arch == "decoder":
            lines.append(f"> {prompt}{text}")
        else:
            lines.extend([f"> {prompt}", f"= {text}"])
    return lines


def main(argv: list[str]) -> int:
    del argv
    try:
        prompts = read_prompts(FLAGS.prompt, FLAGS.prompt_file)
        lines = run(
            FLAGS.workdir,
            prompts,
            max_new_tokens=FLAGS.max_new_tokens,
            temperature=FLAGS.temperature,
            top_k=FLAGS.top_k,
            top_p=FLAGS.top_p,
            beam_size=FLAGS.beam_size,
            length_penalty=FLAGS.length_penalty,
            num_samples=FLAGS.num_samples,
            seed=FLAGS.seed,
            step=FLAGS.step,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"sample.py: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
