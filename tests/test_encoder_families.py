"""The encoder families of issue 10 (RoBERTa, DistilBERT, ALBERT): MLM logits equal to the HF
classes' on the real positions of padded rows (fixtures from tests/hf_fixtures/encoders.py),
the loaded configs, save -> load bitwise (fixtures, presets, backbones), the published
config.json files read as the presets, and each `-tiny` preset overfitting one batch through
the train step with every parameter its objective uses learning.

ALBERT's shared layer: test_models.py's test_shared_layer_gradient_is_the_sum_of_per_use_
gradients (the ALBERT-like encoder, three uses of one layer, against the NumPy sum).
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import optax
import pytest
from test_hf import TOL, _apply, _random_params, fixture_dir

from transformer_jax import hf, models, presets
from transformer_jax.families import albert, distilbert, roberta
from transformer_jax.hf.tokenizer import HFTokenizer
from transformer_jax.text_tokenizer import frame_prompt
from transformer_jax.train import steps

NAMES = {  # fixture -> HF class
    "roberta": "RobertaForMaskedLM",
    "distilbert": "DistilBertForMaskedLM",
    "albert": "AlbertForMaskedLM",
    "albert_pretraining": "AlbertForPreTraining",  # + pooler and SOP head; 3 depths, 2 groups
}
TINY = ["roberta-tiny", "distilbert-tiny", "albert-tiny"]


@pytest.fixture(scope="module")
def loaded():
    """name -> (config, params, reference outputs), each fixture loaded once."""
    out = {}
    for name in NAMES:
        config, params = hf.load(fixture_dir(name))
        ref = dict(np.load(os.path.join(fixture_dir(name), "reference.npz")))
        out[name] = (config, params, ref)
    return out


def _inputs(ref):
    types = ref.get("token_type_ids")
    return (ref["input_ids"],) if types is None else (ref["input_ids"], types)


@pytest.mark.parametrize("name", NAMES)
def test_mlm_logits_match_hf(loaded, name):
    config, params, ref = loaded[name]
    logits, sop = _apply(params, *_inputs(ref), config=config, method="pretrain")
    logits = np.asarray(logits)
    assert logits.shape == ref["logits"].shape
    real = ref["attention_mask"].astype(bool)
    diff = np.abs(logits - ref["logits"])[real]  # real (non-pad) positions only
    assert diff.max() < TOL, f"{name}: max abs diff {diff.max():.3g}"
    assert (sop is None) == ("sop_logits" not in ref)
    if sop is not None:  # the sentence-order head on the pooled first token
        assert np.abs(np.asarray(sop) - ref["sop_logits"]).max() < TOL


def test_roberta_positions_count_real_tokens(loaded):
    """Row 1 of the fixture is padded in front: with positions 0, 1, 2, ... (no counting)
    its logits move, row 0 (padded at the end) keeps them."""
    config, params, ref = loaded["roberta"]
    ids = ref["input_ids"]
    plain = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
    logits = np.asarray(_apply(params, ids, config=config, method=None, positions=plain))
    diff = np.abs(logits - ref["logits"])
    real = ref["attention_mask"].astype(bool)
    assert diff[0][real[0]].max() < TOL and diff[1][real[1]].max() > 1e-2


def test_loaded_configs(loaded):
    rob, rob_params, _ = loaded["roberta"]
    assert (rob.positions.offset, rob.positions.skip_padding, rob.max_len, rob.pad_id) == (
        2, True, 37, 1
    )  # fmt: skip
    assert (rob.embed.type_vocab_size, rob.norm.eps, rob.heads.pooler) == (1, 1e-5, False)
    assert rob_params["encoder"]["embed"]["pos_embed"]["embedding"].shape == (39, 24)
    dis, dis_params, _ = loaded["distilbert"]
    assert (dis.embed.type_vocab_size, dis.heads.pooler, dis.ffn.activation, dis.norm.eps) == (
        0, False, "relu", 1e-12
    )  # fmt: skip
    assert "type_embed" not in dis_params["encoder"]["embed"]
    alb, alb_params, _ = loaded["albert"]
    assert (alb.embed_size, alb.d_model, alb.num_layers, alb.layer_groups) == (10, 24, 3, 1)
    assert (alb.ffn.activation, alb.heads.pooler, alb.heads.num_labels) == ("gelu_tanh", False, 0)
    assert [k for k in alb_params["encoder"] if k.startswith("layer_")] == ["layer_0"]
    assert alb_params["mlm_transform"]["kernel"].shape == (24, 10)  # D -> E
    pre, pre_params, _ = loaded["albert_pretraining"]
    assert (pre.layer_groups, pre.heads.pooler, pre.heads.num_labels) == (2, True, 2)
    assert [k for k in pre_params["encoder"] if k.startswith("layer_")] == ["layer_0", "layer_1"]


def _assert_same(params, params2):
    flat, flat2 = (dict(jax.tree_util.tree_leaves_with_path(p)) for p in (params, params2))
    assert flat.keys() == flat2.keys()
    for path, value in flat.items():
        assert np.array_equal(value, flat2[path]) and value.dtype == flat2[path].dtype, path


@pytest.mark.parametrize("name", NAMES)
def test_save_then_load_is_bitwise(loaded, tmp_path, name):
    config, params, _ = loaded[name]
    hf.save(config, params, str(tmp_path))
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["model_type"] == name.split("_")[0]
    assert written["architectures"] == [NAMES[name]]
    config2, params2 = hf.load(str(tmp_path))
    assert config2 == config
    _assert_same(params, params2)


@pytest.mark.parametrize(
    ("preset", "heads", "architecture"),
    [
        ("roberta-tiny", True, "RobertaForMaskedLM"),  # + the pooler, as released
        ("roberta-tiny", False, "RobertaModel"),
        ("distilbert-tiny", True, "DistilBertForMaskedLM"),
        ("distilbert-tiny", False, "DistilBertModel"),
        ("albert-tiny", True, "AlbertForPreTraining"),  # MLM + sentence-order head
        ("albert-tiny", False, "AlbertModel"),
    ],
)
def test_presets_save_as_their_hf_class(tmp_path, preset, heads, architecture):
    config = presets.get(preset)
    params = _random_params(config, heads=heads)
    hf.save(config, params, str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [architecture]
    config2, params2 = hf.load(str(tmp_path))
    if heads:
        assert config2 == config
    _assert_same(params, params2)


def test_roberta_tokenizer_matches_transformers():
    """The fixture's byte-level BPE tokenizer.json (RobertaTokenizerFast): <s> text </s>."""
    directory = fixture_dir("roberta")
    with open(os.path.join(directory, "tokenizer_reference.json")) as f:
        ref = json.load(f)
    tok = hf.load_tokenizer(directory)
    assert type(tok) is HFTokenizer
    assert [tok.encode(t) for t in ref["texts"]] == ref["ids"]
    assert [tok.decode(i) for i in ref["ids"]] == ref["decoded"]
    assert [frame_prompt(tok, i, "encoder") for i in ref["ids"]] == ref["framed"]
    assert {n: getattr(tok, f"{n}_id") for n in ref["special"]} == ref["special"]


