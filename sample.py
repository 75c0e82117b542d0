"""Sample from a trained workdir or a Hugging Face checkpoint directory:

    python sample.py --workdir DIR --prompt TEXT [options]
    python sample.py --hf_dir DIR --prompt TEXT [options]   # config.json + safetensors + tokenizer

Loads the model config, the tokenizer and the latest finalized checkpoint from the workdir
(or the checkpoint with its own tokenizer from --hf_dir). Inputs are framed as in training
(transformer_jax/text_tokenizer.py):
  * decoder-only: continues the prompt (the decoder start, e.g. our BOS, + prompt);
  * encoder-decoder: the prompt is the source text (source + EOS, with BOS first where the
    tokenizer adds one, as BART's does); the decoder starts with the config's decoder start
    token; prints the target;
  * encoder-only: fills every [MASK] (or the tokenizer's own mask token, e.g. <mask>) in the
    prompt and prints the top candidates.
--prompt_file FILE takes one prompt per line and runs them as one batch. --beam_size > 1
uses beam search (deterministic; --num_samples is then ignored). --attention_png FILE draws
the attention weights of the first prompt plus its output (encoder-decoder: the encoder's,
the decoder's and the cross-attention) as a grid of heatmaps labelled with the tokens.
"""

from __future__ import annotations

import re
import sys

from transformer_jax import console, runtime  # noqa: E402

runtime.tune_gc()  # before JAX, Flax and TensorFlow load (transformer_jax/runtime.py)
console.quiet_environment(console.verbose_flag(sys.argv))  # before anything imports TensorFlow

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
MASK_TEXT = "[MASK]"
flags.DEFINE_string("workdir", None, "A workdir written by train.py.")
flags.DEFINE_string("hf_dir", None, "A Hugging Face checkpoint directory (instead of --workdir).")
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
flags.DEFINE_string("attention_png", None, "Draw the attention of every layer and head for the "
                    "first prompt and its output into this PNG file.")  # fmt: skip
flags.DEFINE_bool("verbose", False, "Also print the INFO lines of absl, orbax, jax and TF.")


def read_prompts(prompt: str | None, prompt_file: str | None) -> list[str]:
    if (prompt is None) == (prompt_file is None):
        raise ValueError("Give exactly one of --prompt or --prompt_file.")
    if prompt is not None:
        return [prompt]
    try:
        with open(prompt_file, encoding="utf-8") as f:
            prompts = [line.rstrip("\n") for line in f if line.strip()]
    except UnicodeDecodeError as e:
        raise ValueError(
            f"--prompt_file {prompt_file!r} is not UTF-8 text (byte {e.start} is "
            f"{e.object[e.start : e.start + 1]!r}); save it as UTF-8."
        ) from None
    if not prompts:
        raise ValueError(f"--prompt_file {prompt_file!r} holds no non-empty line.")
    return prompts


def encode_with_masks(tokenizer, text: str) -> list[int]:
    """Token ids of `text` with each literal "[MASK]" (or the tokenizer's own mask token, e.g.
    BART's "<mask>") replaced by the mask id (our tokenizer never turns text into the mask id:
    it is a control symbol)."""
    if tokenizer.mask_id is None:
        raise ValueError("Fill-mask needs a mask token, but this tokenizer has no mask_id.")
    spellings = {MASK_TEXT, tokenizer.id_to_piece(tokenizer.mask_id)}
    pattern = "|".join(re.escape(s) for s in sorted(spellings, key=len, reverse=True))
    ids: list[int] = []
    for i, part in enumerate(re.split(pattern, text)):
        if i:
            ids.append(tokenizer.mask_id)
        ids.extend(tokenizer.encode(part))
    return ids


def run(workdir: str, prompts: list[str], **options) -> list[str]:
    """Returns the lines to print (one block per prompt and sample)."""
    from transformer_jax.train import workdir as wd

    model_cfg, params, step = wd.load_params(workdir, options.get("step"))
    tokenizer = wd.load_tokenizer(workdir)  # ours, or the checkpoint's own (init_from runs)
    title = f"# {workdir} (step {step}, {model_cfg.arch})"
    return run_model(model_cfg, params, tokenizer, title, prompts, **options)


