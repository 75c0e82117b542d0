"""The BART-like encoder-decoder families of issue 10 (mBART, Marian, PLBART) against the real
HF classes (fixtures from tests/hf_fixtures/seq2seq_families.py): logits on padded sources
and targets, greedy and beam tokens, the save/load round trip, the presets' sizes."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from test_hf import (
    TOL,
    _apply,
    check_beam_seq2seq,
    check_greedy_seq2seq,
    fixture_dir,
)

from transformer_jax import hf, models, presets
from transformer_jax.families import FAMILIES

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
    check_greedy_seq2seq(*loaded[name])
    check_beam_seq2seq(*loaded[name])


@pytest.mark.parametrize(
    ("name", "architecture"),
    [("mbart", "MBartForConditionalGeneration"), ("marian", "MarianMTModel"),
     ("plbart", "BartForConditionalGeneration")],  # PLBART is BART with scaled embeddings
)  # fmt: skip
def test_save_then_load_is_bitwise(loaded, tmp_path, name, architecture):
    config, params, _ = loaded[name]
    hf.save(config, params, str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [architecture]
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
