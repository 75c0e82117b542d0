"""Norms, the position-wise feed-forward, and one Transformer layer (encoder or decoder).

An encoder layer is (self-attention, feed-forward); a decoder layer is (causal
self-attention, optional cross-attention, feed-forward). Which masks apply is decided by the
caller; the layer only wires sublayers with residuals in post-LN or pre-LN order.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax

from transformer_jax.config import ModelConfig
from transformer_jax.nn.attention import KVCache, MultiHeadAttention

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": lambda x: nn.gelu(x, approximate=False),  # exact erf GELU (BERT, BART)
    "gelu_tanh": lambda x: nn.gelu(x, approximate=True),  # GPT-2's tanh approximation
    "silu": nn.silu,
}


def make_norm(config: ModelConfig, name: str) -> nn.Module:
    """LayerNorm (scale + bias) or RMSNorm (scale only); statistics in float32."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(epsilon=config.norm_eps, dtype=config.compute_dtype, name=name)
    return nn.LayerNorm(epsilon=config.norm_eps, dtype=config.compute_dtype, name=name)


def dense(config: ModelConfig, features: int, name: str, use_bias: bool | None = None) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=config.use_bias if use_bias is None else use_bias,
        dtype=config.compute_dtype,
        kernel_init=nn.initializers.normal(config.init_std),
        name=name,
    )


class FeedForward(nn.Module):
    """FFN(x) = act(x W1 + b1) W2 + b2 (or gated: (act(x W1) * x W3) W2)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, T, D] -> [B, T, D]
        cfg = self.config
        h = ACTIVATIONS[cfg.activation](dense(cfg, cfg.d_ff, "wi")(x))  # [B, T, F]
        if cfg.gated_ffn:
            h = h * dense(cfg, cfg.d_ff, "wi_gate")(x)  # [B, T, F]
        return dense(cfg, cfg.d_model, "wo")(h)  # [B, T, D]


LayerCache = dict[str, KVCache]  # {"self": KVCache, "cross": KVCache (decoders of seq2seq)}


class TransformerLayer(nn.Module):
    """One block. `cross=True` adds cross-attention over an encoder's output."""

    config: ModelConfig
    cross: bool = False

    def setup(self) -> None:
        cfg = self.config
        self.self_attn = MultiHeadAttention(cfg)
        self.self_attn_norm = make_norm(cfg, "self_attn_norm")
        if self.cross:
            self.cross_attn = MultiHeadAttention(cfg)
            self.cross_attn_norm = make_norm(cfg, "cross_attn_norm")
        self.ffn = FeedForward(cfg)
        self.ffn_norm = make_norm(cfg, "ffn_norm")
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def _sublayer(self, x, norm, fn, deterministic):
        """post-LN: norm(x + drop(f(x))); pre-LN: x + drop(f(norm(x))). f returns (y, aux)."""
        pre = self.config.norm_placement == "pre"
        y, aux = fn(norm(x) if pre else x)
        x = x + self.dropout(y, deterministic=deterministic)
        return (x if pre else norm(x)), aux

    def __call__(
        self,
        x: jax.Array,  # [B, T, D]
        mask: jax.Array | None,  # [B, 1, T, T or cache S]
        *,
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
                h, mask, cache=self_cache, cache_index=cache_index, deterministic=deterministic
            )

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
