"""Input embeddings: positions (sinusoidal / learned), token types, norm and dropout.

Token embeddings themselves are an `nn.Embed` owned by the model (one table can be shared by
an encoder, a decoder and the output projection); this module adds everything else.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from transformer_jax.config import ModelConfig
from transformer_jax.nn.blocks import make_norm


def sinusoidal_table(length: int, d_model: int) -> np.ndarray:
    """The paper's table: PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...).

    Returns float32 [length, d_model] (interleaved sin/cos, exactly the formula).
    """
    pos = np.arange(length, dtype=np.float64)[:, None]  # [L, 1]
    two_i = np.arange(0, d_model, 2, dtype=np.float64)[None, :]  # [1, ceil(D/2)]
    angles = pos / np.power(10000.0, two_i / d_model)  # [L, ceil(D/2)]
    table = np.zeros((length, d_model), dtype=np.float64)
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles[:, : d_model // 2])
    return table.astype(np.float32)


def token_embed(config: ModelConfig, name: str = "token_embed") -> nn.Embed:
    """The token table [V, D] (float32 params, compute-dtype lookups)."""
    return nn.Embed(
        num_embeddings=config.vocab_size,
        features=config.d_model,
        dtype=config.compute_dtype,
        embedding_init=nn.initializers.normal(config.init_std),
        name=name,
    )


class InputEmbedding(nn.Module):
    """x = tok * (sqrt(D) if embed_scale) + pos + type; then optional norm; then dropout."""

    config: ModelConfig

    @nn.compact
    def __call__(
        self,
        tok: jax.Array,  # [B, T, D] token embeddings
        positions: jax.Array,  # [B, T] int
        token_types: jax.Array | None = None,  # [B, T] int
        deterministic: bool = True,
    ) -> jax.Array:
        cfg = self.config
        x = tok
        if cfg.embed_scale:
            x = x * jnp.sqrt(jnp.asarray(cfg.d_model, x.dtype))
        if cfg.position == "sinusoidal":
            table = jnp.asarray(sinusoidal_table(cfg.max_len, cfg.d_model))
            x = x + table[positions].astype(x.dtype)  # [B, T, D]
        elif cfg.position == "learned":
            pos_embed = nn.Embed(
                cfg.max_len + cfg.position_offset,
                cfg.d_model,
                dtype=cfg.compute_dtype,
                embedding_init=nn.initializers.normal(cfg.init_std),
                name="pos_embed",
            )
            x = x + pos_embed(positions + cfg.position_offset)  # [B, T, D]
        if cfg.type_vocab_size:
            if token_types is None:
                token_types = jnp.zeros(positions.shape, jnp.int32)
            type_embed = nn.Embed(
                cfg.type_vocab_size,
                cfg.d_model,
                dtype=cfg.compute_dtype,
                embedding_init=nn.initializers.normal(cfg.init_std),
                name="type_embed",
            )
            x = x + type_embed(token_types)  # [B, T, D]
        elif token_types is not None:
            raise ValueError(
                "token_types were given but ModelConfig.type_vocab_size=0; "
                "set type_vocab_size (BERT uses 2) or drop token_types."
            )
        if cfg.embed_norm:
            x = make_norm(cfg, "embed_norm")(x)
        return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
