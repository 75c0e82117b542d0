"""Building blocks: attention (masks, KV cache), embeddings, positions, feed-forward, layers.

Usable on their own inside any Flax module (README "Use it from your own JAX code").
Axis names: B batch, T query length, S key length, N query heads, K key/value heads, H head
dim, D model width, F feed-forward width, V vocabulary.

Mask convention, everywhere: a boolean array broadcastable to [B, 1, T, S], True where query
t may attend key s (`padding_mask(valid [B, S])`, `causal_mask(T)`, `segment_mask`,
`window_mask`, `cache_mask`; AND them with `combine_masks`). None means attend everywhere.
"""

from transformer_jax.nn.attention import (
    KVCache,
    MultiHeadAttention,
    attend,
    cache_mask,
    causal_mask,
    combine_masks,
    dot_product_attention,
    padding_mask,
    segment_mask,
    window_mask,
)
from transformer_jax.nn.blocks import FeedForward, TransformerLayer, init_layer_caches, make_norm
from transformer_jax.nn.embeddings import InputEmbedding, token_embed
from transformer_jax.nn.positions import (
    PositionEncoding,
    PositionScheme,
    relative_buckets,
    rotary_angles,
    sinusoidal_table,
)

__all__ = [
    "FeedForward",
    "InputEmbedding",
    "KVCache",
    "MultiHeadAttention",
    "PositionEncoding",
    "PositionScheme",
    "TransformerLayer",
    "attend",
    "cache_mask",
    "causal_mask",
    "combine_masks",
    "dot_product_attention",
    "init_layer_caches",
    "make_norm",
    "padding_mask",
    "relative_buckets",
    "rotary_angles",
    "segment_mask",
    "sinusoidal_table",
    "token_embed",
    "window_mask",
]
