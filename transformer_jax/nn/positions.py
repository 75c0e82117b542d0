"""Position schemes: one module computes a stack's position encoding once per call.

A scheme contributes through three hooks, each used by whoever needs it:
  * `embedding`: added to the token embeddings (learned table, sinusoidal table);
  * `rotate`: applied to self-attention queries and keys (rotary);
  * `bias`: added to the self-attention scores (T5's relative buckets; room for ALiBi).
The variant and its parameters come from `ModelConfig.positions` (config.py).
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from transformer_jax.config import (
    LearnedPositions,
    NoPositions,
    Positions,
    RelativePositions,
    RotaryPositions,
    SinusoidalPositions,
)
from transformer_jax.nn import initializers


def sinusoidal_table(length: int, d_model: int, layout: str = "interleaved") -> np.ndarray:
    """The paper's table, float32 [length, d_model], for angles pos / 10000^(2i/d):

    "interleaved" (the paper): PE[pos, 2i] = sin, PE[pos, 2i+1] = cos;
    "halves" (Marian): PE[pos, :ceil(d/2)] = sin, PE[pos, ceil(d/2):] = cos.
    """
    pos = np.arange(length, dtype=np.float64)[:, None]  # [L, 1]
    two_i = np.arange(0, d_model, 2, dtype=np.float64)[None, :]  # [1, ceil(D/2)]
    angles = pos / np.power(10000.0, two_i / d_model)  # [L, ceil(D/2)]
    table = np.zeros((length, d_model), dtype=np.float64)
    if layout == "interleaved":
        table[:, 0::2] = np.sin(angles)
        table[:, 1::2] = np.cos(angles[:, : d_model // 2])
    elif layout == "halves":
        half = angles.shape[1]
        table[:, :half] = np.sin(angles)
        table[:, half:] = np.cos(angles[:, : d_model - half])
    else:
        raise ValueError(f"sinusoidal layout {layout!r} is not 'interleaved' or 'halves'.")
    return table.astype(np.float32)


def rotary_angles(positions: jax.Array, rotary_dim: int, theta: float) -> jax.Array:
    """[B, T] int -> float32 [B, T, R/2]: position * theta^(-2i/R)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
    return positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, R/2]


