"""Input embeddings: position scheme, token types, norm, dropout, factorised projection.

Token embeddings themselves are an `nn.Embed` owned by the model (one table can be shared by
an encoder, a decoder and the output projection); this module adds everything else, and
computes the stack's position encoding once (`PositionScheme`, whose rotary tables and score
bias the stack hands to every layer).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from transformer_jax.config import ModelConfig
from transformer_jax.nn import initializers
from transformer_jax.nn.blocks import make_norm
from transformer_jax.nn.partitioning import logical
from transformer_jax.nn.positions import PositionEncoding, PositionScheme, sinusoidal_table

__all__ = ["InputEmbedding", "sinusoidal_table", "token_embed"]


def token_embed(config: ModelConfig, name: str = "token_embed") -> nn.Embed:
    """The token table [V, E] (float32 params, compute-dtype lookups)."""
    return nn.Embed(
        num_embeddings=config.vocab_size,
        features=config.embed_size,
        dtype=config.compute_dtype,
        embedding_init=logical(initializers.normal(config.init_std), ("vocab", "embed")),
        name=name,
    )


class InputEmbedding(nn.Module):
    """x = tok * (sqrt(D) if embed.scale) + positions + types; then norm, dropout and (for
    factorised embeddings, E != D) a projection E -> D. Returns (x, the position encoding)."""

    config: ModelConfig
    causal: bool = False  # the stack's self-attention is causal (relative position buckets)

    @nn.compact
    def __call__(
        self,
        tok: jax.Array,  # [B, T, E] token embeddings
        positions: jax.Array,  # [B, T] int
        token_types: jax.Array | None = None,  # [B, T] int
        deterministic: bool = True,
        key_positions: jax.Array | None = None,  # [B or 1, S] int; None = positions
    ) -> tuple[jax.Array, PositionEncoding]:
        cfg = self.config
        emb = cfg.embed
        x = tok
        if emb.scale:
            x = x * jnp.sqrt(jnp.asarray(cfg.d_model, x.dtype))
        encoding = PositionScheme(
            cfg.positions,
            features=cfg.embed_size,
            max_len=cfg.max_len,
            head_dim=cfg.head_dim,
            dtype=cfg.compute_dtype,
            init_std=cfg.init_std,
            num_heads=cfg.num_heads,
            causal=self.causal,
            name="pos_embed",
        )(positions, key_positions)
        if encoding.embedding is not None:
            x = x + encoding.embedding  # [B, T, E]
        if emb.type_vocab_size:
            if token_types is None:
                token_types = jnp.zeros(positions.shape, jnp.int32)
            type_embed = nn.Embed(
                emb.type_vocab_size,
                cfg.embed_size,
                dtype=cfg.compute_dtype,
                embedding_init=initializers.normal(cfg.init_std),
                name="type_embed",
            )
            x = x + type_embed(token_types)  # [B, T, E]
        elif token_types is not None:
            raise ValueError(
                "token_types were given but ModelConfig.embed.type_vocab_size=0; "
                "set embed.type_vocab_size (BERT uses 2) or drop token_types."
            )
        if emb.norm:
            x = make_norm(cfg.norm, cfg.compute_dtype, "embed_norm")(x)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        if cfg.embed_size != cfg.d_model:
            x = nn.Dense(
                cfg.d_model,
                dtype=cfg.compute_dtype,
                kernel_init=initializers.normal(cfg.init_std),
                name="embed_proj",
            )(x)  # [B, T, E] -> [B, T, D]
        return x, encoding