# The config.json files published with the preset models (Hugging Face Hub).
PUBLISHED = {
    "roberta-base": (roberta, {  # FacebookAI/roberta-base
        "architectures": ["RobertaForMaskedLM"], "attention_probs_dropout_prob": 0.1,
        "bos_token_id": 0, "eos_token_id": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
        "layer_norm_eps": 1e-05, "max_position_embeddings": 514, "model_type": "roberta",
        "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1,
        "type_vocab_size": 1, "vocab_size": 50265,
    }),
    "distilbert-base": (distilbert, {  # distilbert/distilbert-base-uncased
        "activation": "gelu", "architectures": ["DistilBertForMaskedLM"],
        "attention_dropout": 0.1, "dim": 768, "dropout": 0.1, "hidden_dim": 3072,
        "initializer_range": 0.02, "max_position_embeddings": 512, "model_type": "distilbert",
        "n_heads": 12, "n_layers": 6, "pad_token_id": 0, "qa_dropout": 0.1,
        "seq_classif_dropout": 0.2, "sinusoidal_pos_embds": False, "tie_weights_": True,
        "transformers_version": "4.10.0.dev0", "vocab_size": 30522,
    }),
    "albert-base-v2": (albert, {  # albert/albert-base-v2
        "architectures": ["AlbertForMaskedLM"], "attention_probs_dropout_prob": 0,
        "bos_token_id": 2, "classifier_dropout_prob": 0.1, "down_scale_factor": 1,
        "embedding_size": 128, "eos_token_id": 3, "gap_size": 0, "hidden_act": "gelu_new",
        "hidden_dropout_prob": 0, "hidden_size": 768, "initializer_range": 0.02,
        "inner_group_num": 1, "intermediate_size": 3072, "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512, "model_type": "albert", "net_structure_type": 0,
        "num_attention_heads": 12, "num_hidden_groups": 1, "num_hidden_layers": 12,
        "num_memory_blocks": 0, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 30000,
    }),
}  # fmt: skip


