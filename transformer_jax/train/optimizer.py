"""AdamW (paper defaults β1=0.9, β2=0.98, ε=1e-9) with global-norm clipping.

Weight decay skips biases, norm scales/offsets and 1-D parameters in general; embeddings are
decayed like other matrices.
"""

from __future__ import annotations

from typing import Any

import jax
import optax


def decay_mask(params: Any) -> Any:
    """True for parameters that get weight decay: matrices and higher (not biases/norms)."""
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def make_optimizer(
    schedule: optax.Schedule,
    *,
    b1: float = 0.9,
    b2: float = 0.98,
    eps: float = 1e-9,
    weight_decay: float = 0.0,
    grad_clip_norm: float | None = None,
) -> optax.GradientTransformation:
    parts = []
    if grad_clip_norm:
        parts.append(optax.clip_by_global_norm(grad_clip_norm))
    parts.append(
        optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask)
    )
    return optax.chain(*parts)
