"""GPT-2 (HF GPT2LMHeadModel): a pre-LN decoder with learned positions and a tied output.

| preset       | params        | reference                      |
|--------------|---------------|--------------------------------|
| gpt2-small   | 124,439,808   | HF GPT2LMHeadModel (tied)      |
| gpt2-medium  | 354,823,168   |                                |
| gpt2-large   | 774,030,080   |                                |
| gpt2-xl      | 1,557,611,200 |                                |
| gpt-tiny     | (tests/demos) | 2 layers of width 64, pad id 0 |
"""

from __future__ import annotations

from transformer_jax.config import (
    AttentionConfig,
    FeedForwardConfig,
    LearnedPositions,
    ModelConfig,
    NormConfig,
    OutputConfig,
)
from transformer_jax.families.tiny import TINY


def gpt2(d_model: int, num_layers: int, num_heads: int) -> ModelConfig:
    return ModelConfig(
        arch="decoder",
        vocab_size=50257,
        d_model=d_model,
        num_layers=num_layers,
        max_len=1024,
        attention=AttentionConfig(num_heads=num_heads, dropout_rate=0.1),
        ffn=FeedForwardConfig(d_ff=4 * d_model, activation="gelu_tanh"),
        positions=LearnedPositions(),
        norm=NormConfig(residual="pre", final=True),
        output=OutputConfig(tie=True),
        dropout_rate=0.1,
        pad_id=None,  # GPT-2's vocabulary has no pad token
    )


PRESETS: dict[str, ModelConfig] = {
    "gpt2-small": gpt2(768, 12, 12),
    "gpt2-medium": gpt2(1024, 24, 16),
    "gpt2-large": gpt2(1280, 36, 20),
    "gpt2-xl": gpt2(1600, 48, 25),
    "gpt-tiny": gpt2(64, 2, 4).override({**TINY, "pad_id": 0}),
}
