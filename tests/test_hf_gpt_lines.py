"""GPT-1 (OpenAIGPTLMHeadModel) and GPT-Neo (GPTNeoForCausalLM) against the real HF classes
(fixtures by tests/hf_fixtures/make_fixtures.py, builders in tests/hf_fixtures/gpt_lines.py):
logits, cached greedy decoding, the hf.save -> hf.load round trip, and what the loaders read
and refuse. Helpers are test_hf.py's."""

from __future__ import annotations

import json
import os
import re

import jax
import numpy as np
import pytest
from test_hf import TOL, _apply, _compare_generated, _random_params, fixture_dir

from transformer_jax import hf, presets
from transformer_jax.families import gpt1, gpt_neo
from transformer_jax.sampling import generate

CLASSES = {"openai_gpt": "OpenAIGPTLMHeadModel", "gpt_neo": "GPTNeoForCausalLM"}


@pytest.fixture(scope="module")
def loaded():
    out = {}
    for name in CLASSES:
        config, params = hf.load(fixture_dir(name))
        out[name] = (config, params, dict(np.load(fixture_dir(name) + "/reference.npz")))
    return out


@pytest.mark.parametrize("name", CLASSES)
def test_logits_and_greedy_tokens_match_hf(loaded, name):
    """Logits of a right-padded batch (real positions) within 1e-5; cached greedy decoding of
    ragged prompts (5 and 7 tokens, each generated alone by HF) gives HF's tokens: GPT-Neo's
    15-token sequences are 5x its window of 3."""
    config, params, ref = loaded[name]
    logits = np.asarray(_apply(params, ref["input_ids"], config=config, method=None))
    diff = np.abs(logits - ref["logits"])[ref["attention_mask"].astype(bool)]
    assert diff.max() < TOL, f"{name}: max abs diff {diff.max():.3g}"
    eos = int(ref["gen_eos_id"])
    tokens, lengths = generate(
        config,
        params,
        ref["gen_prompts"],
        lengths=ref["gen_lengths"],
        max_new_tokens=ref["gen_tokens"].shape[1],
        temperature=0.0,
        eos_id=eos,
    )
    _compare_generated(tokens, lengths, ref["gen_tokens"], eos)


def test_loaded_configs(loaded):
    """The switches each fixture turns on."""
    g1, neo = loaded["openai_gpt"][0], loaded["gpt_neo"][0]
    assert (g1.norm.residual, g1.norm.final, g1.ffn.activation, g1.ffn.d_ff) == (
        "post", False, "gelu_tanh", 96
    )  # fmt: skip
    assert (g1.attention.scale, g1.attention.qkv_bias, g1.output.tie, g1.pad_id) == (
        None, True, True, None
    )  # fmt: skip
    att = neo.attention
    assert (att.pattern, att.window, att.scale, att.qkv_bias, att.out_bias) == (
        ("local", "global", "local"), 3, 1.0, False, True
    )  # fmt: skip
    assert (neo.norm.residual, neo.norm.final, neo.ffn.d_ff, neo.num_layers) == (
        "pre", True, 40, 3
    )  # fmt: skip


@pytest.mark.parametrize("name", CLASSES)
def test_save_then_load_is_bitwise(loaded, tmp_path, name):
    config, params, _ = loaded[name]
    hf.save(config, params, str(tmp_path))
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["architectures"] == [CLASSES[name]]
    config2, params2 = hf.load(str(tmp_path))
    assert config2 == config
    flat, flat2 = (
        jax.tree_util.tree_leaves_with_path(params),
        dict(jax.tree_util.tree_leaves_with_path(params2)),
    )
    assert len(flat) == len(flat2)
    for path, value in flat:
        assert np.array_equal(value, flat2[path]) and value.dtype == flat2[path].dtype, path


@pytest.mark.parametrize(
    ("preset", "model_type", "attention_types"),
    [("gpt1-tiny", "openai-gpt", None),
     ("gpt-neo-tiny", "gpt_neo", [[["global", "local"], 1]])],
)  # fmt: skip
def test_tiny_presets_save_as_their_hf_class(tmp_path, preset, model_type, attention_types):
    config = presets.get(preset)
    params = _random_params(config)
    hf.save(config, params, str(tmp_path))
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["model_type"] == model_type
    assert written.get("attention_types") == attention_types
    config2, params2 = hf.load(str(tmp_path))
    assert config2 == config
    assert jax.tree.all(jax.tree.map(np.array_equal, params, params2))


@pytest.mark.parametrize("window", [1, 3, 7])
def test_local_band_is_hf_gpt_neos(window):
    """HF's local mask is causal XOR tril(causal, -window_size) (modeling_gpt_neo.py), built
    here in NumPy; ours, causal AND window_mask with window = window_size, is the same band
    (no off-by-one: a local query sees window_size keys, itself included, as Mistral's)."""
    from transformer_jax.nn.attention import causal_mask, combine_masks, window_mask

    length = 9
    causal = np.tril(np.ones((length, length), bool))
    theirs = causal ^ np.tril(causal, -window)
    positions = np.arange(length)[None]  # [1, T]
    ours = combine_masks(causal_mask(length), window_mask(positions, positions, window))
    np.testing.assert_array_equal(np.asarray(ours)[0, 0], theirs)
    assert theirs.sum(axis=1).max() == min(window, length)


