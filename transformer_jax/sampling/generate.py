"""`generate` (greedy / temperature / top-k / top-p) and `beam_search` for DecoderOnly and
EncoderDecoder models: host-side checks, then one jitted program per call.

Each call runs ONE compiled program: (encode and) prefill the padded prompt block in one
parallel pass, then a `lax.while_loop` that emits one token per step into a preallocated KV
cache of static length `bucket + max_new_tokens`, exiting early once every row is finished.

What recompiles. The compiled programs are cached by jax.jit, keyed on
  * the model: its ModelConfig (a module is reduced to its `.config`), the parameter tree's
    structure and dtypes;
  * the batch size;
  * the prompt bucket (DecoderOnly) or source bucket (EncoderDecoder): the longest row padded
    to a power of two >= 16, capped by max_len (see `inputs.bucket_length`); with
    `pad_id=None` sources cannot be padded, so the exact source length is the key;
  * max_new_tokens, eos_id, and the pad id (from the config);
  * generate: the sampling mode: greedy (temperature == 0) or not, the top_k value, whether
    top_p < 1, vocab_limit, suppress_tokens; and the kind of rng (typed key vs raw uint32 key);
  * beam_search: beam_size, vocab_limit, suppress_tokens.
The values of temperature, top_p and alpha, the prompt contents, the individual prompt
lengths within a bucket, and the rng value never recompile.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from transformer_jax import models
from transformer_jax.config import ModelConfig
from transformer_jax.sampling import inputs
from transformer_jax.sampling.beam import beam_search_loop
from transformer_jax.sampling.loop import sample_loop
from transformer_jax.sampling.model_fns import (
    decoder_only_fns,
    encoder_decoder_fns,
    two_stream_fns,
)
from transformer_jax.sampling.settings import SamplingSettings


def config_of(model: nn.Module | ModelConfig) -> ModelConfig:
    """A ModelConfig, or a transformer_jax module's config."""
    config = model if isinstance(model, ModelConfig) else getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise TypeError(f"Expected a ModelConfig or a transformer_jax model, got {model!r}.")
    if config.arch == "encoder":
        raise ValueError(
            "Encoder-only models do not generate text; use sampling.fill_mask for MLM predictions."
        )
    return config


def _prepare(
    config: ModelConfig,
    prompts: Any,
    lengths: Any,
    *,
    max_new_tokens: Any,
    bos_id: int | None,
    eos_id: int | None,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None, int]:
    """Host checks -> (decoder prompt block [B, P], lengths [B], (source block [B, S], its
    real tokens [B, S] bool) or None, output pad id)."""
    max_new_tokens = inputs.check_positive("max_new_tokens", max_new_tokens)
    vocab = config.vocab_size
    inputs.check_id("eos_id", eos_id, vocab)
    inputs.check_id("bos_id", bos_id, vocab)
    pad = 0 if config.pad_id is None else config.pad_id
    if config.arch in ("decoder", "two_stream"):  # two_stream (XLNet): continues prompts too
        rows = inputs.as_rows(prompts, lengths, what="prompt")
        if bos_id is not None:
            rows = [np.concatenate([[bos_id], row]) for row in rows]
        inputs.check_ids(rows, vocab, what="prompt")
        inputs.check_no_pad(rows, config.pad_id)
        inputs.check_lengths(rows, config.max_len, what="prompt", extra=max_new_tokens)
        width = inputs.bucket_length(max(len(row) for row in rows), config.max_len)
        block, row_lengths = inputs.pad_rows(rows, width, pad)
        return block, row_lengths, None, pad
    # Encoder-decoder: prompts are sources; the decoder starts from bos_id.
    if bos_id is None:
        raise ValueError(
            "An encoder-decoder model needs bos_id, the decoder start token (BART: 2, </s>)."
        )
    rows = inputs.as_rows(prompts, lengths, what="source")
    inputs.check_ids(rows, vocab, what="source")
    inputs.check_lengths(rows, config.max_len, what="source")
    start = [np.array([bos_id])]
    inputs.check_lengths(start, config.max_len, what="decoder start", extra=max_new_tokens)
    width = inputs.padded_width(rows, config.max_len, config.pad_id, "source")
    src, src_lengths = inputs.pad_rows(rows, width, pad)
    src_valid = np.arange(width)[None, :] < src_lengths[:, None]  # [B, S]: explicit, not pad ids
    block, row_lengths = inputs.pad_rows(start * len(rows), 1, pad)
    return block, row_lengths, (src, src_valid), pad


