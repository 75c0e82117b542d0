"""config.json fields: an allowlist per family. A field is either understood (read into the
ModelConfig), required to hold a value we implement, or known to leave the network unchanged
(bookkeeping, generation defaults, training-only settings). Anything else is refused, so a
checkpoint never loads silently into a different model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# PretrainedConfig bookkeeping and generation defaults: they never change the network.
COMMON_IGNORED = frozenset(
    {
        "architectures", "model_type", "transformers_version", "_name_or_path", "dtype",
        "torch_dtype", "use_cache", "return_dict", "output_attentions", "output_hidden_states",
        "torchscript", "id2label", "label2id", "num_labels", "problem_type", "finetuning_task",
        "tokenizer_class", "prefix", "task_specific_params", "gradient_checkpointing",
        "chunk_size_feed_forward", "pruned_heads", "tie_encoder_decoder", "is_encoder_decoder",
        "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id",
        "forced_bos_token_id", "forced_eos_token_id", "max_length", "min_length", "do_sample",
        "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty", "temperature",
        "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty",
        "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
        "num_return_sequences", "output_scores", "return_dict_in_generate",
        "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
        "begin_suppress_tokens", "classifier_dropout", "cross_attention_hidden_size",
        "use_bfloat16", "tf_legacy_loss", "output_past",
    }
)  # fmt: skip


def check_fields(
    hf: Mapping[str, Any],
    family: str,
    understood: set[str],
    required: Mapping[str, tuple[Any, ...]],
    ignored: set[str] = frozenset(),
) -> None:
    """ValueError naming the first field that is unknown or holds an unsupported value."""
    for key, value in hf.items():
        if key in required:
            if value not in required[key]:
                allowed = " or ".join(repr(v) for v in required[key])
                raise ValueError(
                    f"{family} config.json: {key}={value!r} is not supported (it changes the "
                    f"model and transformer_jax implements only {key}={allowed})."
                )
        elif key not in understood and key not in ignored and key not in COMMON_IGNORED:
            raise ValueError(
                f"{family} config.json: unknown field {key}={value!r}; it may change the model, "
                "so the checkpoint is not loaded. If it does not, add it to the family's "
                "ignored fields."
            )


def choose(family: str, key: str, value: Any, mapping: Mapping[Any, Any]) -> Any:
    """mapping[value], or a ValueError naming the field, its value and what is supported."""
    if value not in mapping:
        raise ValueError(
            f"{family} config.json: {key}={value!r} is not supported; supported: {list(mapping)}."
        )
    return mapping[value]


ROPE_FIELDS = {"rope_theta", "rope_scaling", "rope_parameters"}


def rope_theta(hf: Mapping[str, Any], family: str, default: float = 10000.0) -> float:
    """The RoPE base of a config.json, from `rope_theta` (transformers 4.x) or
    `rope_parameters` (5.x). Only the original rotary ("default" type) is implemented: any
    scaling (linear, dynamic, yarn, llama3, ...) or partial rotary factor is refused by name."""
    theta = hf.get("rope_theta", default)
    for key in ("rope_scaling", "rope_parameters"):
        params = hf.get(key)
        if params is None:
            continue
        if not isinstance(params, Mapping):
            raise ValueError(f"{family} config.json: {key}={params!r} is not a dict.")
        kind = params.get("rope_type", params.get("type", "default"))
        if kind != "default":
            raise ValueError(
                f"{family} config.json: {key}.rope_type={kind!r} is not supported; "
                "transformer_jax implements only rope_type='default' (unscaled RoPE)."
            )
        for name, value in params.items():
            if name not in ("rope_type", "type", "rope_theta"):
                raise ValueError(
                    f"{family} config.json: {key}.{name}={value!r} is not supported; "
                    "transformer_jax implements only unscaled RoPE over the whole head."
                )
        theta = params.get("rope_theta", theta)
    return float(theta)
