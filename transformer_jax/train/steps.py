"""Pure train and eval steps: `train_step(state, batch, rng) -> (state, metrics)`.

Written once for every architecture and objective; data parallelism enters only through
`axis_name` (the collectives below), so the same function runs under `jax.pmap` (the default
here) and, with axis_name=None, under plain `jax.jit`.

Normalisation: each device's objective is its weighted loss SUM divided by the GLOBAL weight
(summed over devices and micro-batches), so the psum of per-device gradients is exactly the
gradient of the global mean loss — N devices give the 1-device result on the same global batch,
however the non-pad tokens are spread over devices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from transformer_jax.train.losses import (
    chunked_token_stats,
    smoothed_cross_entropy,
    weighted_token_stats,
)

OBJECTIVES = ("clm", "mlm", "mlm_nsp", "denoise", "span_corruption", "seq2seq", "plm")


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # [] int32: number of train steps taken
    params: Any
    opt_state: Any
    skipped: jax.Array  # [] int32: updates skipped for a non-finite loss or gradient


def init_train_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
    # Two buffers, not one zero twice: a donating step must not receive one buffer twice.
    step, skipped = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)
    return TrainState(step=step, params=params, opt_state=tx.init(params), skipped=skipped)


AUTO_CHUNK_TOKENS = 1024  # loss_chunk_size=-1: the chunk once the logits pass the limit
AUTO_CHUNK_LOGITS_BYTES = 1 << 30  # float32 [tokens, V] logits above 1 GiB: chunk the loss
# On CPUs from 32 MiB: XLA:CPU computes the plain loss's backward for the output kernel's
# gradient as a transposing fusion over [tokens, V] (~14x the time of the same pass in row
# order: 1.2 s of a 5 s step, issue 12); the chunked loss's per-chunk dots avoid it.
AUTO_CHUNK_LOGITS_BYTES_CPU = 32 << 20


def resolve_loss_chunk_size(
    loss_chunk_size: int, tokens: int, vocab_size: int, platform: str | None = None
) -> int:
    """-1 (auto) -> AUTO_CHUNK_TOKENS once the float32 logits of `tokens` tokens (one
    device's micro-batch) pass AUTO_CHUNK_LOGITS_BYTES (_CPU on a CPU), else 0 (the plain
    loss); other values pass through. `platform`: None = jax's default backend."""
    if loss_chunk_size != -1:
        return loss_chunk_size
    platform = jax.default_backend() if platform is None else platform
    limit = AUTO_CHUNK_LOGITS_BYTES_CPU if platform == "cpu" else AUTO_CHUNK_LOGITS_BYTES
    return AUTO_CHUNK_TOKENS if tokens * vocab_size * 4 > limit else 0


def _psum(x: Any, axis_name: str | None) -> Any:
    """The one collective of the steps: a sum over the data-parallel axis (identity off-axis)."""
    return x if axis_name is None else lax.psum(x, axis_name)


