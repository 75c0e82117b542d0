"""A checkpoint's own generation defaults that change which tokens may be produced, read as
transformers reads them: generation_config.json when the directory has one, else the
generation fields of config.json (`GenerationConfig.from_model_config`).

  suppress_tokens                 -> never produced (SuppressTokensLogitsProcessor)
  bad_words_ids, one-token lists  -> never produced (NoBadWordsLogitsProcessor's static ban;
                                     Marian's published configs ban the pad id: [[58100]])

Longer bad-word sequences and `begin_suppress_tokens` are refused (ValueError), so a
checkpoint never samples tokens its authors banned. Everything else in those files (beam
count, lengths, penalties) is a default the caller chooses for itself.
"""

from __future__ import annotations

import os
from typing import Any

from transformer_jax.hf.files import GENERATION_CONFIG, read_json


def generation_defaults(directory: str) -> dict[str, Any]:
    """{"suppress_tokens": tuple of ids} for `generate` / `beam_search` (sorted, unique)."""
    path = os.path.join(directory, GENERATION_CONFIG)
    if not os.path.isfile(path):
        path = os.path.join(directory, "config.json")
    config = read_json(path, os.path.basename(path)) if os.path.isfile(path) else {}
    suppress = set(config.get("suppress_tokens") or ())
    for words in config.get("bad_words_ids") or ():
        if len(words) != 1:
            raise ValueError(
                f"{path}: bad_words_ids entry {words} bans a {len(words)}-token sequence; "
                "transformer_jax bans single tokens only. Remove the entry (or list its "
                "tokens in suppress_tokens to ban each one everywhere)."
            )
        suppress.add(words[0])
    if config.get("begin_suppress_tokens"):
        raise ValueError(
            f"{path}: begin_suppress_tokens={config['begin_suppress_tokens']} (a ban on the "
            "first generated token only) is not supported; remove it or move the ids to "
            "suppress_tokens."
        )
    return {"suppress_tokens": tuple(sorted(int(i) for i in suppress))}