def _model_fns(
    config: ModelConfig,
    params: Any,
    src: tuple[jax.Array, jax.Array] | None,  # (tokens [B, S], real tokens [B, S] bool)
    repeat: int = 1,
    eos_id=None,
):
    """(prefill, tokens_to_logits) for the model; the pad id (unless it doubles as EOS) is
    never produced: the uncached forward masks keys holding it, so a generated pad would make
    cached and uncached decoding disagree, and it is no real token of the tokenizer."""
    model = models.build(config)
    if config.arch == "two_stream":
        prefill, step = two_stream_fns(model, params)
    elif src is None:
        prefill, step = decoder_only_fns(model, params)
    else:
        tokens, valid = src
        step_src, step_valid = (
            (None, None)
            if repeat == 1
            else (jnp.repeat(tokens, repeat, axis=0), jnp.repeat(valid, repeat, axis=0))
        )  # [B * W, S]
        prefill, step = encoder_decoder_fns(model, params, tokens, step_src, valid, step_valid)
    blocked = config.pad_id if config.pad_id is not None and config.pad_id != eos_id else None
    if blocked is None:
        return prefill, step

    def blocked_prefill(prompts, lengths, cache):
        logits, cache = prefill(prompts, lengths, cache)  # [B, V]
        return logits.at[..., blocked].set(-jnp.inf), cache

    def blocked_step(tokens, positions, cache):
        logits, cache = step(tokens, positions, cache)  # [B, T, V]
        return logits.at[..., blocked].set(-jnp.inf), cache

    return blocked_prefill, blocked_step


# Region-based copy insertion (an XLA:CPU option, off by default there): with it, XLA:CPU
# writes each KV cache carried by the decode loop in place instead of copying it two to four
# times per step (measured in BENCHMARKS.md, issues 12 and 19). Only the sampler's programs
# get it, only on CPUs, and only where the installed XLA knows the option.
_CPU_LOOP_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}


@functools.cache
def _loop_compiler_options() -> tuple[tuple[str, Any], ...]:
    """The compiler options of the sampler's programs on this backend (see above)."""
    if jax.default_backend() != "cpu":
        return ()
    try:
        jax.jit(lambda x: x + 1, compiler_options=_CPU_LOOP_OPTIONS).lower(np.int32(0)).compile()
    except Exception:  # an XLA without the option: the default copy insertion
        return ()
    return tuple(_CPU_LOOP_OPTIONS.items())


@functools.cache
def _jitted(fn, static_argnames: tuple[str, ...], options: tuple[tuple[str, Any], ...]):
    return jax.jit(fn, static_argnames=static_argnames, compiler_options=dict(options) or None)


def _compiled(fn, *static_argnames: str):
    """`fn` under jax.jit with the sampler's compiler options; one jit object per function,
    so its compiled programs are cached across calls."""
    return _jitted(fn, static_argnames, _loop_compiler_options())


def _generate_jit(
    params, prompts, lengths, src, rng, settings, *, config, max_new_tokens, eos_id, pad_id
):
    """-> (tokens [B, N], lengths [B], loop steps [])."""
    prefill, tokens_to_logits = _model_fns(config, params, src, eos_id=eos_id)
    batch, width = prompts.shape  # [B, P]
    cache = models.init_cache(config, batch, width + max_new_tokens)
    logits, cache = prefill(prompts, lengths, cache)  # [B, V]
    state = sample_loop(
        tokens_to_logits,
        logits,
        cache,
        lengths,  # row b's first new token takes position lengths[b]
        rng,
        settings,
        max_new_tokens=max_new_tokens,
        eos_id=eos_id,
        pad_id=pad_id,
    )
    return state.tokens, state.lengths, state.step


