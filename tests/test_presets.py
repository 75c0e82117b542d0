"""Presets: exact published parameter counts (through jax.eval_shape, nothing allocated),
parameter shapes by path, closed-form counts for non-preset sizes, and the preset registry."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest

from transformer_jax import models, presets
from transformer_jax.config import (
    AttentionConfig,
    EmbeddingConfig,
    FeedForwardConfig,
    LearnedPositions,
    ModelConfig,
    NormConfig,
    OutputConfig,
)


def _shapes(cfg: ModelConfig, heads: bool = True):
    return jax.eval_shape(lambda r: models.init_params(cfg, r, heads=heads), jax.random.key(0))


@functools.cache
def preset_shapes(name: str, heads: bool = True):
    return _shapes(presets.get(name), heads)


def backbone(cfg: ModelConfig) -> int:
    """Parameters of the backbone that `features` uses (init_params(heads=False))."""
    return models.count_params(_shapes(cfg, heads=False))


@pytest.mark.parametrize(
    "name, count",
    [
        ("gpt2-small", 124_439_808),
        ("gpt2-medium", 354_823_168),
        ("gpt2-large", 774_030_080),
        ("gpt2-xl", 1_557_611_200),
        ("bert-base", 110_106_428),
        ("bart-base", 139_420_416),
        ("bart-large", 406_291_456),
        ("llama-2-7b", 6_738_415_616),
        ("mistral-7b", 7_241_732_096),
        ("falcon-7b", 6_921_720_704),
        ("codegen-350m-mono", 356_712_448),
        ("starcoderbase-1b", 1_137_207_296),
        ("t5-small", 60_506_624),
        ("t5-base", 222_903_552),
        ("flan-t5-base", 247_577_856),
        ("mt5-small", 300_176_768),
        ("roberta-base", 125_288_025),  # + pooler and MLM head, as the released file
        ("distilbert-base", 66_985_530),  # DistilBertForMaskedLM
        ("albert-base-v2", 11_813_810),  # AlbertForPreTraining
    ],
)
def test_published_parameter_counts(name, count):
    assert models.count_params(preset_shapes(name)) == count


# Presets added after the suite's time budget got tight: tracing costs ~0.08 s per layer
# (gpt3-175b alone: 7 s), so their counts come from the same config at depths 1 and 2. Every
# layer of these presets has the same parameter shapes (checked), so the count is affine in
# the depth: count(L) = count(1) + (L - 1) * (count(2) - count(1)), exactly.
DEEP = {
    "gpt1": 116_534_784,
    "gpt-neo-125m": 125_198_592,
    "gpt3-small": 125_226_240,
    "gpt-neo-1.3b": 1_315_575_808,
    "gpt-neo-2.7b": 2_651_307_520,
    "gpt3-medium": 355_871_744,
    "gpt3-large": 760_300_032,
    "gpt3-2.7b": 2_651_553_280,
    "gpt3-6.7b": 6_658_404_352,
    "gpt3-175b": 174_604_259_328,
}


@pytest.mark.parametrize("name", sorted(DEEP))
def test_deep_preset_counts_by_depth(name):
    cfg = presets.get(name)
    pattern = cfg.attention.pattern
    counts, layers = [], []
    for depth in (1, 2):  # a per-layer pattern keeps its last layers (a local one)
        kinds = pattern if len(pattern) == 1 else pattern[-depth:]
        shallow = cfg.replace(num_layers=depth, attention={"pattern": kinds})
        shapes = _shapes(shallow)
        counts.append(models.count_params(shapes))
        layers.append(shapes["decoder"])
    same = jax.tree.map(lambda a, b: a.shape == b.shape, layers[1]["layer_0"], layers[1]["layer_1"])
    assert jax.tree.all(same)  # every layer alike: the count is affine in the depth
    assert layers[1]["embed"]["pos_embed"]["embedding"].shape == (cfg.max_len, cfg.d_model)
    assert counts[0] + (cfg.num_layers - 1) * (counts[1] - counts[0]) == DEEP[name]


@pytest.mark.parametrize("name, count", [("bert-base", 109_482_240), ("bert-large", 335_141_888)])
def test_bert_backbone_counts(name, count):
    # HF BertModel (embeddings + encoder + pooler), without the pretraining heads.
    params = preset_shapes(name)
    assert {"mlm_transform", "mlm_norm", "logits_bias", "classifier", "pooler"} <= set(params)
    backbone_params = preset_shapes(name, heads=False)
    assert set(params) - set(backbone_params) == {
        "mlm_transform", "mlm_norm", "logits_bias", "classifier"
    }  # fmt: skip
    assert "pooler" in backbone_params  # HF BertModel has the pooler
    assert models.count_params(backbone_params) == count


@pytest.mark.parametrize(
    "name, count",
    [("roberta-base", 124_645_632), ("distilbert-base", 66_362_880),
     ("albert-base-v2", 11_683_584)],
)  # fmt: skip
def test_encoder_backbone_counts(name, count):
    # HF RobertaModel (with pooler), DistilBertModel, AlbertModel (with pooler).
    assert models.count_params(preset_shapes(name, heads=False)) == count


@pytest.mark.parametrize("name, paper", [("transformer-base", 65e6), ("transformer-big", 213e6)])
def test_paper_transformer_within_five_percent(name, paper):
    count = models.count_params(preset_shapes(name))
    assert abs(count - paper) / paper < 0.05


def _get(tree, path):
    for key in path.split("/"):
        tree = tree[key]
    return tree


@pytest.mark.parametrize(
    "name, path, shape",
    [
        ("gpt2-small", "token_embed/embedding", (50257, 768)),
        ("gpt2-small", "decoder/embed/pos_embed/embedding", (1024, 768)),
        ("gpt2-small", "decoder/layer_11/self_attn/query/kernel", (768, 12, 64)),
        ("gpt2-small", "decoder/layer_11/self_attn/out/kernel", (12, 64, 768)),
        ("gpt2-small", "decoder/layer_0/ffn/wi/kernel", (768, 3072)),
        ("gpt2-small", "decoder/final_norm/scale", (768,)),
        ("gpt2-xl", "decoder/layer_47/self_attn/key/kernel", (1600, 25, 64)),
        ("bart-base", "encoder/embed/pos_embed/embedding", (1026, 768)),
        ("bart-base", "decoder/embed/pos_embed/embedding", (1026, 768)),
        ("bart-base", "decoder/layer_5/cross_attn/value/bias", (12, 64)),
        ("bert-base", "encoder/embed/type_embed/embedding", (2, 768)),
        ("bert-base", "encoder/embed/pos_embed/embedding", (512, 768)),
        ("bert-base", "classifier/kernel", (768, 2)),
        ("bert-base", "logits_bias", (30522,)),
        ("transformer-big", "decoder/layer_5/ffn/wo/kernel", (4096, 1024)),
        ("roberta-base", "encoder/embed/pos_embed/embedding", (514, 768)),  # 2 before pos 0
        ("roberta-base", "encoder/embed/type_embed/embedding", (1, 768)),
        ("albert-base-v2", "token_embed/embedding", (30000, 128)),  # E = 128
        ("albert-base-v2", "encoder/embed/embed_proj/kernel", (128, 768)),
        ("albert-base-v2", "mlm_transform/kernel", (768, 128)),
    ],
)
def test_parameter_shapes_by_path(name, path, shape):
    leaf = _get(preset_shapes(name), path)
    assert leaf.shape == shape and leaf.dtype == jnp.float32


def test_structural_switches_show_in_the_tree():
    gpt, bart, paper = (preset_shapes(n) for n in ("gpt2-small", "bart-base", "transformer-base"))
    assert "layer_12" not in gpt["decoder"] and "lm_head" not in gpt  # 12 layers, tied output
    assert "final_norm" not in bart["encoder"] and "embed_norm" in bart["encoder"]["embed"]
    assert "embed" not in paper["encoder"]  # sinusoidal, no embed norm: nothing to learn
    assert "cross_attn" in paper["decoder"]["layer_0"]
    assert "cross_attn" not in paper["encoder"]["layer_0"]


# Counted by depth in test_xlnet.py (the two-stream stack has no decoder/embed tree).
DEEP_ELSEWHERE = {"xlnet-base-cased", "xlnet-large-cased"}


@pytest.mark.parametrize(
    "name", [n for n in presets.names() if n not in DEEP and n not in DEEP_ELSEWHERE]
)
def test_every_preset_builds(name):
    params = preset_shapes(name)
    leaves = jax.tree.leaves(params)
    assert leaves and all(leaf.dtype == jnp.float32 for leaf in leaves)
    cfg = presets.get(name)
    assert params["token_embed"]["embedding"].shape == (cfg.vocab_size, cfg.embed_size)


def test_registry():
    names = presets.names()
    assert names == sorted(names)
    expected = {"gpt2-small", "bert-base", "bart-base", "transformer-base", "transformer-big"}
    assert expected | {"gpt-tiny", "bert-tiny", "bart-tiny", "transformer-tiny"} <= set(names)
    assert presets.get("gpt2-small") is presets.PRESETS["gpt2-small"]
    cfg = presets.get("gpt2-small", num_layers=2, dtype="bfloat16")
    assert cfg.num_layers == 2 and cfg.dtype == "bfloat16" and cfg.d_model == 768
    with pytest.raises(ValueError, match="d_model=770"):
        presets.get("gpt2-small", d_model=770)


def test_unknown_preset_names_it():
    with pytest.raises(ValueError, match="'gpt5-huge'") as err:
        presets.get("gpt5-huge")
    assert "gpt2-small" in str(err.value)  # and lists what is available


# ----------------------------------------------------------------- closed-form counts
@pytest.mark.parametrize("V, P, d, N, L", [(101, 40, 48, 4, 3), (257, 33, 40, 5, 5)])
def test_gpt2_closed_form(V, P, d, N, L):
    cfg = presets.get(  # dotted overrides
        "gpt2-small", vocab_size=V, max_len=P, d_model=d, num_layers=L,
        **{"attention.num_heads": N, "ffn.d_ff": 4 * d},
    )  # fmt: skip
    # tokens + positions + L * (attention 4d^2+4d, MLP 8d^2+5d, two LayerNorms 4d) + final LN.
    assert models.count_params(_shapes(cfg)) == V * d + P * d + L * (12 * d * d + 13 * d) + 2 * d


def test_bert_closed_form():
    V, P, d, F, L, types, labels = 97, 21, 32, 56, 3, 2, 3
    cfg = presets.get(  # the flat names of version 1
        "bert-base", vocab_size=V, max_len=P, d_model=d, num_heads=4, d_ff=F, num_layers=L,
        num_labels=labels,
    )  # fmt: skip
    embeddings = V * d + P * d + types * d + 2 * d
    per_layer = (4 * d * d + 4 * d) + (2 * d * F + F + d) + 4 * d
    pooler = d * d + d
    heads = (d * d + d) + 2 * d + V + (d * labels + labels)  # MLM transform, norm, bias; NSP
    params = _shapes(cfg)
    assert models.count_params(params) == embeddings + L * per_layer + pooler + heads
    assert backbone(cfg) == embeddings + L * per_layer + pooler


def test_bart_closed_form():
    V, P, d, L_enc, L_dec = 89, 19, 32, 2, 3
    cfg = presets.get("bart-base").replace(
        vocab_size=V, max_len=P, d_model=d, num_layers=L_enc, num_decoder_layers=L_dec,
        attention={"num_heads": 8}, ffn={"d_ff": 4 * d},
    )  # fmt: skip
    attn, ffn = 4 * d * d + 4 * d, 8 * d * d + 5 * d
    embed = (P + 2) * d + 2 * d  # positions with BART's offset of 2, embedding LayerNorm
    encoder = embed + L_enc * (attn + ffn + 4 * d)
    decoder = embed + L_dec * (2 * attn + ffn + 6 * d)
    assert models.count_params(_shapes(cfg)) == V * d + encoder + decoder


@pytest.mark.parametrize("gated", [False, True])
def test_gqa_rmsnorm_untied_closed_form(gated):
    V, P, d, N, K, F, L = 71, 13, 30, 6, 2, 44, 2
    H = d // N
    cfg = ModelConfig(
        arch="decoder", vocab_size=V, d_model=d, num_layers=L, max_len=P,
        attention=AttentionConfig(num_heads=N, num_kv_heads=K, qkv_bias=False, out_bias=False),
        ffn=FeedForwardConfig(d_ff=F, gated=gated, bias=False),
        norm=NormConfig(kind="rmsnorm", residual="pre", final=True),
        output=OutputConfig(tie=False, bias=True),
    )  # fmt: skip
    attn = d * N * H + 2 * d * K * H + N * H * d  # no biases
    ffn = (3 if gated else 2) * d * F
    per_layer = attn + ffn + 2 * d  # two RMSNorms: scale only
    want = V * d + P * d + L * per_layer + d + (d * V + V)  # + final norm + lm_head with bias
    params = _shapes(cfg)
    assert models.count_params(params) == want
    assert params["decoder"]["layer_1"]["self_attn"]["value"]["kernel"].shape == (d, K, H)
    assert backbone(cfg) == want - (d * V + V)  # the untied lm_head is the only head
    ffn = params["decoder"]["layer_0"]["ffn"]
    assert set(ffn) == ({"wi_gate", "wi", "wo"} if gated else {"wi", "wo"})


# ------------------------------------------------------------------ the grouped config
def test_closed_form_of_the_new_seams():
    # Factorised embeddings E, 3 layers sharing 1 parameter set, explicit head size H != d/N,
    # rotary positions (no table), parallel residual with one norm: each changes the count
    # by its formula.
    V, P, d, E, N, H, F, L = 53, 17, 20, 6, 3, 5, 24, 3
    cfg = ModelConfig(
        arch="decoder", vocab_size=V, d_model=d, num_layers=L, max_len=P, layer_groups=1,
        attention=AttentionConfig(num_heads=N, head_dim=H),
        ffn=FeedForwardConfig(d_ff=F),
        positions=LearnedPositions(),
        norm=NormConfig(residual="parallel", parallel_norms=1, final=True),
        embed=EmbeddingConfig(size=E),
        output=OutputConfig(tie=False),
    )  # fmt: skip
    attn = 3 * (d * N * H + N * H) + N * H * d + d
    ffn = d * F + F + F * d + d
    layer = attn + ffn + 2 * d  # one LayerNorm serves both branches
    embed = V * E + P * E + (E * d + d)  # tables of width E, projection E -> d
    want = embed + layer + 2 * d + d * V  # one shared layer, final norm, untied lm_head
    assert models.count_params(_shapes(cfg)) == want
    rotary = cfg.replace(positions={"kind": "rotary", "rotary_dim": 4})
    assert models.count_params(_shapes(rotary)) == want - P * E
    assert models.count_params(_shapes(cfg.replace(layer_groups=None))) == want + 2 * layer
