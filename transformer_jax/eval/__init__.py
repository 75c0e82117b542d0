"""Evaluation people trust: sacrebleu BLEU/chrF of beam-search translations (translation.py)
and the held-out metrics of evaluate.py (metrics.py: perplexity, MLM accuracy).

Nothing here imports TensorFlow or sacrebleu until a function needs it.
"""

from transformer_jax.eval.translation import (
    TRANSLATIONS_DIR,
    TranslationEval,
    corpus_scores,
    translate,
)

__all__ = ["TRANSLATIONS_DIR", "TranslationEval", "corpus_scores", "translate"]