def _beam_jit(
    params,
    prompts,
    lengths,
    src,
    alpha,
    *,
    config,
    beam_size,
    max_new_tokens,
    eos_id,
    pad_id,
    vocab_limit,
    suppress,
):
    """-> (best tokens [B, N], lengths [B], scores [B], loop steps [])."""
    prefill, _ = _model_fns(config, params, src, eos_id=eos_id)
    _, tokens_to_logits = _model_fns(config, params, src, repeat=beam_size, eos_id=eos_id)
    batch, width = prompts.shape  # [B, P]
    cache = models.init_cache(config, batch, width + max_new_tokens)
    logits, cache = prefill(prompts, lengths, cache)  # [B, V]; cache repeated per beam later
    state = beam_search_loop(
        tokens_to_logits,
        logits,
        cache,
        lengths,
        beam_size=beam_size,
        max_new_tokens=max_new_tokens,
        alpha=alpha,
        eos_id=eos_id,
        pad_id=pad_id,
        vocab_limit=vocab_limit,
        suppress_tokens=suppress,
        reorder_cache=_reorder_tokens if config.arch == "two_stream" else _reorder_self_attention,
    )
    best = (
        state.finished_tokens[:, 0],  # [B, N]
        state.finished_lengths[:, 0],  # [B]
        state.finished_scores[:, 0],  # [B]
    )
    return (*best, state.step)


def _reorder_self_attention(cache: list[dict], rows: jax.Array) -> list[dict]:
    """Beam reorder of a model cache: only self-attention keys/values depend on the beam;
    cross-attention ones (encoder-decoder) are the same for all beams of a row and stay."""
    gather = lambda x: x[rows]  # noqa: E731
    return [{**layer, "self": jax.tree_util.tree_map(gather, layer["self"])} for layer in cache]


def _reorder_tokens(cache: jax.Array, rows: jax.Array) -> jax.Array:
    """Beam reorder of a two-stream model's token buffer [B * W, S]."""
    return cache[rows]


def _as_key(rng: Any, greedy: bool) -> jax.Array:
    if rng is None:
        if not greedy:
            raise ValueError(
                "Sampling with temperature > 0 needs an rng: pass jax.random.key(seed) or an "
                "int seed (or temperature=0 for greedy decoding)."
            )
        rng = 0
    if isinstance(rng, int | np.integer):
        return jax.random.key(int(rng))
    return rng


