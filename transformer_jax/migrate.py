"""Versioned migrations: configs and checkpoints written by earlier versions still load.

Two things have versions:
  * the model config dict (`ModelConfig.to_dict()["version"]`, config.CONFIG_VERSION);
    version 1 is the flat form of transformer_jax 0.1 (no "version" key);
  * the parameter layout of checkpoints (`PARAM_LAYOUT`, recorded in each checkpoint step's
    manifest; steps without it are layout 1).

Layout 1 -> 2 (the grouped config):
  * a gated feed-forward's branches swap names: the activated branch is now `wi_gate` (as
    HF's gate_proj, T5's wi_0) and the linear one `wi` (layout 1 had them the other way round).
  Learned position tables keep their path `<stack>/embed/pos_embed/embedding`.
Paths are "/"-joined and may carry any prefix ("params/...", "opt_state/.../mu/..."), so one
rename serves the parameters and every optimizer slot that mirrors them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

PARAM_LAYOUT = 2


class LayoutError(ValueError):
    """A checkpoint or config written in a layout/version this code cannot read."""


# --------------------------------------------------------------------------- configs
# Version-1 flat field -> where it lives now ("group.field" or a root field).
_LEGACY_FIELDS: dict[str, tuple[str, ...]] = {
    "num_heads": ("attention.num_heads",),
    "num_kv_heads": ("attention.num_kv_heads",),
    "attention_dropout_rate": ("attention.dropout_rate",),
    "use_bias": ("attention.qkv_bias", "attention.out_bias", "ffn.bias"),
    "d_ff": ("ffn.d_ff",),
    "activation": ("ffn.activation",),
    "gated_ffn": ("ffn.gated",),
    "position": ("positions.kind",),
    "position_offset": ("positions.offset",),
    "type_vocab_size": ("embed.type_vocab_size",),
    "embed_scale": ("embed.scale",),
    "embed_norm": ("embed.norm",),
    "norm": ("norm.kind",),
    "norm_placement": ("norm.residual",),
    "final_norm": ("norm.final",),
    "norm_eps": ("norm.eps",),
    "tie_embeddings": ("output.tie",),
    "output_bias": ("output.bias",),
    "pooler": ("heads.pooler",),
    "mlm_transform": ("heads.mlm_transform",),
    "num_labels": ("heads.num_labels",),
}
_ROOT_V1 = (
    "arch", "vocab_size", "d_model", "num_layers", "num_decoder_layers", "max_len",
    "dropout_rate", "pad_id", "dtype", "init_std",
)  # fmt: skip


def legacy_to_nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Version-1 flat fields -> {root field: value, group: {field: value}}. Unknown names
    raise a ValueError listing the known ones."""
    unknown = sorted(set(flat) - set(_LEGACY_FIELDS) - set(_ROOT_V1))
    if unknown:
        from transformer_jax.config import _ROOT_FIELDS, GROUPS

        known = sorted(_ROOT_FIELDS) + [f"{g}.<field>" for g in GROUPS] + sorted(_LEGACY_FIELDS)
        raise ValueError(f"Unknown ModelConfig fields {unknown}; known: {known}.")
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if key in _ROOT_V1:
            out[key] = value
            continue
        for target in _LEGACY_FIELDS[key]:
            group, field = target.split(".")
            out.setdefault(group, {})[field] = value
    positions = out.get("positions")
    if positions and positions.get("kind", "learned") != "learned":
        if positions.get("offset", 0):
            raise ValueError(
                f"position_offset={positions['offset']} applies to learned positions only, "
                f"not position={positions['kind']!r}."
            )
        positions.pop("offset", None)
    return out


def config_dict_to_current(values: Mapping[str, Any]) -> dict[str, Any]:
    """A stored model-config dict of any known version -> the current nested form (without
    the "version" key)."""
    from transformer_jax.config import CONFIG_VERSION

    values = dict(values)
    version = values.pop("version", 1)
    if not isinstance(version, int) or version > CONFIG_VERSION or version < 1:
        raise LayoutError(
            f"Model config version {version!r} is not one this code reads (1..{CONFIG_VERSION});"
            " it was written by a newer transformer_jax: upgrade the library to load it."
        )
    if version == 1:
        values = legacy_to_nested(values)
    norm = values.get("norm")
    if isinstance(norm, Mapping) and norm.get("parallel_norms") == 2:
        if norm.get("residual", "post") != "parallel":
            # Before issue 9, parallel_norms=2 was accepted and ignored outside the parallel
            # residual (the same parameters either way); it is a ValueError now, so configs
            # stored with it read as the model they always were.
            values["norm"] = {**norm, "parallel_norms": 1}
    return values


# --------------------------------------------------------------------------- parameters
# A step from layout v to v + 1 looks at every stored path (of one checkpoint, parameters
# and optimizer slots together) and returns the rename of one path, given as its segments.
Step = Callable[[list[str]], list[str]]


def _layout_1_to_2(paths: list[str]) -> Step:
    """Layout 1 named a gated feed-forward's activated branch `wi` and the linear one
    `wi_gate`; layout 2 the other way round. A feed-forward is gated iff it has both, so the
    stored paths alone decide (no model config needed); all other paths are unchanged."""

    def ffn_index(parts: list[str]) -> int | None:
        for i in range(len(parts) - 1):
            if parts[i] == "ffn" and parts[i + 1] in ("wi", "wi_gate"):
                return i
        return None

    gated = set()
    for path in paths:
        parts = path.split("/")
        i = ffn_index(parts)
        if i is not None and parts[i + 1] == "wi_gate":
            gated.add(tuple(parts[: i + 1]))

    def step(parts: list[str]) -> list[str]:
        i = ffn_index(parts)
        if i is None or tuple(parts[: i + 1]) not in gated:
            return parts
        return [*parts[: i + 1], "wi" if parts[i + 1] == "wi_gate" else "wi_gate", *parts[i + 2 :]]

    return step


_STEPS: dict[int, Callable[[list[str]], Step]] = {1: _layout_1_to_2}


def migration(paths: Iterable[str], layout: int) -> Callable[[str], str]:
    """The rename path -> today's path for a checkpoint stored in parameter layout `layout`
    whose "/"-joined paths are `paths`. Raises LayoutError for a layout this code cannot read."""
    if not isinstance(layout, int) or isinstance(layout, bool) or not 1 <= layout <= PARAM_LAYOUT:
        raise LayoutError(
            f"parameter layout {layout!r} is not one this code reads (1..{PARAM_LAYOUT}); it "
            "was written by a newer transformer_jax: upgrade the library, or load it with the "
            "version that wrote it."
        )
    paths = list(paths)
    steps: list[Step] = []
    for version in range(layout, PARAM_LAYOUT):
        step = _STEPS[version](paths)
        paths = ["/".join(step(p.split("/"))) for p in paths]
        steps.append(step)

    def rename(path: str) -> str:
        parts = path.split("/")
        for step in steps:
            parts = step(parts)
        return "/".join(parts)

    return rename


def migrate_paths(flat: Mapping[str, Any], layout: int) -> dict[str, Any]:
    """{path: value} stored in layout `layout` -> the same values under today's paths."""
    rename = migration(flat, layout)
    out = {rename(k): v for k, v in flat.items()}
    if len(out) != len(flat):
        raise LayoutError(f"Migrating layout {layout} -> {PARAM_LAYOUT} merged two paths.")
    return out
