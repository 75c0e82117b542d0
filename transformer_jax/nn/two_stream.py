"""XLNet's two-stream relative self-attention (Yang et al. 2019), as one layer and a stack.

Each layer attends with Transformer-XL relative positions: for query i and key j the score is

    ((q_i + r_w) . k_j  +  (q_i + r_r) . W_r enc(i - j)  +  (q_i + r_s) . seg[i ~ j]) / sqrt(H)

where enc is `positions.relative_sinusoids`, W_r a per-layer projection ("pos" here, HF's `r`),
r_w / r_r / r_s per-layer [N, H] biases and seg[i ~ j] one of two learned [N, H] vectors
(`seg_embed`: same segment or not; only when token types are given). Two streams share every
weight of a layer:
  * the content stream h (starts from the token embeddings): query i sees the keys its mask
    allows and always itself;
  * the query stream g (starts from the learned `mask_emb`): one row per prediction, placed
    at position j by `target_mapping`; it sees the content keys its mask allows, never
    its own token (the mask decides: it has no self exception).
Keys and values always come from the content stream. Both streams then go through the same
post-LN residuals and feed-forward. Masks here are boolean [B, 1, T, S], True = may attend
(nn.attention's convention); models.TwoStream builds them from HF's `perm_mask`.
The attention itself is `attention.attend` (scores + bias, mask, float32 softmax, dropout).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from transformer_jax.config import ModelConfig
from transformer_jax.nn import initializers
from transformer_jax.nn.attention import attend
from transformer_jax.nn.blocks import FeedForward, make_norm
from transformer_jax.nn.positions import relative_sinusoids


def relative_shift(scores: jax.Array, key_len: int) -> jax.Array:
    """[B, N, T, S + T] scores against the rows of `relative_sinusoids` -> [B, N, T, S]:
    entry (i, j) is column T - i + j (the row encoding distance i - j when the keys are the
    queries, S = T; S > T: keys that start S - T positions earlier). Transformer-XL's
    "relative shift" (HF rel_shift_bnij), reshapes and slices only: dropping the first
    T-sized row of the [S + T, T] view shifts row i of the result left by T - i."""
    batch, heads, q_len, rel_len = scores.shape
    x = scores.reshape(batch, heads, rel_len, q_len)[:, :, 1:]  # [B, N, S + T - 1, T]
    x = x.reshape(batch, heads, q_len, rel_len - 1)  # [B, N, T, S + T - 1]
    return x[..., :key_len]  # [B, N, T, S]


class RelativeAttention(nn.Module):
    """Projections and biases of one layer's relative attention (HF XLNetRelativeAttention):
    query/key/value/pos kernels [D, N, H] and the output kernel [N, H, D], no biases on them;
    r_w_bias, r_r_bias, r_s_bias [N, H]; seg_embed [2, N, H]."""

    num_heads: int  # N
    head_dim: int  # H
    d_model: int  # D
    dropout_rate: float = 0.0  # on the attention weights
    dtype: Any = jnp.float32
    init_std: float = 0.02

    def setup(self) -> None:
        init = initializers.normal(self.init_std)
        shape = (self.num_heads, self.head_dim)

        def proj(name):  # D -> [N, H]
            return nn.DenseGeneral(
                shape, use_bias=False, dtype=self.dtype, kernel_init=init, name=name
            )

        self.query, self.key, self.value = proj("query"), proj("key"), proj("value")
        self.pos = proj("pos")  # HF's r: the relative encodings' projection
        self.out = nn.DenseGeneral(
            self.d_model, axis=(-2, -1), use_bias=False, dtype=self.dtype, kernel_init=init
        )  # [N, H] -> D
        self.r_w_bias = self.param("r_w_bias", init, shape, jnp.float32)
        self.r_r_bias = self.param("r_r_bias", init, shape, jnp.float32)
        self.r_s_bias = self.param("r_s_bias", init, shape, jnp.float32)
        self.seg_embed = self.param("seg_embed", init, (2, *shape), jnp.float32)
        self.dropout = nn.Dropout(self.dropout_rate)

    def keys(self, h: jax.Array, rel: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Content keys and values [B, N, S, H] (attend's layout) from h [B, S, D], and the
        projected relative encodings [S + T, N, H] from rel [S + T, D]."""
        k = jnp.swapaxes(self.key(h), 1, 2)  # [B, S, N, H] -> [B, N, S, H]
        v = jnp.swapaxes(self.value(h), 1, 2)  # [B, S, N, H] -> [B, N, S, H]
        return k, v, self.pos(rel)  # [S + T, N, H]

    def __call__(
        self,
        q: jax.Array,  # [B, T, N, H] projected queries at positions 0..T-1
        kv: tuple[jax.Array, jax.Array, jax.Array],  # `keys` output
        mask: jax.Array | None,  # [B, 1, T, S] bool
        seg_diff: jax.Array | None,  # [B, T, S] bool: different segments; None = no term
        deterministic: bool = True,
    ) -> jax.Array:
        """Attention output before the output projection, [B, T, N, H]."""
        k, v, kr = kv
        dt = q.dtype
        scale = self.head_dim**-0.5
        bd = jnp.einsum("btnh,rnh->bntr", q + self.r_r_bias.astype(dt), kr)  # [B, N, T, S+T]
        bias = relative_shift(bd, k.shape[2])  # [B, N, T, S]
        if seg_diff is not None:
            ef = jnp.einsum("btnh,snh->bnts", q + self.r_s_bias.astype(dt), self.seg_embed)
            # ef: [B, N, T, 2] (same segment, different segment)
            bias = bias + jnp.where(seg_diff[:, None], ef[..., 1:], ef[..., :1])  # [B, N, T, S]
        return attend(
            q + self.r_w_bias.astype(dt),
            k,
            v,
            mask,
            scale=scale,
            bias=bias * scale,
            dropout=self.dropout,
            deterministic=deterministic,
        )  # [B, T, N, H]


