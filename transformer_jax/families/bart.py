"""BART (HF BartForConditionalGeneration): a post-LN encoder-decoder with learned positions
(2 table rows reserved before position 0), embedding norms and a tied output.

| preset      | params      | reference                               |
|-------------|-------------|-----------------------------------------|
| bart-base   | 139,420,416 | HF BartForConditionalGeneration (tied)  |
| bart-large  | 406,291,456 |                                         |
| bart-tiny   | (tests)     | 2 + 2 layers of width 64, offset 0      |
"""

from __future__ import annotations

from transformer_jax.config import (
    AttentionConfig,
    EmbeddingConfig,
    FeedForwardConfig,
    LearnedPositions,
    ModelConfig,
    NormConfig,
    OutputConfig,
)
from transformer_jax.families.tiny import TINY


def bart(d_model: int, num_layers: int, num_heads: int) -> ModelConfig:
    return ModelConfig(
        arch="encoder_decoder",
        vocab_size=50265,
        d_model=d_model,
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        max_len=1024,
        attention=AttentionConfig(num_heads=num_heads, dropout_rate=0.0),
        ffn=FeedForwardConfig(d_ff=4 * d_model, activation="gelu"),
        positions=LearnedPositions(offset=2),
        embed=EmbeddingConfig(norm=True),
        norm=NormConfig(residual="post"),
        output=OutputConfig(tie=True),
        dropout_rate=0.1,
        pad_id=1,  # BART's <pad>
    )


PRESETS: dict[str, ModelConfig] = {
    "bart-base": bart(768, 6, 12),
    "bart-large": bart(1024, 12, 16),
    "bart-tiny": bart(64, 2, 4).override({**TINY, "pad_id": 0, "positions.offset": 0}),
}
