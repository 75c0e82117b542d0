"""Norms, the position-wise feed-forward, and one Transformer layer (encoder or decoder).

An encoder layer is (self-attention, feed-forward); a decoder layer is (causal
self-attention, optional cross-attention, feed-forward). Which masks apply is decided by the
caller; the layer wires the sublayers with residuals: post-LN, pre-LN or parallel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from transformer_jax.config import AttentionConfig, FeedForwardConfig, ModelConfig, NormConfig
from transformer_jax.nn import initializers
from transformer_jax.nn.attention import KVCache, MultiHeadAttention
from transformer_jax.nn.partitioning import logical
from transformer_jax.nn.positions import PositionEncoding

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": lambda x: nn.gelu(x, approximate=False),  # exact erf GELU (BERT, BART)
    "gelu_tanh": lambda x: nn.gelu(x, approximate=True),  # GPT-2's tanh approximation
    "silu": nn.silu,
}


def make_norm(config: NormConfig, dtype: Any, name: str) -> nn.Module:
    """LayerNorm (scale + bias) or RMSNorm (scale only); statistics in float32."""
    if config.kind == "rmsnorm":
        return nn.RMSNorm(epsilon=config.eps, dtype=dtype, name=name)
    return nn.LayerNorm(epsilon=config.eps, dtype=dtype, name=name)


def dense(
    features: int,
    name: str,
    *,
    use_bias: bool,
    dtype: Any,
    init_std: float,
    axes: tuple[str | None, str | None] = (None, None),  # logical names of the kernel [in, out]
) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        kernel_init=logical(initializers.normal(init_std), axes),
        name=name,
    )


class FeedForward(nn.Module):
    """FFN(x) = act(x Wi + bi) Wo + bo; gated: (act(x Wi_gate) * (x Wi)) Wo."""

    config: FeedForwardConfig
    d_model: int  # D, output width
    dtype: Any = jnp.float32
    init_std: float = 0.02

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, D] -> [B, T, D]
        cfg = self.config
        kw = dict(use_bias=cfg.bias, dtype=self.dtype, init_std=self.init_std)
        act = ACTIVATIONS[cfg.activation]
        if cfg.gated:  # the activated branch is the gate (HF gate_proj, T5 wi_0)
            wi_gate = dense(cfg.d_ff, "wi_gate", axes=("embed", "mlp"), **kw)
            h = act(wi_gate(x)) * dense(cfg.d_ff, "wi", axes=("embed", "mlp"), **kw)(x)
        else:
            h = act(dense(cfg.d_ff, "wi", axes=("embed", "mlp"), **kw)(x))  # [B, T, F]
        return dense(self.d_model, "wo", axes=("mlp", "embed"), **kw)(h)  # [B, T, D]


LayerCache = dict[str, KVCache]  # {"self": KVCache, "cross": KVCache (decoders of seq2seq)}


class TransformerLayer(nn.Module):
    """One block, built from the attention, feed-forward and norm groups of the config.
    `cross=True` adds cross-attention over an encoder's output."""

    attn_cfg: AttentionConfig
    ffn_cfg: FeedForwardConfig
    norm_cfg: NormConfig
    d_model: int  # D
    head_dim: int  # H
    dropout_rate: float = 0.0  # on residual branches
    dtype: Any = jnp.float32
    init_std: float = 0.02
    cross: bool = False

    @classmethod
    def from_config(cls, config: ModelConfig, **kwargs: Any) -> TransformerLayer:
        """The layer of `config` (its attention, ffn and norm groups and the numerics)."""
        return cls(
            config.attention,
            config.ffn,
            config.norm,
            d_model=config.d_model,
            head_dim=config.head_dim,
            dropout_rate=config.dropout_rate,
            dtype=config.compute_dtype,
            init_std=config.init_std,
            **kwargs,
        )

    def setup(self) -> None:
        attn = dict(
            d_model=self.d_model, head_dim=self.head_dim, dtype=self.dtype, init_std=self.init_std
        )
        self.self_attn = MultiHeadAttention(self.attn_cfg, **attn)
        self.self_attn_norm = make_norm(self.norm_cfg, self.dtype, "self_attn_norm")
        if self.cross:
            self.cross_attn = MultiHeadAttention(self.attn_cfg, **attn)
            self.cross_attn_norm = make_norm(self.norm_cfg, self.dtype, "cross_attn_norm")
        self.ffn = FeedForward(
            self.ffn_cfg, d_model=self.d_model, dtype=self.dtype, init_std=self.init_std
        )
        self.ffn_norm = make_norm(self.norm_cfg, self.dtype, "ffn_norm")
        self.dropout = nn.Dropout(self.dropout_rate)

    def _sublayer(self, x, norm, fn, deterministic):
        """post-LN: norm(x + drop(f(x))); pre-LN: x + drop(f(norm(x))). f returns (y, aux)."""
        pre = self.norm_cfg.residual == "pre"
        y, aux = fn(norm(x) if pre else x)
        x = x + self.dropout(y, deterministic=deterministic)
        return (x if pre else norm(x)), aux

    def __call__(
        self,
        x: jax.Array,  # [B, T, D]
        mask: jax.Array | None,  # [B, 1, T, T or cache S]
        *,
        encoding: PositionEncoding | None = None,  # the stack's, at these tokens' positions
        encoded: jax.Array | None = None,  # [B, S, D] encoder output (cross only)
        cross_mask: jax.Array | None = None,  # [B, 1, T, S]
        cache: LayerCache | None = None,
        cache_index: jax.Array | None = None,  # [B]
        deterministic: bool = True,
    ) -> tuple[jax.Array, LayerCache | None]:
        """Returns (x [B, T, D], new cache or None when no cache was given)."""
        self_cache = None if cache is None else cache["self"]

        def self_attention(h):
            return self.self_attn(
                h,
                mask,
                encoding=encoding,
                cache=self_cache,
                cache_index=cache_index,
                deterministic=deterministic,
            )

        if self.norm_cfg.residual == "parallel":
            # x + attn(n1(x)) + ffn(n2(x)), n2 = n1 with one shared norm (no cross-attention).
            h = self.self_attn_norm(x)
            y, self_kv = self_attention(h)
            h_ffn = h if self.norm_cfg.parallel_norms == 1 else self.ffn_norm(x)
            x = (
                x
                + self.dropout(y, deterministic=deterministic)
                + self.dropout(self.ffn(h_ffn), deterministic=deterministic)
            )
            return x, None if cache is None else {"self": self_kv}

        x, self_kv = self._sublayer(x, self.self_attn_norm, self_attention, deterministic)
        new_cache = None if cache is None else {"self": self_kv}
        if self.cross:
            cross_kv = None if cache is None else cache.get("cross")
            if cross_kv is None:
                if encoded is None:
                    raise ValueError("A decoder layer with cross-attention needs `encoded`.")
                cross_kv = self.cross_attn.project_kv(encoded)  # [B, K, S, H]

            def cross_attention(h):
                return self.cross_attn(h, cross_mask, kv=cross_kv, deterministic=deterministic)

            x, _ = self._sublayer(x, self.cross_attn_norm, cross_attention, deterministic)
            if new_cache is not None:
                new_cache["cross"] = cross_kv
        x, _ = self._sublayer(x, self.ffn_norm, lambda h: (self.ffn(h), None), deterministic)
        return x, new_cache


def init_layer_caches(
    config: ModelConfig, num_layers: int, batch: int, length: int
) -> list[LayerCache]:
    """Self-attention caches of zeros; cross-attention entries are filled by the first call."""
    return [{"self": KVCache.zeros(config, batch, length)} for _ in range(num_layers)]
