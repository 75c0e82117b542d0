"""Marian (HF MarianMTModel, the OPUS-MT translation models): a post-LN encoder-decoder with
the fixed sinusoidal table in its [sin half | cos half] layout (not stored in the file),
embeddings scaled by sqrt(d_model), no embedding norm, SiLU ("swish") feed-forward, the output
tied to the token table plus `final_logits_bias`. The decoder starts with the pad id itself:
pass the targets' validity (`tgt_valid`) to a teacher-forced call, `bos_id=pad_id` to
generate.

| preset       | params      | reference                                                 |
|--------------|-------------|-----------------------------------------------------------|
| marian-en-de | 73,886,208  | HF MarianMTModel (Helsinki-NLP/opus-mt-en-de shape)       |
| marian-tiny  | (tests)     | 2 + 2 layers of width 64, the same wiring                 |

HF's count for opus-mt-en-de, 74,410,496, also holds its two fixed sinusoidal tables
(2 x 512 x 512 = 524,288 entries it stores as frozen parameters; here they are computed):
73,886,208 + 524,288 = 74,410,496. Every preset is the whole seq2seq model with its tied
output projection; `final_logits_bias` (a buffer HF does not count) is our `logits_bias`
once a checkpoint is loaded, and a zero one is written for a preset without it.
Only shared source/target vocabularies (`share_encoder_decoder_embeddings`, the published
OPUS-MT models) are supported.
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
from transformer_jax.families import bart as _bart
from transformer_jax.families.tiny import TINY


def marian(
    d_model: int, num_layers: int, num_heads: int, d_ff: int, vocab_size: int = 58101
) -> ModelConfig:
    return ModelConfig(
        arch="encoder_decoder",
        vocab_size=vocab_size,
        d_model=d_model,
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        max_len=512,
        attention=AttentionConfig(num_heads=num_heads, dropout_rate=0.0),
        ffn=FeedForwardConfig(d_ff=d_ff, activation="silu"),
        positions=SinusoidalPositions(layout="halves"),
        embed=EmbeddingConfig(scale=True),
        norm=NormConfig(residual="post"),
        output=OutputConfig(tie=True),
        dropout_rate=0.1,
        pad_id=vocab_size - 1,  # Marian's <pad> is the last id, and the decoder start
    )


PRESETS: dict[str, ModelConfig] = {
    "marian-en-de": marian(512, 6, 8, 2048),
    "marian-tiny": marian(64, 2, 4, 128, vocab_size=512).override(TINY),
}


# ------------------------------------------------------------------- Hugging Face checkpoints
HF_MODEL_TYPE = "marian"
HF_PREFIX = "model."
HF_ARCHITECTURES = {"MarianMTModel": True, "MarianModel": False}
# The sinusoidal tables: computed, never read (HF does not save them either).
HF_IGNORED_TENSORS = (r"^(model\.)?(encoder|decoder)\.embed_positions\.weight$",)
hf_canonical = _bart.hf_canonical

_DEFAULTS = {
    "vocab_size": 58101, "d_model": 1024, "encoder_layers": 12, "encoder_attention_heads": 16,
    "encoder_ffn_dim": 4096, "max_position_embeddings": 1024, "pad_token_id": 58100,
}  # fmt: skip


def from_hf_config(hf: dict) -> ModelConfig:
    """A Marian config.json -> ModelConfig. HF's Marian class ignores the fairseq-era wiring
    fields (normalize_before, static_position_embeddings, ...) that old OPUS-MT files carry,
    so they are ignored here too; a separate target vocabulary is refused by name."""
    vocab = hf.get("vocab_size", _DEFAULTS["vocab_size"])
    decoder_vocab = hf.get("decoder_vocab_size")
    if decoder_vocab not in (None, vocab):
        raise ValueError(
            f"marian config.json: decoder_vocab_size={decoder_vocab} differs from vocab_size="
            f"{vocab}; transformer_jax supports only a vocabulary shared by both stacks."
        )
    common = _bart.read_common(
        hf,
        HF_MODEL_TYPE,
        understood={"decoder_vocab_size"},
        required={
            "share_encoder_decoder_embeddings": (True,),
            "tie_word_embeddings": (True,),
            "is_decoder": (False,),
        },
        ignored=_bart._LEGACY_FIELDS,
        defaults=_DEFAULTS,
    )
    return ModelConfig(
        **common,
        positions=SinusoidalPositions(layout="halves"),
        embed=EmbeddingConfig(scale=bool(hf.get("scale_embedding", False))),
        norm=NormConfig(residual="post"),
        output=OutputConfig(tie=True, bias=True),
    )


def to_hf_config(config: ModelConfig, heads: bool = True) -> dict:
    """ModelConfig -> Marian config.json: </s> is 0, the decoder starts with the pad id, and
    generation never produces the pad (`bad_words_ids`, as the opus-mt files have it)."""
    return {
        **_bart.write_common(config, HF_MODEL_TYPE, "MarianMTModel" if heads else "MarianModel"),
        "decoder_vocab_size": config.vocab_size,
        "share_encoder_decoder_embeddings": True,
        "eos_token_id": 0,
        "forced_eos_token_id": 0,
        "decoder_start_token_id": config.pad_id,
        "bad_words_ids": [[config.pad_id]],
    }


def hf_name_table(config: ModelConfig, heads: bool) -> list:
    return _bart.hf_name_table(config, heads, learned_positions=False, embed_norm=False)
