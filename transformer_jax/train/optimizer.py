"""AdamW (paper defaults β1=0.9, β2=0.98, ε=1e-9) with global-norm clipping.

Weight decay skips every bias (by name: attention biases are 2-D), norm scales/offsets and
1-D parameters; kernels and embeddings are decayed.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

NO_DECAY = ("bias", "scale", "logits_bias")  # biases (any rank) and norm scales/offsets


def decay_mask(params: Any) -> Any:
    """True for parameters that get weight decay: kernels and embeddings, not biases (an
    attention bias is [heads, head_dim], so rank alone cannot tell) or norm parameters."""

    def decays(path, p) -> bool:
        name = getattr(path[-1], "key", None)
        return name not in NO_DECAY and p.ndim > 1

    return jax.tree_util.tree_map_with_path(decays, params)


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
