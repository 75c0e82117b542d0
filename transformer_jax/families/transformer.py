"""The paper's Transformer ("Attention Is All You Need"): a post-LN encoder-decoder with
sinusoidal positions, sqrt(d_model)-scaled embeddings, ReLU and a shared, tied vocabulary.
No HF class exists; its checkpoints are this library's own.

| preset            | params      | reference                              |
|-------------------|-------------|----------------------------------------|
| transformer-base  | 63,082,496  | paper Table 3: 65M (shared 37k vocab)  |
| transformer-big   | 214,245,376 | paper Table 3: 213M                    |
| transformer-tiny  | (tests)     | 2 + 2 layers of width 64               |
"""

from __future__ import annotations

from transformer_jax.config import (
    AttentionConfig,
    EmbeddingConfig,
    FeedForwardConfig,
    ModelConfig,
    NormConfig,
    OutputConfig,
    SinusoidalPositions,
)
from transformer_jax.families.tiny import TINY


def transformer(d_model: int, d_ff: int, num_heads: int, dropout: float) -> ModelConfig:
    return ModelConfig(
        arch="encoder_decoder",
        vocab_size=37000,
        d_model=d_model,
        num_layers=6,
        num_decoder_layers=6,
        max_len=256,
        attention=AttentionConfig(num_heads=num_heads),
        ffn=FeedForwardConfig(d_ff=d_ff, activation="relu"),
        positions=SinusoidalPositions(),
        embed=EmbeddingConfig(scale=True),
        norm=NormConfig(residual="post"),
        output=OutputConfig(tie=True),
        dropout_rate=dropout,
        pad_id=0,
    )


PRESETS: dict[str, ModelConfig] = {
    "transformer-base": transformer(512, 2048, 8, 0.1),
    "transformer-big": transformer(1024, 4096, 16, 0.3),
    "transformer-tiny": transformer(64, 128, 4, 0.1).override({**TINY, "num_decoder_layers": 2}),
}