def forward_stats(
    model: nn.Module,
    params: Any,
    batch: dict[str, jax.Array],
    *,
    objective: str,
    label_smoothing: float = 0.0,
    deterministic: bool = True,
    rngs: dict[str, jax.Array] | None = None,
    loss_chunk_size: int = 0,
) -> dict[str, jax.Array]:
    """Forward pass for `objective`; returns SUMS: loss, nll, correct, weight (+ nsp_*).

    `loss_chunk_size` > 0: the model returns its final hidden states and the token loss runs
    the output head over chunks of that many tokens (losses.chunked_token_stats), so [B, T, V]
    logits never exist; 0: the plain loss over the full logits."""
    variables = {"params": params}
    full = model
    if loss_chunk_size:
        model = model.clone(hidden_out=True)  # `logits` below are hidden states [B, T, D]
    kw = dict(deterministic=deterministic, rngs=rngs or {})
    nsp_logits = None
    if objective == "clm":
        logits = model.apply(
            variables,
            batch["inputs"],
            positions=batch.get("positions"),
            segment_ids=batch.get("segment_ids"),
            **kw,
        )  # [B, T, V]
    elif objective in ("mlm", "mlm_nsp"):
        types = batch.get("token_types")  # [B, T]; the MLM pipeline's are all zero
        if objective == "mlm" and not model.config.embed.type_vocab_size:
            # A model without token types (DistilBERT) ignores those zeros; NSP's real
            # segment types still reach the model, which names the missing table.
            types = None
        logits, nsp_logits = model.apply(
            variables,
            batch["inputs"],
            types,
            positions=batch.get("positions"),
            segment_ids=batch.get("segment_ids"),
            method="pretrain",
            **kw,
        )  # [B, T, V], [B, L]
    elif objective in ("denoise", "span_corruption", "seq2seq"):
        logits = model.apply(
            variables,
            batch["inputs"],
            batch["decoder_inputs"],
            src_positions=batch.get("inputs_positions"),
            src_segment_ids=batch.get("inputs_segment_ids"),
            tgt_positions=batch.get("targets_positions"),
            tgt_segment_ids=batch.get("targets_segment_ids"),
            **kw,
        )  # [B, T, V]
    elif objective == "plm":  # XLNet: query-stream logits at the targets, [B, P, V]
        logits = model.apply(
            variables,
            batch["inputs"],
            batch.get("token_types"),  # [B, T] XLNet segments, when the batch has them
            perm_mask=batch["perm_mask"],
            target_mapping=batch["target_mapping"],
            valid=batch["segment_ids"] > 0,
            **kw,
        )
    else:
        raise ValueError(f"objective={objective!r} is not one of {OBJECTIVES}.")
    if loss_chunk_size:
        stats = chunked_token_stats(
            lambda h: full.apply(variables, h, method="head"),  # [C, D] -> [C, V]
            logits,
            batch["targets"],
            batch["weights"],
            label_smoothing,
            loss_chunk_size,
        )
    else:
        stats = weighted_token_stats(logits, batch["targets"], batch["weights"], label_smoothing)
    if objective == "mlm_nsp":
        if nsp_logits is None:
            raise ValueError(
                "objective='mlm_nsp' needs a classifier: ModelConfig.heads.num_labels=2."
            )
        row_weight = _nsp_rows(batch)  # [B]
        _, nsp_nll = smoothed_cross_entropy(nsp_logits, batch["nsp_labels"])  # [B]
        correct = (jnp.argmax(nsp_logits, -1) == batch["nsp_labels"]).astype(jnp.float32)
        stats["nsp_loss"] = jnp.sum(nsp_nll * row_weight)
        stats["nsp_correct"] = jnp.sum(correct * row_weight)
        stats["nsp_weight"] = jnp.sum(row_weight)
    return stats


def _nsp_rows(batch: dict[str, jax.Array]) -> jax.Array:
    """[B] float: 1 for real sentence-pair rows, 0 for the padding rows of a last eval batch
    (those are all zeros, segment ids included)."""
    if "segment_ids" in batch:
        return (batch["segment_ids"][:, 0] > 0).astype(jnp.float32)
    return jnp.any(batch["weights"] > 0, axis=-1).astype(jnp.float32)


def _objective(stats: dict[str, jax.Array], totals: dict[str, jax.Array]) -> jax.Array:
    """Scalar to differentiate: token loss / global tokens (+ NSP loss / global rows)."""
    obj = stats["loss"] / jnp.maximum(totals["weight"], 1.0)
    if "nsp_loss" in stats:
        obj = obj + stats["nsp_loss"] / jnp.maximum(totals["nsp_weight"], 1.0)
    return obj


def _global_totals(batch: dict[str, jax.Array], objective: str, axis_name: str | None):
    weights = batch["weights"].astype(jnp.float32)
    totals = {"weight": jnp.sum(weights)}
    if objective == "mlm_nsp":
        totals["nsp_weight"] = jnp.sum(_nsp_rows(batch))
    return _psum(totals, axis_name)


