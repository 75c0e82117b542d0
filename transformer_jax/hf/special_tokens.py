"""Which ids are a checkpoint's special tokens: read from tokenizer_config.json,
special_tokens_map.json, config.json and generation_config.json, as transformers reads them.

A token named by the tokenizer files (`"eos_token": "</s>"`, or `{"content": "</s>", ...}`)
is looked up in the vocabulary; an id in config.json (`eos_token_id`) is used when the
tokenizer files name none. `decoder_start_token_id` comes from config.json or
generation_config.json.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from transformer_jax.hf.files import read_json

TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
NAMES = ("pad", "unk", "bos", "eos", "mask", "cls", "sep")


def read_optional(directory: str, name: str) -> dict[str, Any]:
    path = os.path.join(directory, name)
    return read_json(path, name) if os.path.isfile(path) else {}


def content(value: Any) -> str | None:
    if isinstance(value, dict):  # a serialized AddedToken
        value = value.get("content")
    return value if isinstance(value, str) else None


def _first_id(value: Any) -> int | None:
    if isinstance(value, list):  # eos_token_id may list several ids; the first one is primary
        value = value[0] if value else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


SENTINEL = "<extra_id_{}>"  # T5's span-corruption sentinels (HF T5Tokenizer's extra_ids)


def sentinel_ids(token_to_id: Callable[[str], int | None]) -> tuple[int, ...]:
    """The ids of `<extra_id_0>`, `<extra_id_1>`, ... while the vocabulary has them (T5's
    100 at the top of its 32,100 ids, `<extra_id_0>` last); () when it has none."""
    out: list[int] = []
    while (token_id := token_to_id(SENTINEL.format(len(out)))) is not None:
        out.append(token_id)
    return tuple(out)


def special_ids(
    directory: str,
    token_to_id: Callable[[str], int | None],
    defaults: dict[str, int | None],
) -> dict[str, int | None]:
    """{pad, unk, bos, eos, mask, cls, sep, decoder_start} -> id or None. `defaults` (e.g.
    the ids a sentencepiece model declares) apply where no file names the token."""
    tok_config = read_optional(directory, TOKENIZER_CONFIG)
    token_map = read_optional(directory, SPECIAL_TOKENS_MAP)
    model_config = read_optional(directory, "config.json")
    generation = read_optional(directory, "generation_config.json")
    out: dict[str, int | None] = {}
    for name in NAMES:
        key = f"{name}_token"
        named = key in tok_config or key in token_map
        token = content(tok_config.get(key, token_map.get(key)))
        if token is not None:
            token_id = token_to_id(token)
            if token_id is None:
                source = TOKENIZER_CONFIG if key in tok_config else SPECIAL_TOKENS_MAP
                raise ValueError(
                    f"{os.path.join(directory, source)}: {key}={token!r} is not in the "
                    "tokenizer's vocabulary; fix the token or remove the entry."
                )
            out[name] = token_id
        elif named:  # "pad_token": null says there is none
            out[name] = None
        else:
            from_config = _first_id(model_config.get(f"{key}_id"))
            out[name] = from_config if from_config is not None else defaults.get(name)
    start = model_config.get("decoder_start_token_id", generation.get("decoder_start_token_id"))
    out["decoder_start"] = _first_id(start)
    return out