@pytest.mark.parametrize("preset", sorted(PUBLISHED))
def test_published_configs_read_as_the_presets(preset):
    """The published config.json reads as the preset's network (the heads aside: a released
    masked-LM file may hold more, e.g. roberta-base's pooler), and the preset's config.json
    reads back as the preset."""
    family, published = PUBLISHED[preset]
    config = presets.get(preset)
    assert family.from_hf_config(published).replace(heads=config.heads) == config
    assert family.from_hf_config(family.to_hf_config(config)).replace(
        heads=config.heads
    ) == config  # fmt: skip


def _mlm_batch(config, seed=0):
    """Masked tokens (id 4) to predict, the last 3 of row 1 padding; token types as the MLM
    pipeline gives them (zeros; DistilBERT has no table, the step drops them), or
    sentence-pair types and order labels where the model has a classifier (ALBERT's SOP)."""
    rng = np.random.default_rng(seed)
    b, t = 4, 12
    tokens = rng.integers(5, config.vocab_size, size=(b, t)).astype(np.int32)
    chosen = rng.random((b, t)) < 0.3
    chosen[:, 0] = True
    inputs = np.where(chosen, 4, tokens).astype(np.int32)
    weights = chosen.astype(np.float32)
    inputs[1, -3:], weights[1, -3:] = config.pad_id, 0.0
    batch = {"inputs": inputs, "targets": tokens, "weights": weights}
    batch["token_types"] = np.zeros((b, t), np.int32)
    if config.heads.num_labels:
        batch["token_types"] = (np.arange(t) >= t // 2).astype(np.int32)[None].repeat(b, 0)
        batch["nsp_labels"] = np.array([0, 1, 1, 0], np.int32)
    return batch


@pytest.mark.slow  # a training loop per family
@pytest.mark.parametrize("name", TINY)
def test_mlm_overfits_one_batch_and_every_parameter_learns(ref, name):
    # One layer (half the compile); ALBERT's sharing over depths is test_models.py's.
    config = presets.get(
        name, vocab_size=64, num_layers=1, dropout_rate=0.0, attention_dropout_rate=0.0
    )
    objective = "mlm_nsp" if config.heads.num_labels else "mlm"  # ALBERT: MLM + SOP head
    model = models.build(config)
    tx = optax.adam(1e-2)  # first update ~ lr * sign(gradient): moves iff the gradient != 0
    shapes = jax.eval_shape(lambda r: models.init_params(config, r), jax.random.key(0))
    state = steps.init_train_state(ref.random_params(shapes, seed=0, scale=0.02), tx)
    step = jax.jit(
        steps.make_train_step(
            model, tx, optax.constant_schedule(1e-2), objective=objective, axis_name=None
        )
    )
    batch = _mlm_batch(config)
    rng = jax.random.key(1)
    before = jax.device_get(state.params)
    state, first = step(state, batch, rng)
    after = dict(jax.tree_util.tree_leaves_with_path(jax.device_get(state.params)))
    # The pooler feeds only the classifier: without one (RoBERTa) MLM never reads it.
    unused = "['pooler']" if config.heads.pooler and not config.heads.num_labels else None
    for path, old in jax.tree_util.tree_leaves_with_path(before):
        new, key = after[path], jax.tree_util.keystr(path)
        assert np.isfinite(new).all(), f"{name}: {key} is not finite after one step"
        if unused and key.startswith(unused):
            assert (new == old).all(), f"{name}: {key} should be unused by {objective}"
        else:
            assert (new != old).any(), f"{name}: {key} got a zero gradient"
    for _ in range(59):
        state, m = step(state, batch, rng)
    final = steps.summarize(jax.device_get(m))
    assert float(first["loss"] / first["weight"]) > 3.0  # ~log(64) at init
    assert final["loss"] < 0.05 and final["accuracy"] == 1.0, final
    if objective == "mlm_nsp":
        assert final["nsp_accuracy"] == 1.0, final
