"""BERT (HF BertForPreTraining): a post-LN encoder with learned positions, token types,
an embedding norm, a pooler and the pretraining heads.

| preset      | params      | reference                                           |
|-------------|-------------|-----------------------------------------------------|
| bert-base   | 110,106,428 | HF BertForPreTraining; backbone+pooler 109,482,240  |
| bert-large  | 336,226,108 | backbone+pooler 335,141,888                         |
| bert-tiny   | (tests)     | 2 layers of width 64                                |

The presets include the pretraining heads: the MLM head (dense + GELU + LayerNorm, decoder
tied to the token table, with a vocab bias) and the 2-way NSP classifier on the pooled
output; `models.init_params(cfg, rng, heads=False)` builds the backbone (HF BertModel).
"""

from __future__ import annotations

from transformer_jax.config import (
    AttentionConfig,
    EmbeddingConfig,
    FeedForwardConfig,
    HeadsConfig,
    LearnedPositions,
    ModelConfig,
    NormConfig,
    OutputConfig,
)
from transformer_jax.families.tiny import TINY


def bert(d_model: int, num_layers: int, num_heads: int) -> ModelConfig:
    return ModelConfig(
        arch="encoder",
        vocab_size=30522,
        d_model=d_model,
        num_layers=num_layers,
        max_len=512,
        attention=AttentionConfig(num_heads=num_heads, dropout_rate=0.1),
        ffn=FeedForwardConfig(d_ff=4 * d_model, activation="gelu"),
        positions=LearnedPositions(),
        embed=EmbeddingConfig(type_vocab_size=2, norm=True),
        norm=NormConfig(residual="post", eps=1e-12),
        output=OutputConfig(tie=True, bias=True),
        heads=HeadsConfig(pooler=True, mlm_transform=True, num_labels=2),
        dropout_rate=0.1,
        pad_id=0,
    )


PRESETS: dict[str, ModelConfig] = {
    "bert-base": bert(768, 12, 12),
    "bert-large": bert(1024, 24, 16),
    "bert-tiny": bert(64, 2, 4).override(TINY),
}