def generate(
    model: nn.Module | ModelConfig,
    params: Any,
    prompts: Any,
    rng: jax.Array | int | None = None,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: int | None = None,
    bos_id: int | None = None,
    vocab_limit: int | None = None,
    lengths: Any = None,
    suppress_tokens: Any = (),
    weights_dtype: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Samples continuations (DecoderOnly) or targets (EncoderDecoder).

    Args:
      model: a DecoderOnly / EncoderDecoder module or its ModelConfig.
      params: the model's parameters.
      prompts: DecoderOnly: prompts; EncoderDecoder: sources. A list of lists of ids
        (variable lengths) or an int array [B, T] with optional `lengths` [B].
      rng: PRNG key or int seed; may be None only for greedy decoding. Step s uses
        fold_in(rng, s): the same rng gives the same output.
      max_new_tokens: tokens to generate per row; prompt + max_new_tokens <= max_len.
      temperature: 0 = greedy (argmax); otherwise logits / temperature.
      top_k: keep the k most likely tokens (0 = all).
      top_p: keep the smallest set of most likely tokens with mass >= top_p (1 = all).
      eos_id: a row stops after emitting it; the loop stops when all rows have.
      bos_id: DecoderOnly: prepended to every prompt if given. EncoderDecoder: the decoder
        start token (required).
      vocab_limit: ids >= vocab_limit (padding of the model's vocabulary past the tokenizer's)
        are never produced.
      suppress_tokens: ids never produced (a checkpoint's HF generation config:
        `hf.generation_defaults(dir)["suppress_tokens"]`). The pad id is never produced
        either way (unless it is the EOS): see `_model_fns`.
      weights_dtype: 'bfloat16' decodes from bfloat16 copies of the weights (half the weight
        bytes read per token); logits within bfloat16 rounding of float32's: see
        `cast_weights`.

    Returns:
      (tokens [B, max_new_tokens] int32, pad id (or 0) after EOS; lengths [B] int32, the
      number of generated tokens per row, EOS included).
    """
    config = config_of(model)
    settings = SamplingSettings.create(
        vocab_size=config.vocab_size,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        vocab_limit=vocab_limit,
        suppress_tokens=suppress_tokens,
    )
    _check_eos_allowed(eos_id, settings)
    prompt_block, prompt_lengths, src, pad = _prepare(
        config, prompts, lengths, max_new_tokens=max_new_tokens, bos_id=bos_id, eos_id=eos_id
    )
    run = _compiled(_generate_jit, "config", "max_new_tokens", "eos_id", "pad_id")
    tokens, out_lengths, _ = run(
        cast_weights(params, weights_dtype),
        prompt_block,
        prompt_lengths,
        src,
        _as_key(rng, settings.greedy),
        settings,
        config=config,
        max_new_tokens=int(max_new_tokens),
        eos_id=eos_id,
        pad_id=pad,
    )
    return np.asarray(tokens), np.asarray(out_lengths)


def beam_search(
    model: nn.Module | ModelConfig,
    params: Any,
    prompts: Any,
    *,
    beam_size: int,
    max_new_tokens: int,
    alpha: float = 0.6,
    eos_id: int | None = None,
    bos_id: int | None = None,
    vocab_limit: int | None = None,
    lengths: Any = None,
    suppress_tokens: Any = (),
    weights_dtype: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Beam search (see beam.py for the exact semantics); arguments as in `generate`.

    alpha: length penalty exponent; scores are log p / ((5 + len) / 6) ** alpha.

    Returns (best tokens [B, max_new_tokens] int32, pad after EOS; lengths [B] int32, EOS
    included; scores [B] float32, the length-penalised log-probabilities).
    """
    config = config_of(model)
    beam_size = inputs.check_positive("beam_size", beam_size)
    scorer = SamplingSettings.create(
        vocab_size=config.vocab_size, vocab_limit=vocab_limit, suppress_tokens=suppress_tokens
    )
    _check_eos_allowed(eos_id, scorer)
    alpha = float(alpha)
    if not np.isfinite(alpha):
        raise ValueError(f"alpha={alpha} must be a finite number (0 = no length penalty).")
    prompt_block, prompt_lengths, src, pad = _prepare(
        config, prompts, lengths, max_new_tokens=max_new_tokens, bos_id=bos_id, eos_id=eos_id
    )
    run = _compiled(
        _beam_jit,
        "config", "beam_size", "max_new_tokens", "eos_id", "pad_id", "vocab_limit", "suppress",
    )  # fmt: skip
    tokens, out_lengths, scores, _ = run(
        cast_weights(params, weights_dtype),
        prompt_block,
        prompt_lengths,
        src,
        np.float32(alpha),
        config=config,
        beam_size=beam_size,
        max_new_tokens=int(max_new_tokens),
        eos_id=eos_id,
        pad_id=pad,
        vocab_limit=scorer.vocab_limit,
        suppress=scorer.suppress,
    )
    return np.asarray(tokens), np.asarray(out_lengths), np.asarray(scores)


WEIGHTS_DTYPES = ("float32", "bfloat16")


@functools.partial(jax.jit, static_argnames="dtype")
def _cast(params: Any, dtype: str) -> Any:
    return jax.tree_util.tree_map(
        lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, params
    )


def cast_weights(params: Any, dtype: str | None) -> Any:
    """The floating-point parameters cast to `dtype` ('bfloat16': half the weight bytes a
    decoding step reads; the modules still compute in the config's dtype, from the rounded
    weights); None: unchanged. Cast once and reuse the result to pay for the cast once."""
    if dtype is None:
        return params
    if dtype not in WEIGHTS_DTYPES:
        raise ValueError(f"weights_dtype={dtype!r} must be one of {WEIGHTS_DTYPES} or None.")
    return _cast(params, dtype)


def _check_eos_allowed(eos_id: int | None, settings: SamplingSettings) -> None:
    vocab_limit = settings.vocab_limit
    if eos_id is not None and vocab_limit is not None and eos_id >= vocab_limit:
        raise ValueError(
            f"eos_id={eos_id} is >= vocab_limit={vocab_limit}, so it could never be produced."
        )
    if eos_id is not None and eos_id in settings.suppress:
        raise ValueError(
            f"eos_id={eos_id} is in suppress_tokens={list(settings.suppress)}, so it could "
            "never be produced; drop it from suppress_tokens."
        )