def relative_buckets(
    relative: jax.Array, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> jax.Array:
    """T5's bucket of each relative position (key position - query position), int32 in
    [0, num_buckets), as Mesh TensorFlow and HF compute it (float32 log, then truncation):

    bidirectional: half the buckets for keys after the query, half for keys before it;
    causal: keys after the query all fall in bucket 0 (the causal mask hides them).
    Within a direction, distances below half its buckets get one bucket each; longer ones
    share log-spaced buckets up to max_distance, and everything beyond the last.
    """
    buckets = jnp.zeros(relative.shape, jnp.int32)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative > 0).astype(jnp.int32) * num_buckets
        distance = jnp.abs(relative)
    else:
        distance = -jnp.minimum(relative, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # log(0) = -inf at distance 0 is never selected (is_small); clip before the cast.
    scaled = (
        jnp.log(distance.astype(jnp.float32) / max_exact)
        / np.float32(np.log(max_distance / max_exact))
        * (num_buckets - max_exact)
    )
    large = max_exact + jnp.clip(scaled, 0, num_buckets).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return buckets + jnp.where(is_small, distance, large).astype(jnp.int32)


def relative_sinusoids(query_len: int, key_len: int, d_model: int, clamp_len: int) -> jax.Array:
    """Transformer-XL / XLNet ("bi"): float32 [S + T, D], row r encodes the distance
    S - r (S, S-1, ..., -T+1) as [sin | cos] halves of distance / 10000^(2i/D), distances
    clamped to +-clamp_len when clamp_len > 0. With the queries as keys (S = T), row
    S - (i - j) is the encoding for query i and key j (see two_stream.relative_shift)."""
    inv_freq = 1.0 / jnp.power(
        jnp.float32(10000.0), jnp.arange(0, d_model, 2, dtype=jnp.float32) / d_model
    )  # [ceil(D/2)]
    distance = jnp.arange(key_len, -query_len, -1).astype(jnp.float32)  # [S + T]
    if clamp_len > 0:
        distance = jnp.clip(distance, -clamp_len, clamp_len)
    angles = distance[:, None] * inv_freq[None, :]  # [S + T, ceil(D/2)]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)  # [S + T, D]


@flax.struct.dataclass
class PositionEncoding:
    """What a scheme gives one stack call, computed once and handed to every layer."""

    embedding: jax.Array | None = None  # [B, T, E], added to the token embeddings
    sin: jax.Array | None = None  # [B, T, R/2] rotary tables at the tokens' positions
    cos: jax.Array | None = None  # [B, T, R/2]
    bias: jax.Array | None = None  # [B or 1, N, T, S], added to the attention scores
    layout: str = flax.struct.field(pytree_node=False, default="half")  # rotary pairing

    def rotate(self, x: jax.Array) -> jax.Array:
        """[B, T, heads, H] -> the same, its first R dims rotated by the tokens' positions
        (identity for schemes that do not rotate). Computed in float32."""
        if self.sin is None:
            return x
        rdim = 2 * self.sin.shape[-1]
        sin = self.sin[:, :, None, :]  # [B, T, 1, R/2]
        cos = self.cos[:, :, None, :]
        xr = x[..., :rdim].astype(jnp.float32)  # [B, T, heads, R]
        if self.layout == "half":  # pairs (i, i + R/2)
            x1, x2 = xr[..., : rdim // 2], xr[..., rdim // 2 :]
            rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
        else:  # "interleaved": pairs (2i, 2i + 1)
            x1, x2 = xr[..., 0::2], xr[..., 1::2]  # [B, T, heads, R/2]
            rotated = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
            rotated = rotated.reshape(xr.shape)  # [B, T, heads, R/2, 2] -> [B, T, heads, R]
        return jnp.concatenate([rotated.astype(x.dtype), x[..., rdim:]], axis=-1)


class PositionScheme(nn.Module):
    """The configured variant at given positions: `scheme(positions [B, T]) -> encoding`.

    Learned tables are a parameter `embedding` [max_len + offset, E] of this module; the
    relative scheme's table is a parameter `relative_bias` [num_buckets, N], and its bias is
    computed against `key_positions` [B or 1, S] (the tokens' own positions, or the cache
    slots), with causal buckets when `causal`.
    """

    variant: Positions
    features: int  # E, the embedding width the tables add to
    max_len: int
    head_dim: int  # H, for rotary
    dtype: Any = jnp.float32
    init_std: float = 0.02
    num_heads: int = 1  # N, for the relative bias
    causal: bool = False  # the stack's self-attention is causal (relative buckets)

    @nn.compact
    def __call__(
        self,
        positions: jax.Array,  # [B, T] int
        key_positions: jax.Array | None = None,  # [B or 1, S] int; None = positions
    ) -> PositionEncoding:
        v = self.variant
        if isinstance(v, LearnedPositions):
            table = self.param(
                "embedding",
                initializers.normal(self.init_std),
                (self.max_len + v.offset, self.features),
                jnp.float32,
            )  # [P, E]
            rows = jnp.take(table.astype(self.dtype), positions + v.offset, axis=0)  # [B, T, E]
            return PositionEncoding(embedding=rows)
        if isinstance(v, SinusoidalPositions):
            table = jnp.asarray(sinusoidal_table(self.max_len, self.features, v.layout))
            return PositionEncoding(embedding=table[positions].astype(self.dtype))  # [B, T, E]
        if isinstance(v, RotaryPositions):
            rdim = self.head_dim if v.rotary_dim is None else v.rotary_dim
            angles = rotary_angles(positions, rdim, v.theta)  # [B, T, R/2]
            return PositionEncoding(sin=jnp.sin(angles), cos=jnp.cos(angles), layout=v.layout)
        if isinstance(v, RelativePositions):
            table = self.param(
                "relative_bias",
                initializers.normal(self.init_std),
                (v.num_buckets, self.num_heads),
                jnp.float32,
            )  # [num_buckets, N]
            keys = positions if key_positions is None else key_positions
            relative = keys[:, None, :] - positions[:, :, None]  # [B, T, S]
            buckets = relative_buckets(
                relative,
                bidirectional=not self.causal,
                num_buckets=v.num_buckets,
                max_distance=v.max_distance,
            )  # [B, T, S]
            bias = jnp.take(table, buckets, axis=0)  # [B, T, S, N]
            return PositionEncoding(bias=jnp.transpose(bias, (0, 3, 1, 2)))  # [B, N, T, S]
        if isinstance(v, NoPositions):
            return PositionEncoding()
        raise TypeError(f"Unknown position variant {v!r}.")
