"""ModelConfig: validation messages, derived values, replace and the dict round trip."""

from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp
import pytest

from transformer_jax import presets
from transformer_jax.config import ModelConfig

BASE = dict(arch="decoder", vocab_size=37, d_model=24, num_heads=4, d_ff=40, num_layers=3)


def make(**overrides):
    return ModelConfig(**{**BASE, **overrides})


def test_valid_config_and_derived_values():
    cfg = make(num_kv_heads=2)
    assert cfg.head_dim == 6 and cfg.kv_heads == 2 and cfg.decoder_layers == 3
    assert make().kv_heads == 4
    assert make(arch="encoder_decoder", num_decoder_layers=5).decoder_layers == 5
    assert cfg.compute_dtype == jnp.float32
    assert make(dtype="bfloat16").compute_dtype == jnp.bfloat16


def test_d_model_not_divisible_by_num_heads():
    with pytest.raises(ValueError) as err:
        make(d_model=25)
    message = str(err.value)
    assert "d_model=25" in message and "num_heads=4" in message


def test_num_heads_not_multiple_of_kv_heads():
    with pytest.raises(ValueError, match=r"num_heads=4.*num_kv_heads=3"):
        make(num_kv_heads=3)


@pytest.mark.parametrize(
    "field, value",
    [
        ("arch", "seq2seq"),
        ("activation", "tanh"),
        ("position", "rotary"),
        ("norm", "batchnorm"),
        ("norm_placement", "sandwich"),
        ("dtype", "float16"),
    ],
)
def test_bad_choice_names_the_field(field, value):
    with pytest.raises(ValueError) as err:
        make(**{field: value})
    assert f"ModelConfig.{field}={value!r}" in str(err.value)


@pytest.mark.parametrize(
    "field, value",
    [
        ("vocab_size", 0),
        ("d_model", -24),
        ("num_heads", 0),
        ("d_ff", 0),
        ("num_layers", 2.0),
        ("max_len", 0),
        ("num_kv_heads", 0),
    ],
)
def test_non_positive_sizes_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"ModelConfig.{field}="):
        make(**{field: value})


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(dropout_rate=1.0), "dropout_rate"),
        (dict(attention_dropout_rate=-0.1), "attention_dropout_rate"),
        (dict(position_offset=-1), "position_offset"),
        (dict(type_vocab_size=-2), "type_vocab_size"),
        (dict(pad_id=37), "pad_id"),
        (dict(pad_id=-1), "pad_id"),
        (dict(norm_eps=0.0), "norm_eps"),
        (dict(pooler=True), "pooler"),
        (dict(num_labels=2), "num_labels"),
        (dict(num_decoder_layers=2), "num_decoder_layers"),
    ],
)
def test_other_invalid_values_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        make(**overrides)


def test_pad_id_none_and_encoder_heads_are_allowed_where_they_belong():
    assert make(pad_id=None).pad_id is None
    cfg = make(arch="encoder", pooler=True, mlm_transform=True, num_labels=3)
    assert cfg.num_labels == 3


def test_config_is_frozen_and_replace_validates():
    cfg = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_model = 32  # type: ignore[misc]
    assert cfg.replace(d_model=32).d_model == 32 and cfg.d_model == 24
    with pytest.raises(ValueError, match="d_model=30"):
        cfg.replace(d_model=30)


@pytest.mark.parametrize("name", presets.names())
def test_to_dict_from_dict_round_trip(name):
    cfg = presets.get(name)
    values = cfg.to_dict()
    assert isinstance(values, dict) and values["d_model"] == cfg.d_model
    restored = ModelConfig.from_dict(json.loads(json.dumps(values)))  # plain JSON types
    assert restored == cfg and hash(restored) == hash(cfg)


def test_from_dict_rejects_unknown_fields():
    values = {**make().to_dict(), "hidden_size": 24}
    with pytest.raises(ValueError, match="hidden_size"):
        ModelConfig.from_dict(values)


def test_from_dict_validates():
    with pytest.raises(ValueError, match="num_heads"):
        ModelConfig.from_dict({**make().to_dict(), "d_model": 26})
