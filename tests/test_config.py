"""ModelConfig: validation messages (every group names its field), combination checks,
derived values, replace/override and the dict round trip (version 2, and version 1's flat
form)."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax.numpy as jnp
import pytest

from transformer_jax import presets
from transformer_jax.config import (
    POSITION_VARIANTS,
    AttentionConfig,
    EmbeddingConfig,
    FeedForwardConfig,
    HeadsConfig,
    LearnedPositions,
    ModelConfig,
    NoPositions,
    NormConfig,
    OutputConfig,
    RotaryPositions,
    SinusoidalPositions,
)
from transformer_jax.migrate import LayoutError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "legacy_v1"

BASE = dict(
    arch="decoder",
    vocab_size=37,
    d_model=24,
    num_layers=3,
    attention=AttentionConfig(num_heads=4),
    ffn=FeedForwardConfig(d_ff=40),
)
GROUP_CLASSES = {
    "attention": AttentionConfig,
    "ffn": FeedForwardConfig,
    "norm": NormConfig,
    "embed": EmbeddingConfig,
    "output": OutputConfig,
    "heads": HeadsConfig,
}


def make(**changes):
    """ModelConfig(**BASE) with root fields replaced; a group given as a dict is built as
    that group with BASE's fields plus the dict (the nested constructor, no `replace`)."""
    fields = dict(BASE)
    for name, value in changes.items():
        if name == "positions" and isinstance(value, dict):  # {"kind": ..., fields}
            value = dict(value)
            value = POSITION_VARIANTS[value.pop("kind")](**value)
        elif name in GROUP_CLASSES and isinstance(value, dict):
            current = fields[name] if name in fields else GROUP_CLASSES[name]()
            value = GROUP_CLASSES[name](**{**dataclasses.asdict(current), **value})
        fields[name] = value
    return ModelConfig(**fields)


def make_path(path, value):
    """make() with one field given by its dotted path ("attention.num_heads")."""
    if "." not in path:
        return make(**{path: value})
    group, field = path.split(".")
    if group == "positions":
        return make(positions={"kind": "rotary", field: value})
    return make(**{group: {field: value}})


def test_valid_config_and_derived_values():
    cfg = make(attention={"num_kv_heads": 2})
    assert cfg.head_dim == 6 and cfg.kv_heads == 2 and cfg.decoder_layers == 3
    assert cfg.num_heads == 4 and cfg.embed_size == 24
    assert make().kv_heads == 4
    assert make(arch="encoder_decoder", num_decoder_layers=5).decoder_layers == 5
    assert cfg.compute_dtype == jnp.float32
    assert make(dtype="bfloat16").compute_dtype == jnp.bfloat16
    assert cfg.score_scale == pytest.approx(6**-0.5)
    assert make(attention={"scale": 1.0}).score_scale == 1.0
    assert make(embed={"size": 8}, output={"tie": False}).embed_size == 8


def test_d_model_not_divisible_by_num_heads():
    with pytest.raises(ValueError) as err:
        make(d_model=25)
    message = str(err.value)
    assert "d_model=25" in message and "num_heads=4" in message
    assert "attention.head_dim" in message  # and says how to have it anyway


def test_explicit_head_dim_allows_d_model_not_divisible_by_heads():
    cfg = make(d_model=25, attention={"head_dim": 7})
    assert cfg.head_dim == 7 and cfg.d_model == 25
    assert cfg.score_scale == pytest.approx(7**-0.5)


def test_num_heads_not_multiple_of_kv_heads():
    with pytest.raises(ValueError, match=r"num_heads=4.*num_kv_heads=3"):
        make(attention={"num_kv_heads": 3})


@pytest.mark.parametrize(
    "field, value",
    [
        ("arch", "seq2seq"),
        ("ffn.activation", "tanh"),
        ("norm.kind", "batchnorm"),
        ("norm.residual", "sandwich"),
        ("norm.parallel_norms", 3),
        ("dtype", "float16"),
        ("positions.layout", "neox"),
    ],
)
def test_bad_choice_names_the_field(field, value):
    with pytest.raises(ValueError) as err:
        make_path(field, value)
    assert f"ModelConfig.{field}={value!r}" in str(err.value)