def test_gpt3_with_local_layers_has_no_hf_class(tmp_path):
    """GPT-2 has no local layers and GPT-Neo no q/k/v biases: gpt3-tiny (alternating pattern)
    is refused as HF, naming both reasons, and saves in the library's own format instead."""
    config = presets.get("gpt3-tiny")
    params = _random_params(config)
    with pytest.raises(ValueError) as err:
        hf.save(config, params, str(tmp_path / "hf"))
    assert "gpt2: would read back with attention.pattern=['global'] instead of" in str(err.value)
    assert "gpt_neo: would read back with attention.qkv_bias=False" in str(err.value)
    hf.save(config, params, str(tmp_path / "own"), format="auto")
    config2, params2 = hf.load(str(tmp_path / "own"))
    assert config2 == config
    assert jax.tree.all(jax.tree.map(np.array_equal, params, params2))


def test_gpt_neo_attention_types_compress_and_expand():
    """A uniform pattern is one entry; any pattern writes as its shortest repeating unit."""
    assert gpt_neo._compress(["global", "local"] * 6) == [[["global", "local"], 6]]
    assert gpt_neo._compress(["local"] * 4) == [[["local"], 4]]
    assert gpt_neo._compress(["global", "global", "local"]) == [[["global", "global", "local"], 1]]
    assert gpt_neo._expand([[["global", "local"], 2], [["local"], 1]]) == [
        "global", "local", "global", "local", "local"
    ]  # fmt: skip
    config = json.loads(open(os.path.join(fixture_dir("gpt_neo"), "config.json")).read())
    config.pop("attention_layers")
    uniform = gpt_neo.from_hf_config({**config, "attention_types": [[["global"], 3]]})
    assert (uniform.attention.pattern, uniform.attention.window) == (("global",), None)


@pytest.mark.parametrize(
    ("name", "family", "changes", "message"),
    [
        ("gpt_neo", gpt_neo, {"attention_types": [[["global", "local"], 2]]},
         "gives 4 layers but num_layers=3"),
        ("gpt_neo", gpt_neo, {"attention_types": [[["global", "sparse", "local"], 1]]},
         "kinds ['sparse']"),
        ("gpt_neo", gpt_neo, {"attention_types": "global"}, "attention_types='global'"),
        ("gpt_neo", gpt_neo, {"attention_layers": ["global"] * 3}, "attention_layers="),
        ("gpt_neo", gpt_neo, {"activation_function": "gelu_fast"},
         "activation_function='gelu_fast'"),
        ("openai_gpt", gpt1, {"afn": "gelu_fast"}, "afn='gelu_fast'"),
        ("openai_gpt", gpt1, {"n_special": 2}, "n_special=2"),
    ],
)  # fmt: skip
def test_unsupported_config_fields(name, family, changes, message):
    config = json.loads(open(os.path.join(fixture_dir(name), "config.json")).read())
    with pytest.raises(ValueError, match=re.escape(message)):
        family.from_hf_config({**config, **changes})


# The config.json files published with the preset models (Hugging Face Hub).
PUBLISHED = {
    "gpt1": {  # openai-community/openai-gpt
        "afn": "gelu", "architectures": ["OpenAIGPTLMHeadModel"], "attn_pdrop": 0.1,
        "embd_pdrop": 0.1, "initializer_range": 0.02, "layer_norm_epsilon": 1e-05,
        "model_type": "openai-gpt", "n_ctx": 512, "n_embd": 768, "n_head": 12, "n_layer": 12,
        "n_positions": 512, "n_special": 0, "predict_special_tokens": True,
        "resid_pdrop": 0.1, "summary_activation": None, "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True, "summary_type": "cls_index", "summary_use_proj": True,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": 40478,
    },
    "gpt-neo-125m": {  # EleutherAI/gpt-neo-125m
        "activation_function": "gelu_new", "architectures": ["GPTNeoForCausalLM"],
        "attention_dropout": 0, "attention_layers": ["global", "local"] * 6,
        "attention_types": [[["global", "local"], 6]], "bos_token_id": 50256,
        "embed_dropout": 0, "eos_token_id": 50256, "gradient_checkpointing": False,
        "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": None,
        "layer_norm_epsilon": 1e-05, "max_position_embeddings": 2048, "model_type": "gpt_neo",
        "num_heads": 12, "num_layers": 12, "resid_dropout": 0, "summary_activation": None,
        "summary_first_dropout": 0.1, "summary_proj_to_labels": True,
        "summary_type": "cls_index", "summary_use_proj": True,
        "transformers_version": "4.9.0.dev0", "use_cache": True, "vocab_size": 50257,
        "window_size": 256,
    },
}  # fmt: skip


@pytest.mark.parametrize("preset", sorted(PUBLISHED))
def test_published_configs_read_as_the_presets(preset):
    from transformer_jax.hf.api import family_of

    family = family_of(PUBLISHED[preset], preset)
    config = presets.get(preset)
    assert family.from_hf_config(PUBLISHED[preset]) == config
    assert family.from_hf_config(family.to_hf_config(config)) == config
