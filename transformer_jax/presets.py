"""Named model sizes. Parameter counts (tests/test_presets.py checks them exactly):

| preset             | params        | reference                                             |
|--------------------|---------------|-------------------------------------------------------|
| gpt2-small         | 124,439,808   | HF GPT2LMHeadModel (tied output)                      |
| gpt2-medium        | 354,823,168   |                                                       |
| gpt2-large         | 774,030,080   |                                                       |
| gpt2-xl            | 1,557,611,200 |                                                       |
| bert-base          | 110,106,428   | HF BertForPreTraining: backbone+pooler 109,482,240    |
| bert-large         | 336,226,108   | backbone+pooler 335,141,888                           |
| bart-base          | 139,420,416   | HF BartForConditionalGeneration (tied)                |
| bart-large         | 406,291,456   |                                                       |
| transformer-base   | 63,082,496    | paper Table 3: 65M (shared 37k vocab, tied)           |
| transformer-big    | 214,245,376   | paper Table 3: 213M                                   |

BERT presets include the pretraining heads: the MLM head (dense + GELU + LayerNorm, decoder
tied to the token table, with a vocab bias) and the 2-way NSP classifier on the pooled output.
`*-tiny` presets (one per architecture) are for tests and demos.
"""

from __future__ import annotations

from transformer_jax.config import ModelConfig


def _gpt2(d_model: int, num_layers: int, num_heads: int) -> ModelConfig:
    return ModelConfig(
        arch="decoder",
        vocab_size=50257,
        d_model=d_model,
        num_heads=num_heads,
        d_ff=4 * d_model,
        num_layers=num_layers,
        max_len=1024,
        position="learned",
        norm_placement="pre",
        final_norm=True,
        activation="gelu_tanh",
        dropout_rate=0.1,
        attention_dropout_rate=0.1,
        tie_embeddings=True,
        pad_id=None,  # GPT-2's vocabulary has no pad token
    )


def _bert(d_model: int, num_layers: int, num_heads: int) -> ModelConfig:
    return ModelConfig(
        arch="encoder",
        vocab_size=30522,
        d_model=d_model,
        num_heads=num_heads,
        d_ff=4 * d_model,
        num_layers=num_layers,
        max_len=512,
        position="learned",
        type_vocab_size=2,
        embed_norm=True,
        norm_placement="post",
        norm_eps=1e-12,
        activation="gelu",
        dropout_rate=0.1,
        attention_dropout_rate=0.1,
        tie_embeddings=True,
        output_bias=True,
        pooler=True,
        mlm_transform=True,
        num_labels=2,
        pad_id=0,
    )


def _bart(d_model: int, num_layers: int, num_heads: int) -> ModelConfig:
    return ModelConfig(
        arch="encoder_decoder",
        vocab_size=50265,
        d_model=d_model,
        num_heads=num_heads,
        d_ff=4 * d_model,
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        max_len=1024,
        position="learned",
        position_offset=2,
        embed_norm=True,
        norm_placement="post",
        activation="gelu",
        dropout_rate=0.1,
        attention_dropout_rate=0.0,
        tie_embeddings=True,
        pad_id=1,  # BART's <pad>
    )


def _transformer(d_model: int, d_ff: int, num_heads: int, dropout: float) -> ModelConfig:
    return ModelConfig(
        arch="encoder_decoder",
        vocab_size=37000,
        d_model=d_model,
        num_heads=num_heads,
        d_ff=d_ff,
        num_layers=6,
        num_decoder_layers=6,
        max_len=256,
        position="sinusoidal",
        embed_scale=True,
        norm_placement="post",
        activation="relu",
        dropout_rate=dropout,
        tie_embeddings=True,
        pad_id=0,
    )


_TINY = dict(vocab_size=512, d_model=64, num_heads=4, d_ff=128, num_layers=2, max_len=128)

PRESETS: dict[str, ModelConfig] = {
    "gpt2-small": _gpt2(768, 12, 12),
    "gpt2-medium": _gpt2(1024, 24, 16),
    "gpt2-large": _gpt2(1280, 36, 20),
    "gpt2-xl": _gpt2(1600, 48, 25),
    "bert-base": _bert(768, 12, 12),
    "bert-large": _bert(1024, 24, 16),
    "bart-base": _bart(768, 6, 12),
    "bart-large": _bart(1024, 12, 16),
    "transformer-base": _transformer(512, 2048, 8, 0.1),
    "transformer-big": _transformer(1024, 4096, 16, 0.3),
    "gpt-tiny": _gpt2(64, 2, 4).replace(**_TINY, pad_id=0),
    "bert-tiny": _bert(64, 2, 4).replace(**_TINY),
    "bart-tiny": _bart(64, 2, 4).replace(**_TINY, pad_id=0, position_offset=0),
    "transformer-tiny": _transformer(64, 128, 4, 0.1).replace(**_TINY, num_decoder_layers=2),
}


def names() -> list[str]:
    """All preset names, sorted."""
    return sorted(PRESETS)


def get(name: str, **overrides) -> ModelConfig:
    """The preset `name`, with optional field overrides (validated)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown model preset {name!r}; available: {', '.join(names())}.")
    config = PRESETS[name]
    return config.replace(**overrides) if overrides else config