def test_unknown_positions_kind_names_the_field():
    # Version 1's position="rotary" was invalid; rotary is a variant now, an unknown kind is not.
    with pytest.raises(ValueError) as err:
        make().replace(positions={"kind": "alibi"})
    message = str(err.value)
    assert "ModelConfig.positions.kind='alibi'" in message and "rotary" in message
    with pytest.raises(ValueError, match="ModelConfig.positions="):
        make(positions="rotary")  # a string is not a variant
    assert make().replace(positions={"kind": "rotary"}).positions == RotaryPositions()


@pytest.mark.parametrize(
    "field, value",
    [
        ("vocab_size", 0),
        ("d_model", -24),
        ("attention.num_heads", 0),
        ("ffn.d_ff", 0),
        ("num_layers", 2.0),
        ("max_len", 0),
        ("attention.num_kv_heads", 0),
        ("attention.head_dim", 0),
        ("attention.window", -3),
        ("embed.size", 0),
        ("layer_groups", 0),
        ("num_decoder_layers", 0),
        ("positions.rotary_dim", 0),
    ],
)
def test_non_positive_sizes_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"ModelConfig.{field}="):
        make_path(field, value)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(dropout_rate=1.0), "dropout_rate"),
        (dict(attention={"dropout_rate": -0.1}), "attention.dropout_rate"),
        (dict(positions={"kind": "learned", "offset": -1}), "positions.offset"),
        (dict(embed={"type_vocab_size": -2}), "embed.type_vocab_size"),
        (dict(pad_id=37), "pad_id"),
        (dict(pad_id=-1), "pad_id"),
        (dict(norm={"eps": 0.0}), "norm.eps"),
        (dict(heads={"pooler": True}), "heads"),
        (dict(heads={"num_labels": 2}), "heads"),
        (dict(num_decoder_layers=2), "num_decoder_layers"),
        (dict(attention={"scale": 0.0}), "attention.scale"),
        (dict(attention={"pattern": ()}), "attention.pattern"),
        (dict(attention={"pattern": ("sliding",)}), "attention.pattern"),
        (dict(attention={"pattern": "global"}), "attention.pattern"),
        (dict(attention={"window": 4}), "attention.window"),  # set without a local layer
        (dict(positions={"kind": "rotary", "theta": 1.0}), "positions.theta"),
        (dict(positions={"kind": "rotary", "rotary_dim": 3}), "positions.rotary_dim"),
        (dict(output={"scale": 0}), "output.scale"),
        (dict(heads={"num_labels": -1}), "heads.num_labels"),
        (dict(init_std=0.0), "init_std"),
        (dict(norm={"parallel_norms": 2}), "norm.parallel_norms"),  # two norms, no parallel
    ],
)
def test_other_invalid_values_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=f"ModelConfig.{field}="):
        make(**overrides)


def test_sinusoidal_layout_names_the_field():
    with pytest.raises(ValueError, match=r"ModelConfig.positions.layout='blocks'"):
        SinusoidalPositions(layout="blocks")
    assert make(positions=SinusoidalPositions(layout="halves")).positions.layout == "halves"


def test_groups_must_be_group_objects():
    with pytest.raises(ValueError, match="ModelConfig.norm=.*NormConfig"):
        make(norm="layernorm")


def test_pad_id_none_and_encoder_heads_are_allowed_where_they_belong():
    assert make(pad_id=None).pad_id is None
    cfg = make(arch="encoder", heads={"pooler": True, "mlm_transform": True, "num_labels": 3})
    assert cfg.heads.num_labels == 3


# ------------------------------------------------------------------ combination checks
def test_local_pattern_needs_a_window_and_a_decoder():
    local = {"pattern": ("local", "global", "local"), "window": 5}
    cfg = make(attention=local)
    assert [cfg.attention.layer_kind(i) for i in range(3)] == ["local", "global", "local"]
    assert make(attention={"pattern": ("local",), "window": 2}).attention.layer_kind(2) == "local"
    with pytest.raises(ValueError, match=r"ModelConfig.attention.window=None.*local"):
        make(attention={"pattern": ("local",)})
    for arch in ("encoder", "encoder_decoder"):
        with pytest.raises(ValueError, match=r"ModelConfig.attention.pattern=.*'decoder'"):
            make(arch=arch, attention=local)


