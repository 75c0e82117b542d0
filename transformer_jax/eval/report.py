"""What evaluate.py computes and prints: `evaluate(workdir=... | hf_dir=..., <data>)` returns
{"model", "step", "arch", "data", "metrics"}; `table(result)` formats it (evaluate.py's docstring
lists the choices of data and the metrics)."""

from __future__ import annotations

ORDER = ("perplexity", "nll", "loss", "accuracy", "tokens", "nsp_accuracy", "nsp_loss", "bleu",
         "chrf", "sentences")  # fmt: skip


def _read_lines(path: str, flag: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"{flag} {path!r} does not exist.") from None


def evaluate(
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
        batch_size=batch_size, max_batches=max_batches,
        max_length=max_length or min(base.get("max_length") or 128, model_cfg.max_len),
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