def run_hf(hf_dir: str, prompts: list[str], **options) -> list[str]:
    """`run` for a Hugging Face checkpoint directory, with its own tokenizer."""
    import jax

    from transformer_jax import hf

    if options.get("step") is not None:
        raise ValueError("--step applies to --workdir checkpoints, not to --hf_dir.")
    model_cfg, params = hf.load(hf_dir)
    tokenizer = hf.load_tokenizer(hf_dir)
    title = f"# {hf_dir} (Hugging Face checkpoint, {model_cfg.arch})"
    options = {**hf.generation_defaults(hf_dir), **options}  # the ids its config bans
    return run_model(model_cfg, jax.device_put(params), tokenizer, title, prompts, **options)


def run_model(model_cfg, params, tokenizer, title: str, prompts: list[str], **options):
    """The lines to print for `prompts`, given a model and any TextTokenizer."""
    from transformer_jax import models, sampling
    from transformer_jax.text_tokenizer import decoder_start, frame_prompt

    if tokenizer.vocab_size > model_cfg.vocab_size:
        raise ValueError(
            f"The tokenizer has {tokenizer.vocab_size} ids but the model only "
            f"{model_cfg.vocab_size}: they do not belong together."
        )
    model = models.build(model_cfg)
    lines = [title]
    if model_cfg.arch == "encoder":
        # As in training rows: [CLS] text [SEP]; reported positions count from the text.
        ids = [frame_prompt(tokenizer, encode_with_masks(tokenizer, p), "encoder") for p in prompts]
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
        if options.get("attention_png"):
            lines.append(
                _attention_png(model_cfg, params, tokenizer, ids[0], None, options, prompts[0])
            )
        return lines

    ids = [frame_prompt(tokenizer, tokenizer.encode(p), model_cfg.arch) for p in prompts]
    start = decoder_start(tokenizer, model_cfg.arch)
    common = dict(
        max_new_tokens=options["max_new_tokens"],
        eos_id=tokenizer.eos_id,
        bos_id=start,
        vocab_limit=tokenizer.vocab_size,
        suppress_tokens=options.get("suppress_tokens", ()),
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
        if model_cfg.arch in ("decoder", "two_stream"):  # a continuation of the prompt
            lines.append(f"> {prompt}{text}")
        else:
            lines.extend([f"> {prompt}", f"= {text}"])
    if options.get("attention_png"):  # the first prompt and its first output
        out = [int(t) for t in tokens[0, : lengths[0]]]
        head = [] if start is None else [start]
        if model_cfg.arch == "decoder":  # the whole sequence; else decoder inputs and source
            tokens_, source = head + ids[0] + out, None
        else:
            tokens_, source = head + out, ids[0]
        lines.append(
            _attention_png(model_cfg, params, tokenizer, tokens_, source, options, prompts[0])
        )
    return lines


def _attention_png(model_cfg, params, tokenizer, tokens, source, options, prompt) -> str:
    from transformer_jax import plot

    path = plot.attention_png(
        model_cfg, params, tokenizer, tokens, options["attention_png"], source=source,
        title=f"attention weights of {prompt!r}: layers (rows) and heads (columns)",
    )  # fmt: skip
    return f"# attention maps: {path}"


def main(argv: list[str]) -> int:
    del argv
    console.setup(FLAGS.verbose)
    try:
        if (FLAGS.workdir is None) == (FLAGS.hf_dir is None):
            raise ValueError("Give exactly one of --workdir or --hf_dir.")
        prompts = read_prompts(FLAGS.prompt, FLAGS.prompt_file)
        source, runner = (FLAGS.workdir, run) if FLAGS.workdir else (FLAGS.hf_dir, run_hf)
        lines = runner(
            source,
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
            attention_png=FLAGS.attention_png,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"sample.py: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