@pytest.mark.parametrize("length", [2, 4])
def test_pattern_has_one_entry_or_one_per_layer(length):
    with pytest.raises(ValueError, match=rf"ModelConfig.attention.pattern=.*{length} entries"):
        make(attention={"pattern": ("global",) * length})


def test_parallel_residual_is_rejected_for_encoder_decoder():
    parallel = {"residual": "parallel", "parallel_norms": 2}
    assert make(norm=parallel).norm.parallel_norms == 2
    with pytest.raises(ValueError, match=r"ModelConfig.norm.residual='parallel'"):
        make(arch="encoder_decoder", norm=parallel)


def test_rotary_and_learned_positions_do_not_combine():
    # Positions are ONE variant: a learned table's field on a rotary scheme is named and refused.
    with pytest.raises(ValueError, match=r"Unknown positions \(rotary\) fields \['offset'\]"):
        make().replace(positions={"kind": "rotary", "offset": 2})
    with pytest.raises(ValueError, match=r"positions=\(RotaryPositions.*must be one of"):
        make(positions=(RotaryPositions(), LearnedPositions()))


def test_rotary_dim_must_fit_the_head():
    assert make(positions=RotaryPositions(rotary_dim=6)).positions.rotary_dim == 6  # = head
    with pytest.raises(ValueError, match=r"ModelConfig.positions.rotary_dim=8 .*head size 6"):
        make(positions=RotaryPositions(rotary_dim=8))
    with pytest.raises(ValueError, match=r"ModelConfig.positions.rotary_dim=5 .*even"):
        make(positions={"kind": "rotary", "rotary_dim": 5})
    # An odd head size rotates only with an explicit even rotary_dim.
    odd = dict(d_model=21, attention={"num_heads": 3})
    with pytest.raises(ValueError, match=r"ModelConfig.positions=.*head size 7 is odd"):
        make(**odd, positions=RotaryPositions())
    assert make(**odd, positions=RotaryPositions(rotary_dim=4)).head_dim == 7


def test_layer_groups_at_most_the_layers():
    assert make(layer_groups=3).layer_groups == 3
    with pytest.raises(ValueError, match=r"ModelConfig.layer_groups=4 .*\(3\)"):
        make(layer_groups=4)
    # An encoder-decoder's groups serve both stacks: the shallower one bounds them.
    with pytest.raises(ValueError, match=r"ModelConfig.layer_groups=3 .*\(2\)"):
        make(arch="encoder_decoder", num_decoder_layers=2, layer_groups=3)


@pytest.mark.parametrize("arch", ["decoder", "encoder_decoder"])
def test_heads_only_on_encoders(arch):
    with pytest.raises(ValueError, match=rf"ModelConfig.heads=.*arch='{arch}'"):
        make(arch=arch, heads={"mlm_transform": True})


def test_factorised_tied_output_needs_mlm_transform():
    with pytest.raises(ValueError, match=r"ModelConfig.embed.size=8 .*mlm_transform"):
        make(arch="encoder", embed={"size": 8})
    ok = make(arch="encoder", embed={"size": 8}, heads={"mlm_transform": True})
    assert ok.embed_size == 8
    assert make(embed={"size": 8}, output={"tie": False}).embed_size == 8
    assert make(embed={"size": 24}).embed_size == 24  # E == D is not factorised


# ---------------------------------------------------------------- replace and override
def test_config_is_frozen_and_replace_validates():
    cfg = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_model = 32  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.attention.num_heads = 2  # type: ignore[misc]
    assert cfg.replace(d_model=32).d_model == 32 and cfg.d_model == 24
    with pytest.raises(ValueError, match="d_model=30"):
        cfg.replace(d_model=30)


def test_replace_groups_by_dict_or_object():
    cfg = make()
    new = cfg.replace(d_model=32, attention={"num_heads": 2}, positions={"offset": 2})
    assert new.attention == AttentionConfig(num_heads=2) and new.head_dim == 16
    assert new.positions == LearnedPositions(offset=2)
    assert cfg.replace(ffn=FeedForwardConfig(d_ff=8, gated=True)).ffn.gated
    # A group dict changes only the fields it names.
    kept = make(attention={"num_kv_heads": 2}).replace(attention={"dropout_rate": 0.1})
    assert kept.attention.num_kv_heads == 2 and kept.attention.dropout_rate == 0.1
    with pytest.raises(ValueError, match=r"Unknown attention fields \['heads'\]"):
        cfg.replace(attention={"heads": 2})
    with pytest.raises(ValueError, match=r"Unknown ModelConfig fields \['num_heads'\]"):
        cfg.replace(num_heads=2)  # flat names are for override()


