"""The BART-like encoder-decoder families of issue 10 (mBART, Marian, PLBART) against the real
HF classes (fixtures from tests/hf_fixtures/seq2seq_families.py): logits on padded sources
and targets, greedy and beam tokens, the save/load round trip, the presets' sizes; and every
encoder-decoder `-tiny` of issue 10 (T5, mT5, mBART, Marian, PLBART) overfitting one batch
of its objective through the train step, every parameter learning."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import optax
import pytest
from test_hf import (
    TOL,
    _apply,
    check_beam_seq2seq,
    check_greedy_seq2seq,
    fixture_dir,
)

from transformer_jax import hf, models, presets
from transformer_jax.data import objectives
from transformer_jax.families import FAMILIES
from transformer_jax.train import steps

NAMES = ("mbart", "marian", "plbart")


@pytest.fixture(scope="module")
def loaded():
    out = {}
    for name in NAMES:
        config, params = hf.load(fixture_dir(name))
        ref = dict(np.load(os.path.join(fixture_dir(name), "reference.npz")))
        out[name] = (config, params, ref)
    return out


def test_loaded_wiring(loaded):
    """The switches each family turns on, as read from the HF config.json."""
    mb, ma, pl = (loaded[n][0] for n in NAMES)
    assert (mb.norm.residual, mb.norm.final, mb.embed.norm, mb.embed.scale) == (
        "pre", True, True, True
    )  # fmt: skip
    assert (mb.positions.kind, mb.positions.offset, mb.output.bias) == ("learned", 2, True)
    assert (ma.positions.kind, ma.positions.layout, ma.embed.norm, ma.embed.scale) == (
        "sinusoidal", "halves", False, True
    )  # fmt: skip
    assert (ma.ffn.activation, ma.norm.residual, ma.pad_id) == ("silu", "post", 88)
    assert int(loaded["marian"][2]["gen_start_id"]) == ma.pad_id  # the decoder starts with pad
    assert (pl.norm.residual, pl.norm.final, pl.embed.norm, pl.embed.scale) == (
        "post", False, True, True
    )  # fmt: skip
    assert np.abs(loaded["marian"][1]["logits_bias"]).max() > 0.1  # a real, nonzero bias


@pytest.mark.parametrize("name", NAMES)
def test_logits_match_hf(loaded, name):
    """Padded sources and targets (Marian's start token is the pad id: explicit validity)."""
    config, params, ref = loaded[name]
    src_valid = ref["attention_mask"].astype(bool)
    tgt_valid = ref["decoder_attention_mask"].astype(bool)
    logits = _apply(
        params, ref["input_ids"], ref["decoder_input_ids"], config=config, method=None,
        src_valid=src_valid, tgt_valid=tgt_valid,
    )  # fmt: skip
    diff = np.abs(np.asarray(logits) - ref["logits"])[tgt_valid]
    assert diff.max() < TOL, f"{name}: max abs diff {diff.max():.3g}"


@pytest.mark.parametrize("name", NAMES)
def test_greedy_and_beam_match_hf(loaded, name):
    """With the ids the fixture's own generation config bans, as HF's generate applied them:
    Marian's bad_words_ids=[[pad]] (as published opus-mt configs); mBART and PLBART ban none
    (their fixtures were generated with suppress_tokens=[pad]: our sampler never emits it)."""
    banned = hf.generation_defaults(fixture_dir(name))["suppress_tokens"]
    assert banned == ((loaded[name][0].pad_id,) if name == "marian" else ())
    check_greedy_seq2seq(*loaded[name], suppress_tokens=banned)
    check_beam_seq2seq(*loaded[name], suppress_tokens=banned)


@pytest.mark.parametrize(
    ("name", "architecture"),
    [("mbart", "MBartForConditionalGeneration"), ("marian", "MarianMTModel"),
     ("plbart", "BartForConditionalGeneration")],  # PLBART is BART with scaled embeddings
)  # fmt: skip
def test_save_then_load_is_bitwise(loaded, tmp_path, name, architecture):
    config, params, _ = loaded[name]
    hf.save(config, params, str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [architecture]
    banned = (config.pad_id,) if name == "marian" else ()  # opus-mt's bad_words_ids=[[pad]]
    assert hf.generation_defaults(str(tmp_path)) == {"suppress_tokens": banned}
    config2, params2 = hf.load(str(tmp_path))
    assert config2 == config
    flat, flat2 = (dict(jax.tree_util.tree_leaves_with_path(p)) for p in (params, params2))
    assert flat.keys() == flat2.keys()
    for path, value in flat.items():
        assert np.array_equal(value, flat2[path]) and value.dtype == flat2[path].dtype, path


# HF's num_parameters() of the published models. Marian's also counts its two fixed
# sinusoidal tables (2 x 512 x 512), which are computed here, not parameters.
COUNTS = {
    "mbart-large-cc25": 610_851_840,
    "marian-en-de": 74_410_496 - 2 * 512 * 512,
    "plbart-base": 139_220_736,
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_preset_counts_and_config_round_trip(name):
    config = presets.get(name)
    shapes = jax.eval_shape(lambda r: models.init_params(config, r), jax.random.key(0))
    assert models.count_params(shapes) == COUNTS[name]
    family = FAMILIES[name.split("-")[0]]
    for preset in (name, f"{name.split('-')[0]}-tiny"):
        cfg = presets.get(preset).replace(output={"bias": True})  # as hf.save writes it
        assert family.from_hf_config(family.to_hf_config(cfg)) == cfg


def test_marian_refuses_a_separate_target_vocabulary():
    from transformer_jax.families import marian

    with pytest.raises(ValueError, match="decoder_vocab_size=300 differs from vocab_size=89"):
        marian.from_hf_config({"vocab_size": 89, "decoder_vocab_size": 300})


PAD_START = ("t5-tiny", "mt5-tiny", "marian-tiny")  # HF's decoder_start_token_id is the pad


def _family_batch(name: str, config, objective: str) -> dict[str, np.ndarray]:
    """One batch as the pipeline makes it (objectives.py, segment ids and positions): rows of
    `body EOS`, row 1 ending in padding. T5 and Marian start the decoder with the pad id, so
    the explicit validity of the segment ids must keep that start token visible."""
    b, t, eos = 4, 12, 3
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, config.vocab_size - 12, size=(b, t)).astype(np.int32)
    segs = np.ones((b, t), np.int32)
    segs[1, -3:], tokens[1, -3:] = 0, config.pad_id  # a padded tail
    tokens[:, -1], tokens[1, -4] = eos, eos
    start = config.pad_id if name in PAD_START else 2
    ids = objectives.SpecialIds(
        vocab_size=config.vocab_size, pad=config.pad_id, bos=start, eos=eos, mask=4,
        sentinels=tuple(range(config.vocab_size - 1, config.vocab_size - 11, -1)),  # T5's
    )  # fmt: skip
    rows = {"tokens": tokens, "segment_ids": segs, "positions": np.where(segs, np.arange(t), 0)}
    if objective == "span_corruption":
        return objectives.span_corruption_batch(rows, ids, seed=0, step=0, row_ids=range(b))
    if objective == "denoise":
        return objectives.denoise_batch(rows, ids, seed=0, step=0, row_ids=range(b))
    src = rng.integers(5, config.vocab_size - 12, size=(b, t)).astype(np.int32)  # translation
    pairs = {"inputs": np.where(segs, src, config.pad_id), "inputs_segment_ids": segs,
             "inputs_positions": rows["positions"], "targets": np.where(segs, tokens, 0),
             "targets_segment_ids": segs, "targets_positions": rows["positions"]}  # fmt: skip
    return objectives.seq2seq_batch(pairs, ids)


@pytest.mark.slow  # a training loop per family
@pytest.mark.parametrize(
    ("name", "objective"),
    [("t5-tiny", "span_corruption"), ("mt5-tiny", "span_corruption"),
     ("mbart-tiny", "denoise"), ("plbart-tiny", "denoise"), ("marian-tiny", "seq2seq")],
)  # fmt: skip
def test_overfits_one_batch_and_every_parameter_learns(ref, name, objective):
    # One layer a stack (half the compile); Marian's pad is its last id (opus-mt: 58100).
    config = presets.get(
        name, vocab_size=64, num_layers=1, num_decoder_layers=1, dropout_rate=0.0,
        attention_dropout_rate=0.0, **({"pad_id": 63} if name == "marian-tiny" else {}),
    )  # fmt: skip
    model = models.build(config)
    tx = optax.adam(1e-2)  # first update ~ lr * sign(gradient): moves iff the gradient != 0
    shapes = jax.eval_shape(lambda r: models.init_params(config, r), jax.random.key(0))
    params = ref.random_params(shapes, seed=0, scale=0.02)
    if config.output.scale != 1.0:  # T5 v1.0's tied output, rescaled by d^-0.5: HF's init
        params["token_embed"]["embedding"] *= 50.0  # std 1.0 (factor 1.0), not 0.02
    state = steps.init_train_state(params, tx)
    step = jax.jit(
        steps.make_train_step(
            model, tx, optax.constant_schedule(1e-2), objective=objective, axis_name=None
        )
    )
    batch = _family_batch(name, config, objective)
    rng = jax.random.key(1)
    before = jax.device_get(state.params)
    state, first = step(state, batch, rng)
    after = dict(jax.tree_util.tree_leaves_with_path(jax.device_get(state.params)))
    for path, old in jax.tree_util.tree_leaves_with_path(before):
        new, key = after[path], jax.tree_util.keystr(path)
        assert np.isfinite(new).all(), f"{name}: {key} is not finite after one step"
        assert (new != old).any(), f"{name}: {key} got a zero gradient"
    for _ in range(59):
        state, m = step(state, batch, rng)
    final = steps.summarize(jax.device_get(m))
    assert float(first["loss"] / first["weight"]) > 3.0  # ~log(64) at init
    assert final["loss"] < 0.05 and final["accuracy"] == 1.0, final


def test_generation_defaults_read_as_transformers_does(tmp_path):
    """generation_config.json wins over config.json; suppress_tokens and one-token bad words
    join; what we cannot honour is refused, naming the file and the entry."""
    (tmp_path / "config.json").write_text(json.dumps({"bad_words_ids": [[7]]}))
    assert hf.generation_defaults(str(tmp_path)) == {"suppress_tokens": (7,)}
    gen = tmp_path / "generation_config.json"
    gen.write_text(json.dumps({"suppress_tokens": [9, 3], "bad_words_ids": [[5], [3]]}))
    assert hf.generation_defaults(str(tmp_path)) == {"suppress_tokens": (3, 5, 9)}
    gen.write_text(json.dumps({"bad_words_ids": [[5, 6]]}))
    with pytest.raises(ValueError, match=r"generation_config.json: bad_words_ids entry \[5, 6\]"):
        hf.generation_defaults(str(tmp_path))
    gen.write_text(json.dumps({"begin_suppress_tokens": [1]}))
    with pytest.raises(ValueError, match=r"begin_suppress_tokens=\[1\] .* not supported"):
        hf.generation_defaults(str(tmp_path))