def _split_micro(batch: dict[str, jax.Array], k: int) -> dict[str, jax.Array]:
    """[B, ...] -> [k, B/k, ...]."""

    def split(x):
        if x.shape[0] % k:
            raise ValueError(f"Batch of {x.shape[0]} rows does not split into {k} micro-batches.")
        return x.reshape(k, x.shape[0] // k, *x.shape[1:])  # [k, B/k, ...]

    return jax.tree_util.tree_map(split, batch)


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    objective: str,
    label_smoothing: float = 0.0,
    grad_accum_steps: int = 1,
    skip_nonfinite: bool = False,
    axis_name: str | None = "batch",
    loss_chunk_size: int = 0,
) -> Callable[[TrainState, dict[str, jax.Array], jax.Array], tuple[TrainState, dict]]:
    """Builds the pure step. `rng` is the run's base key; the step folds in the step number and
    the device index (0 without `axis_name`), so randomness is a function of (seed, step,
    device). `loss_chunk_size`: see `forward_stats`."""

    def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
        rng = jax.random.fold_in(rng, state.step)
        # The data-parallel replica's index; without an axis (jit, mesh mode: one program
        # over the global batch) 0, so that it draws the dropout of a 1-device pmap run.
        replica = 0 if axis_name is None else lax.axis_index(axis_name)
        rng = jax.random.fold_in(rng, replica)
        totals = _global_totals(batch, objective, axis_name)
        micro = _split_micro(batch, grad_accum_steps) if grad_accum_steps > 1 else None

        def micro_step(grads, inputs):
            mb, i = inputs

            def loss_fn(params):
                stats = forward_stats(
                    model,
                    params,
                    mb,
                    objective=objective,
                    label_smoothing=label_smoothing,
                    deterministic=False,
                    rngs={"dropout": jax.random.fold_in(rng, i)},
                    loss_chunk_size=loss_chunk_size,
                )
                return _objective(stats, totals), stats

            (_, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
            return jax.tree_util.tree_map(jnp.add, grads, g), stats

        zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
        if grad_accum_steps == 1:
            grads, stats = micro_step(zeros, (batch, 0))
        else:
            grads, stats = lax.scan(micro_step, zeros, (micro, jnp.arange(grad_accum_steps)))
            stats = jax.tree_util.tree_map(lambda s: jnp.sum(s, axis=0), stats)  # micro-batches
        grads = _psum(grads, axis_name)
        stats = _psum(stats, axis_name)

        grad_norm = optax.tree.norm(grads)
        # A NaN/Inf anywhere in the gradients makes their norm non-finite: one pass, not two.
        finite = jnp.logical_and(jnp.isfinite(grad_norm), jnp.isfinite(stats["loss"]))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = TrainState(
            step=state.step + 1, params=params, opt_state=opt_state, skipped=state.skipped
        )
        if skip_nonfinite:
            keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
            new_state = new_state.replace(
                params=jax.tree_util.tree_map(keep, params, state.params),
                opt_state=jax.tree_util.tree_map(keep, opt_state, state.opt_state),
                skipped=state.skipped + (1 - finite.astype(jnp.int32)),
            )
        metrics = dict(stats)
        metrics["grad_norm"] = grad_norm
        # The rate this update used: optax counts applied updates, i.e. steps minus skips.
        metrics["learning_rate"] = schedule(state.step - state.skipped)
        metrics["finite"] = finite.astype(jnp.float32)
        metrics["skipped"] = new_state.skipped.astype(jnp.float32)
        return new_state, metrics

    return train_step


def make_eval_step(
    model: nn.Module,
    *,
    objective: str,
    label_smoothing: float = 0.0,
    axis_name: str | None = "batch",
    loss_chunk_size: int = 0,
) -> Callable[[Any, dict[str, jax.Array]], dict[str, jax.Array]]:
    """eval_step(params, batch) -> summed stats (deterministic: no dropout)."""

    def eval_step(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        stats = forward_stats(
            model,
            params,
            batch,
            objective=objective,
            label_smoothing=label_smoothing,
            loss_chunk_size=loss_chunk_size,
        )
        return _psum(stats, axis_name)

    return eval_step


def summarize(stats: dict[str, float]) -> dict[str, float]:
    """Host-side: sums -> means. loss/nll per target token, perplexity = exp(nll)."""

    weight = max(float(stats["weight"]), 1.0)
    out = {
        "loss": float(stats["loss"]) / weight,
        "nll": float(stats["nll"]) / weight,
        "accuracy": float(stats["correct"]) / weight,
        "tokens": float(stats["weight"]),
    }
    out["perplexity"] = math.exp(min(out["nll"], 700.0))
    if "nsp_loss" in stats:
        rows = max(float(stats["nsp_weight"]), 1.0)
        out["nsp_loss"] = float(stats["nsp_loss"]) / rows
        out["nsp_accuracy"] = float(stats["nsp_correct"]) / rows
    for key in ("grad_norm", "learning_rate", "skipped"):
        if key in stats:
            out[key] = float(stats[key])
    return out