def test_override_dotted_nested_and_legacy_keys():
    cfg = make()
    want = cfg.replace(
        attention={"num_heads": 2, "num_kv_heads": 1, "qkv_bias": False, "out_bias": False},
        ffn={"gated": True, "activation": "silu", "bias": False},
        norm={"kind": "rmsnorm", "residual": "pre", "final": True},
        positions=RotaryPositions(),
        output={"tie": False},
        num_layers=2,
    )
    dotted = cfg.override(
        {
            "attention.num_heads": 2,
            "attention.num_kv_heads": 1,
            "attention.qkv_bias": False,
            "attention.out_bias": False,
            "ffn.gated": True,
            "ffn.activation": "silu",
            "ffn.bias": False,
            "norm.kind": "rmsnorm",
            "norm.residual": "pre",
            "norm.final": True,
            "positions.kind": "rotary",
            "output.tie": False,
            "num_layers": 2,
        }
    )
    nested = cfg.override(
        {
            "attention": {"num_heads": 2, "num_kv_heads": 1, "qkv_bias": False, "out_bias": False},
            "ffn": {"gated": True, "activation": "silu", "bias": False},
            "norm": {"kind": "rmsnorm", "residual": "pre", "final": True},
            "positions": {"kind": "rotary"},
            "output": {"tie": False},
            "num_layers": 2,
        }
    )
    legacy = cfg.override(
        {
            "num_heads": 2,
            "num_kv_heads": 1,
            "use_bias": False,
            "gated_ffn": True,
            "activation": "silu",
            "norm": "rmsnorm",
            "norm_placement": "pre",
            "final_norm": True,
            "position": "rotary",
            "tie_embeddings": False,
            "num_layers": 2,
        }
    )
    assert dotted == nested == legacy == want
    with pytest.raises(ValueError, match="hidden_size"):
        cfg.override({"hidden_size": 8})


def test_override_legacy_position_pair():
    # Version-1 recipes set position and position_offset together; offset 0 is the default
    # of every kind and must not make a non-learned kind fail.
    cfg = make()
    assert cfg.override({"position": "sinusoidal", "position_offset": 0}).positions == (
        SinusoidalPositions()
    )
    bart = cfg.override({"position": "learned", "position_offset": 2})
    assert bart.positions == LearnedPositions(offset=2)
    with pytest.raises(ValueError, match="position_offset=2"):
        cfg.override({"position": "none", "position_offset": 2})


# ---------------------------------------------------------------------- dict round trip
@pytest.mark.parametrize("name", presets.names())
def test_to_dict_from_dict_round_trip(name):
    cfg = presets.get(name)
    values = cfg.to_dict()
    assert isinstance(values, dict) and values["d_model"] == cfg.d_model
    assert values["version"] == 2 and values["positions"]["kind"] == cfg.positions.kind
    assert values["attention"]["num_heads"] == cfg.num_heads
    restored = ModelConfig.from_dict(json.loads(json.dumps(values)))  # plain JSON types
    assert restored == cfg and hash(restored) == hash(cfg)


def test_round_trip_of_every_new_field():
    cfg = make(
        d_model=25,
        num_layers=4,
        layer_groups=2,
        attention={
            "head_dim": 6,
            "num_kv_heads": 2,
            "scale": 1.0,
            "qkv_bias": False,
            "pattern": ("local", "global", "local", "global"),
            "window": 3,
        },
        positions=RotaryPositions(theta=500.0, rotary_dim=4, layout="interleaved"),
        norm={"residual": "parallel", "parallel_norms": 2, "kind": "rmsnorm"},
        embed={"size": 8},
        output={"tie": False, "scale": 0.5},
    )
    values = json.loads(json.dumps(cfg.to_dict()))
    assert values["attention"]["pattern"] == ["local", "global", "local", "global"]
    restored = ModelConfig.from_dict(values)
    assert restored == cfg and restored.attention.pattern == cfg.attention.pattern


