"""RoBERTa (HF RobertaForMaskedLM / RobertaModel): BERT's post-LN encoder with positions
counted over real tokens only and offset by pad_id + 1 (`LearnedPositions(skip_padding=True,
offset=pad_id + 1)`, HF's create_position_ids_from_input_ids), one token type, LayerNorm eps
1e-5 and pad id 1.

| preset        | params      | reference                                                  |
|---------------|-------------|------------------------------------------------------------|
| roberta-base  | 125,288,025 | the released roberta-base file; backbone+pooler 124,645,632 |
| roberta-tiny  | (tests)     | 2 layers of width 64                                       |

Heads: the presets hold what the released roberta-base file holds, RobertaModel (with its
pooler) plus RobertaForMaskedLM's head (dense + GELU + LayerNorm, decoder tied to the token
table, with a vocab bias); `models.init_params(cfg, rng, heads=False)` builds HF
RobertaModel (124,645,632 for roberta-base). No NSP classifier (RoBERTa drops NSP): train
with objective "mlm".
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
from transformer_jax.families import bert as _bert
from transformer_jax.families.tiny import TINY


def roberta(d_model: int, num_layers: int, num_heads: int) -> ModelConfig:
    pad_id = 1  # RoBERTa's <pad>
    return ModelConfig(
        arch="encoder",
        vocab_size=50265,
        d_model=d_model,
        num_layers=num_layers,
        max_len=512,  # 514 table rows: 2 before position 0 (offset = pad_id + 1)
        attention=AttentionConfig(num_heads=num_heads, dropout_rate=0.1),
        ffn=FeedForwardConfig(d_ff=4 * d_model, activation="gelu"),
        positions=LearnedPositions(offset=pad_id + 1, skip_padding=True),
        embed=EmbeddingConfig(type_vocab_size=1, norm=True),
        norm=NormConfig(residual="post", eps=1e-5),
        output=OutputConfig(tie=True, bias=True),
        heads=HeadsConfig(pooler=True, mlm_transform=True, num_labels=0),
        dropout_rate=0.1,
        pad_id=pad_id,
    )


PRESETS: dict[str, ModelConfig] = {
    "roberta-base": roberta(768, 12, 12),
    "roberta-tiny": roberta(64, 2, 4).override(TINY),
}


# ------------------------------------------------------------------- Hugging Face checkpoints
HF_MODEL_TYPE = "roberta"
HF_PREFIX = "roberta."  # the backbone's prefix in head classes
# class -> has its heads; RobertaModel is the backbone (init_params(heads=False)) with a pooler.
HF_ARCHITECTURES = {"RobertaForMaskedLM": True, "RobertaModel": False}
HF_IGNORED_TENSORS = (r"(^|\.)embeddings\.position_ids$",)  # an index buffer (old files)


def from_hf_config(hf: dict) -> ModelConfig:
    """A RoBERTa config.json -> ModelConfig. The position table has max_position_embeddings
    rows, pad_token_id + 1 of them before position 0. RobertaForMaskedLM has no pooler unless
    its file holds one (the released roberta-base does: `hf_from_tensors`); RobertaModel is the
    backbone with a pooler."""
    from transformer_jax.hf.strict import check_fields

    check_fields(
        hf,
        "roberta",
        understood={
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "max_position_embeddings", "type_vocab_size",
            "layer_norm_eps", "attention_probs_dropout_prob", "hidden_dropout_prob",
            "initializer_range", "pad_token_id",
        },
        required={
            "position_embedding_type": ("absolute",),
            "add_cross_attention": (False,),
            "is_decoder": (False,),
            "tie_word_embeddings": (True,),
            # RobertaLMHead applies erf GELU whatever hidden_act says; our MLM transform uses
            # the feed-forward's activation, so the two must agree.
            "hidden_act": ("gelu",),
        },
    )  # fmt: skip
    architecture = (hf.get("architectures") or ["RobertaForMaskedLM"])[0]
    pad_id = hf.get("pad_token_id", 1)
    if not isinstance(pad_id, int) or pad_id < 0:
        raise ValueError(
            f"roberta config.json: pad_token_id={pad_id!r}; RoBERTa's positions start at "
            "pad_token_id + 1, so it must be an integer >= 0 (roberta-base: 1)."
        )
    table = hf.get("max_position_embeddings", 514)
    if table <= pad_id + 1:
        raise ValueError(
            f"roberta config.json: max_position_embeddings={table} leaves no position after "
            f"the pad_token_id + 1 = {pad_id + 1} reserved rows (roberta-base: 514)."
        )
    d = hf.get("hidden_size", 768)
    return ModelConfig(
        arch="encoder",
        vocab_size=hf.get("vocab_size", 50265),
        d_model=d,
        num_layers=hf.get("num_hidden_layers", 12),
        max_len=table - pad_id - 1,
        attention=AttentionConfig(
            num_heads=hf.get("num_attention_heads", 12),
            dropout_rate=hf.get("attention_probs_dropout_prob", 0.1),
        ),
        ffn=FeedForwardConfig(d_ff=hf.get("intermediate_size", 3072), activation="gelu"),
        positions=LearnedPositions(offset=pad_id + 1, skip_padding=True),
        embed=EmbeddingConfig(type_vocab_size=hf.get("type_vocab_size", 2), norm=True),
        norm=NormConfig(residual="post", eps=hf.get("layer_norm_eps", 1e-12)),
        output=OutputConfig(tie=True, bias=True),
        heads=HeadsConfig(pooler=architecture == "RobertaModel", mlm_transform=True, num_labels=0),
        dropout_rate=hf.get("hidden_dropout_prob", 0.1),
        init_std=hf.get("initializer_range", 0.02),
        pad_id=pad_id,
    )


def hf_architecture(config: ModelConfig, heads: bool) -> str:
    if not heads:
        return "RobertaModel"
    if config.heads.num_labels or not config.heads.mlm_transform:
        raise ValueError(
            f"No HF RoBERTa class has the heads {config.heads}: RobertaForMaskedLM has the MLM "
            "transform (mlm_transform=True) and no classifier (num_labels=0)."
        )
    return "RobertaForMaskedLM"


def to_hf_config(config: ModelConfig, heads: bool = True) -> dict:
    """ModelConfig -> RoBERTa config.json (hf.save checks that it reads back as `config`)."""
    p = config.positions
    if not (isinstance(p, LearnedPositions) and p.skip_padding and p.offset == config.pad_id + 1):
        raise ValueError(
            f"RoBERTa's positions skip padding and start at pad_id + 1; positions={p} with "
            f"pad_id={config.pad_id} is another model."
        )
    return {
        "model_type": HF_MODEL_TYPE,
        "architectures": [hf_architecture(config, heads)],
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.ffn.d_ff,
        "hidden_act": config.ffn.activation,  # "gelu" reads back; anything else is refused
        "max_position_embeddings": config.max_len + p.offset,
        "type_vocab_size": config.embed.type_vocab_size,
        "layer_norm_eps": config.norm.eps,
        "attention_probs_dropout_prob": config.attention.dropout_rate,
        "hidden_dropout_prob": config.dropout_rate,
        "initializer_range": config.init_std,
        "pad_token_id": config.pad_id,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
    }


def hf_name_table(config: ModelConfig, heads: bool) -> list:
    """BERT's backbone rows (same tensor names under `roberta.`) and RobertaLMHead's."""
    from transformer_jax.hf.table import Row, linear_rows, norm_rows

    rows = _bert.hf_name_table(config, heads=False)
    if heads:
        rows += [
            *linear_rows("lm_head.dense", "mlm_transform"),
            *norm_rows("lm_head.layer_norm", "mlm_norm"),
            Row("lm_head.bias", "logits_bias"),
            Row("lm_head.decoder.weight", "token_embed/embedding", alias=True),
            Row("lm_head.decoder.bias", "logits_bias", alias=True),
        ]
    return rows


hf_canonical = _bert.hf_canonical  # backbone files describe the MLM head, no classifier


def hf_from_tensors(config: ModelConfig, names: set[str]) -> ModelConfig:
    """A pooler if the file holds one (the released roberta-base, a RobertaForMaskedLM)."""
    return config.replace(heads={"pooler": any(n.endswith("pooler.dense.weight") for n in names)})