class TwoStreamLayer(nn.Module):
    """One post-LN XLNet layer applied to the content stream and (if given) the query
    stream, with shared weights: x = norm(x + attn(x)); x = norm(x + ffn(x))."""

    config: ModelConfig

    def setup(self) -> None:
        cfg = self.config
        dt, std = cfg.compute_dtype, cfg.init_std
        self.self_attn = RelativeAttention(
            cfg.num_heads, cfg.head_dim, cfg.d_model, cfg.attention.dropout_rate, dt, std
        )
        self.self_attn_norm = make_norm(cfg.norm, dt, "self_attn_norm")
        self.ffn = FeedForward(cfg.ffn, d_model=cfg.d_model, dtype=dt, init_std=std)
        self.ffn_norm = make_norm(cfg.norm, dt, "ffn_norm")
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def _residuals(self, x: jax.Array, vec: jax.Array, deterministic: bool) -> jax.Array:
        """[B, T, D], attention output [B, T, N, H] -> both post-LN residual sublayers."""
        drop = lambda y: self.dropout(y, deterministic=deterministic)  # noqa: E731
        x = self.self_attn_norm(x + drop(self.self_attn.out(vec)))  # [B, T, D]
        return self.ffn_norm(x + drop(self.ffn(x)))  # [B, T, D]

    def __call__(
        self,
        h: jax.Array,  # [B, T, D] content stream
        g: jax.Array | None,  # [B, P, D] query stream (one row per prediction) or None
        rel: jax.Array,  # [2T, D] relative encodings
        content_mask: jax.Array | None,  # [B, 1, T, T]
        query_mask: jax.Array | None,  # [B, 1, T, T]
        seg_diff: jax.Array | None,  # [B, T, T]
        target_mapping: jax.Array | None,  # [B, P, T] float, with g
        deterministic: bool = True,
    ) -> tuple[jax.Array, jax.Array | None]:
        att = self.self_attn
        kv = att.keys(h, rel)
        vec = att(att.query(h), kv, content_mask, seg_diff, deterministic)  # [B, T, N, H]
        if g is not None:
            q = jnp.einsum("bpnh,bpt->btnh", att.query(g), target_mapping)  # [B, T, N, H]
            vec_g = att(q, kv, query_mask, seg_diff, deterministic)  # [B, T, N, H]
            vec_g = jnp.einsum("btnh,bpt->bpnh", vec_g, target_mapping)  # [B, P, N, H]
            g = self._residuals(g, vec_g, deterministic)  # [B, P, D]
        return self._residuals(h, vec, deterministic), g


class TwoStreamStack(nn.Module):
    """mask_emb [D] (the query stream's start), `num_layers` TwoStreamLayers, dropout on the
    embeddings, the relative encodings and the output (as HF)."""

    config: ModelConfig

    def setup(self) -> None:
        cfg = self.config
        init = initializers.normal(cfg.init_std)
        self.mask_emb = self.param("mask_emb", init, (cfg.d_model,), jnp.float32)
        self.layers = [TwoStreamLayer(cfg, name=f"layer_{i}") for i in range(cfg.num_layers)]
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def __call__(
        self,
        x: jax.Array,  # [B, T, D] token embeddings
        content_mask: jax.Array | None,  # [B, 1, T, T]
        query_mask: jax.Array | None,  # [B, 1, T, T]
        seg_diff: jax.Array | None,  # [B, T, T] bool
        target_mapping: jax.Array | None,  # [B, P, T]
        deterministic: bool = True,
    ) -> jax.Array:
        """The query stream's output [B, P, D] with a target_mapping, else the content
        stream's [B, T, D]."""
        cfg = self.config
        drop = lambda y: self.dropout(y, deterministic=deterministic)  # noqa: E731
        batch, length, _ = x.shape
        rel = relative_sinusoids(length, length, cfg.d_model, cfg.positions.clamp_len)
        rel = drop(rel.astype(x.dtype))  # [2T, D]
        h, g = drop(x), None
        if target_mapping is not None:
            target_mapping = target_mapping.astype(x.dtype)
            shape = (batch, target_mapping.shape[1], cfg.d_model)
            g = drop(jnp.broadcast_to(self.mask_emb.astype(x.dtype), shape))  # [B, P, D]
        for layer in self.layers:
            h, g = layer(
                h, g, rel, content_mask, query_mask, seg_diff, target_mapping, deterministic
            )
        return drop(h if g is None else g)