def test_from_dict_reads_version_1_flat_gated_decoder():
    values = json.loads((FIXTURES / "gpt_gated" / "model_config.json").read_text())
    assert "version" not in values  # the flat form of transformer_jax 0.1
    want = ModelConfig(
        arch="decoder",
        vocab_size=512,
        d_model=32,
        num_layers=2,
        max_len=128,
        attention=AttentionConfig(
            num_heads=2, num_kv_heads=1, qkv_bias=False, out_bias=False, dropout_rate=0.0
        ),
        ffn=FeedForwardConfig(d_ff=64, activation="silu", gated=True, bias=False),
        positions=LearnedPositions(offset=0),
        norm=NormConfig(kind="rmsnorm", residual="pre", final=True, eps=1e-5),
        embed=EmbeddingConfig(),
        output=OutputConfig(tie=False, bias=False),
        heads=HeadsConfig(),
        dropout_rate=0.0,
        pad_id=0,
        dtype="float32",
        init_std=0.02,
    )
    assert ModelConfig.from_dict(values) == want


def test_from_dict_reads_version_1_flat_bart():
    values = json.loads((FIXTURES / "bart_tiny" / "model_config.json").read_text())
    want = ModelConfig(
        arch="encoder_decoder",
        vocab_size=512,
        d_model=32,
        num_layers=2,
        num_decoder_layers=1,
        max_len=128,
        attention=AttentionConfig(num_heads=2),
        ffn=FeedForwardConfig(d_ff=64, activation="gelu"),
        positions=LearnedPositions(),
        embed=EmbeddingConfig(norm=True),
        norm=NormConfig(residual="post"),
        output=OutputConfig(tie=True),
        dropout_rate=0.1,
        pad_id=0,
    )
    assert ModelConfig.from_dict(values) == want


def test_from_dict_of_a_version_1_sinusoidal_config():
    flat = {
        "arch": "encoder_decoder", "vocab_size": 37, "d_model": 24, "num_heads": 4, "d_ff": 40,
        "num_layers": 1, "position": "sinusoidal", "position_offset": 0, "embed_scale": True,
    }  # fmt: skip
    cfg = ModelConfig.from_dict(flat)
    assert cfg.positions == SinusoidalPositions() and cfg.embed.scale
    assert ModelConfig.from_dict({**flat, "position": "none"}).positions == NoPositions()


def test_from_dict_of_a_newer_version_names_it():
    values = {**make().to_dict(), "version": 3}
    with pytest.raises(LayoutError, match=r"version 3 .*\(1\.\.2\)"):
        ModelConfig.from_dict(values)
    assert issubclass(LayoutError, ValueError)


def test_from_dict_reads_an_ignored_second_parallel_norm_as_one():
    # Stored before the check existed: parallel_norms=2 with a pre-LN residual meant nothing.
    stored = make(norm={"residual": "pre"}).to_dict()
    stored["norm"]["parallel_norms"] = 2
    assert ModelConfig.from_dict(stored) == make(norm={"residual": "pre"})


def test_from_dict_rejects_unknown_fields():
    values = {**make().to_dict(), "hidden_size": 24}
    with pytest.raises(ValueError, match="hidden_size"):
        ModelConfig.from_dict(values)


@pytest.mark.parametrize(
    "group, key, hint",
    [("attention", "num_head", "num_heads"), ("ffn", "d_fff", "d_ff"), ("norm", "epsilon", None)],
)
def test_from_dict_rejects_unknown_nested_fields(group, key, hint):
    values = make().to_dict()
    values[group] = {**values[group], key: 1}
    with pytest.raises(ValueError, match=rf"Unknown {group} fields \['{key}'\]") as err:
        ModelConfig.from_dict(values)
    if hint:
        assert f"did you mean {hint!r}" in str(err.value)


def test_from_dict_rejects_fields_of_another_position_kind():
    values = make().to_dict()
    values["positions"] = {"kind": "sinusoidal", "offset": 2}
    with pytest.raises(ValueError, match=r"Unknown positions \(sinusoidal\) fields \['offset'\]"):
        ModelConfig.from_dict(values)


def test_from_dict_validates():
    with pytest.raises(ValueError, match="num_heads"):
        ModelConfig.from_dict({**make().to_dict(), "d_model": 26})
