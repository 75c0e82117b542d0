"""Translation quality: beam-search translations of source sentences, scored with sacrebleu.

    hyps = translate(model_cfg, params, tokenizer, sources, beam_size=4, max_new_tokens=64)
    scores = corpus_scores(hyps, references)  # {"bleu": 27.3, "chrf": 55.1}

Scores are sacrebleu's corpus BLEU (13a tokenization, exponential smoothing) and chrF (character
6-grams, beta 2) on detokenized text: the numbers `sacrebleu REF -i HYP -m bleu chrf` prints
for the same files, and that papers report. `TranslationEval` is what a seq2seq training run
calls at each evaluation: it translates the first N sentences of the eval split and keeps the
files under WORKDIR/translations/ (source.txt, reference.txt, step_<N>.txt) so that any score
can be recomputed from the command line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from transformer_jax.text_tokenizer import TextTokenizer, decoder_start, frame_prompt

TRANSLATIONS_DIR = "translations"


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """{"bleu", "chrf"}: sacrebleu's corpus scores (0-100) of one reference per hypothesis."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references: give one "
            "reference line per hypothesis line."
        )
    if not hypotheses:
        raise ValueError("No sentences to score: the hypothesis and reference lists are empty.")
    return {
        "bleu": float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score),
        "chrf": float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score),
    }


def translate(
    model_cfg,
    params: Any,
    tokenizer: TextTokenizer,
    sources: Sequence[str],
    *,
    beam_size: int = 4,
    alpha: float = 0.6,
    max_new_tokens: int = 64,
    batch_size: int = 64,
) -> list[str]:
    """Detokenized beam-search translations of `sources` by an encoder-decoder model.

    Sources are framed as in training (text_tokenizer.frame_prompt) and cut to the model's
    max_len (the final EOS kept). They run in batches of `batch_size` (the last one padded
    with copies of its first source, so every batch has one shape: one compilation)."""
    from transformer_jax import sampling

    if model_cfg.arch != "encoder_decoder":
        raise ValueError(f"translate needs an encoder-decoder model, not {model_cfg.arch!r}.")
    max_new_tokens = min(int(max_new_tokens), model_cfg.max_len - 1)
    rows = []
    for ids in tokenizer.encode_batch(list(sources)):
        row = frame_prompt(tokenizer, ids, "encoder_decoder")
        if len(row) > model_cfg.max_len:
            row = row[: model_cfg.max_len - 1] + [tokenizer.eos_id]
        rows.append(row)
    out: list[str] = []
    size = max(1, min(int(batch_size), len(rows)))
    for first in range(0, len(rows), size):
        chunk = rows[first : first + size]
        real = len(chunk)
        chunk = chunk + [chunk[0]] * (size - real)
        tokens, lengths, _ = sampling.beam_search(
            model_cfg,
            params,
            chunk,
            beam_size=beam_size,
            alpha=alpha,
            max_new_tokens=max_new_tokens,
            eos_id=tokenizer.eos_id,
            bos_id=decoder_start(tokenizer, "encoder_decoder"),
            vocab_limit=tokenizer.vocab_size,
        )
        tokens, lengths = np.asarray(tokens), np.asarray(lengths)  # [b, N], [b]
        out.extend(tokenizer.decode(tokens[i, : lengths[i]]) for i in range(real))
    return out


def write_lines(path: str, lines: Sequence[str]) -> None:
    """One sentence per line (newlines inside a sentence become spaces), written atomically."""
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(line.replace("\n", " ") + "\n" for line in lines)
    os.replace(path + ".tmp", path)


class TranslationEval:
    """BLEU/chrF of a training run: `scores = evaluator(params, step)` translates the held
    sentences, writes WORKDIR/translations/step_<step>.txt and returns {"bleu", "chrf"}."""

    def __init__(
        self,
        model_cfg,
        tokenizer: TextTokenizer,
        pairs: Sequence[tuple[str, str]],
        directory: str | None,
        *,
        beam_size: int,
        alpha: float,
        max_new_tokens: int,
    ):
        if not pairs:
            raise ValueError("TranslationEval needs at least one (source, reference) pair.")
        self.model_cfg = model_cfg
        self.tokenizer = tokenizer
        self.sources = [s for s, _ in pairs]
        self.references = [t for _, t in pairs]
        self.directory = directory
        self.options = dict(beam_size=beam_size, alpha=alpha, max_new_tokens=max_new_tokens)
        if directory is not None:
            os.makedirs(directory, exist_ok=True)
            write_lines(os.path.join(directory, "source.txt"), self.sources)
            write_lines(os.path.join(directory, "reference.txt"), self.references)

    def __call__(self, params: Any, step: int) -> dict[str, float]:
        hyps = translate(
            self.model_cfg,
            params,
            self.tokenizer,
            self.sources,
            batch_size=64,  # beam rows 64 x beam_size; equal shapes: one compilation per run
            **self.options,
        )
        if self.directory is not None:
            write_lines(os.path.join(self.directory, f"step_{step}.txt"), hyps)
        return corpus_scores(hyps, self.references)
