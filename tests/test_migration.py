"""No user loses a checkpoint: workdirs written by the code of parameter layout 1 (the flat
ModelConfig, before the grouped config; committed under tests/fixtures/legacy_v1 by
tests/fixtures/make_legacy_workdirs.py) restore, re-evaluate to their recorded numbers,
resume training and sample after the change; a short run from the same seed reproduces the
losses the old code recorded."""

from __future__ import annotations

import json
import os
import shutil
import sys

import flax
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from transformer_jax import migrate, models
from transformer_jax.config import ModelConfig
from transformer_jax.train import checkpoints, train_and_evaluate
from transformer_jax.train import workdir as wd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "legacy_v1")
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)
from _robustness_util import write_corpus  # noqa: E402

import sample  # noqa: E402

NAMES = ("gpt_tiny", "gpt_gated", "bart_tiny", "bert_tiny")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The corpus the fixtures were trained on (write_corpus is deterministic)."""
    return write_corpus(str(tmp_path_factory.mktemp("legacy_corpus")))


def _legacy(name: str, tmp_path) -> str:
    """A writable copy of the committed legacy workdir `name`."""
    dst = str(tmp_path / name)
    shutil.copytree(os.path.join(FIXTURES, name), dst)
    return dst


def _run_config(name: str, corpus, **changes) -> ml_collections.ConfigDict:
    """The run config the fixture recorded, pointed at this session's copy of the corpus."""
    with open(os.path.join(FIXTURES, name, wd.CONFIG_FILE)) as f:
        config = ml_collections.ConfigDict(json.load(f))
    config.train_files, config.eval_files = corpus
    config.peak_flops = 1e12  # MFU against a given peak: no start-up matmul measurement
    for key, value in changes.items():
        config[key] = value
    return config


def _metrics(workdir: str, split: str) -> dict[int, float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in rows if r["split"] == split}


def _raw_state(workdir: str, step: int) -> dict:
    """The state tree as stored (no migration), straight from orbax."""
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    return ocp.StandardCheckpointer().restore(path)


def _flat(tree) -> dict[str, np.ndarray]:
    return {
        "/".join(str(getattr(k, "key", k)) for k in p): np.asarray(x)
        for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


# ------------------------------------------------------------------------- configs
def test_legacy_model_configs_read_as_the_grouped_config():
    cfgs = {n: wd.read_model_config(os.path.join(FIXTURES, n)) for n in NAMES}
    with open(os.path.join(FIXTURES, "gpt_gated", wd.MODEL_CONFIG_FILE)) as f:
        assert "version" not in json.load(f)  # really the flat form of version 1
    gated = cfgs["gpt_gated"]
    assert gated.attention.num_heads == 2 and gated.attention.num_kv_heads == 1
    assert not gated.attention.qkv_bias and not gated.attention.out_bias and not gated.ffn.bias
    assert gated.ffn.gated and gated.ffn.activation == "silu" and gated.ffn.d_ff == 64
    assert gated.norm.kind == "rmsnorm" and gated.norm.residual == "pre" and gated.norm.final
    assert not gated.output.tie and gated.positions.kind == "learned"
    bart = cfgs["bart_tiny"]
    assert bart.arch == "encoder_decoder" and bart.num_decoder_layers == 1
    assert bart.positions.kind == "learned" and bart.positions.offset == 0 and bart.embed.norm
    bert = cfgs["bert_tiny"]
    assert bert.heads.pooler and bert.heads.mlm_transform and bert.heads.num_labels == 2
    assert bert.embed.type_vocab_size == 2 and bert.norm.eps == 1e-12 and bert.output.bias
    for cfg in cfgs.values():  # and they are written back in today's form, unchanged
        assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_a_newer_config_version_names_the_version(tmp_path):
    values = {**wd.read_model_config(os.path.join(FIXTURES, "gpt_tiny")).to_dict(), "version": 3}
    with pytest.raises(migrate.LayoutError, match=r"version 3 .*upgrade"):
        ModelConfig.from_dict(values)


# ------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("name", NAMES)
def test_legacy_params_restore_with_the_layout_migration(name):
    cfg, params, step = wd.load_params(os.path.join(FIXTURES, name))
    assert step == 4
    raw = _flat(_raw_state(os.path.join(FIXTURES, name), 4)["params"])
    got = _flat(params)
    assert len(got) == len(raw)
    renamed = migrate.migrate_paths(raw, 1)
    for path, x in got.items():
        np.testing.assert_array_equal(x, renamed[path], err_msg=path)  # bitwise, same values
    if cfg.ffn.gated:  # the activated branch kept its values under its new name
        np.testing.assert_array_equal(
            got["decoder/layer_0/ffn/wi_gate/kernel"], raw["decoder/layer_0/ffn/wi/kernel"]
        )
        np.testing.assert_array_equal(
            got["decoder/layer_0/ffn/wi/kernel"], raw["decoder/layer_0/ffn/wi_gate/kernel"]
        )


def test_a_layout_from_a_newer_version_is_refused(tmp_path):
    workdir = _legacy("gpt_gated", tmp_path)
    manifest_path = os.path.join(workdir, "checkpoints", "4", checkpoints.MANIFEST_FILE)
    with open(manifest_path) as f:
        manifest = json.load(f)
    assert "layout" not in manifest  # written before layouts were recorded: layout 1
    manifest["layout"] = migrate.PARAM_LAYOUT + 1
    with open(manifest_path, "w") as f:
        json.dump(manifest, f)
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r"step 4.*layout 3.*upgrade"):
        wd.load_params(workdir)


# ------------------------------------------------------------------------- numbers
@pytest.mark.slow  # train_and_evaluate runs
@pytest.mark.parametrize("name", ["gpt_gated", "bart_tiny", "bert_tiny"])
def test_legacy_workdir_reevaluates_to_its_recorded_loss(name, corpus, tmp_path):
    """A finished run re-evaluates on rerun: the migrated parameters compute the function the
    old code evaluated (for the gated model, with its two branches swapped back by name)."""
    workdir = _legacy(name, tmp_path)
    summary = train_and_evaluate(_run_config(name, corpus), workdir)
    recorded = _metrics(os.path.join(FIXTURES, name), "eval")[4]
    np.testing.assert_allclose(summary["eval"]["loss"], recorded, rtol=1e-5)
    with open(os.path.join(workdir, wd.MODEL_CONFIG_FILE)) as f:
        assert json.load(f)["version"] == 2  # rewritten in today's form once it fitted


@pytest.mark.slow  # train_and_evaluate runs
@pytest.mark.parametrize("name", ["gpt_tiny", "bart_tiny"])
def test_same_seed_same_losses_and_legacy_resume(name, corpus, tmp_path):
    """From scratch, today's code reproduces the per-step losses the old code recorded (same
    parameter paths, so the same initial values; the decoder-only and the encoder-decoder
    stacks, the latter covering the encoder's wiring too). For gpt_tiny also: resuming the old
    checkpoint (params and Adam moments migrated) continues exactly like the new run."""
    steps = 6 if name == "gpt_tiny" else 4
    fresh = str(tmp_path / "fresh")
    os.makedirs(fresh)
    shutil.copy2(os.path.join(FIXTURES, name, wd.TOKENIZER_FILE), fresh)
    train_and_evaluate(_run_config(name, corpus, num_train_steps=steps), fresh)
    new = _metrics(fresh, "train")
    old = _metrics(os.path.join(FIXTURES, name), "train")
    np.testing.assert_allclose([new[s] for s in range(1, 5)], [old[s] for s in range(1, 5)],
                               rtol=1e-5)  # fmt: skip
    if name != "gpt_tiny":
        return
    resumed = _legacy(name, tmp_path)
    summary = train_and_evaluate(_run_config(name, corpus, num_train_steps=6), resumed)
    assert summary["step"] == 6
    cont = _metrics(resumed, "train")
    np.testing.assert_allclose([cont[5], cont[6]], [new[5], new[6]], rtol=1e-5)
    with open(os.path.join(resumed, "checkpoints", "6", checkpoints.MANIFEST_FILE)) as f:
        assert json.load(f)["layout"] == migrate.PARAM_LAYOUT  # new saves: today's layout


def test_gated_optimizer_moments_follow_their_parameters(corpus, tmp_path):
    """Adam's moments are renamed with their parameters: the restored moments of the gate
    are the stored moments of the old `wi` (and vice versa)."""
    workdir = _legacy("gpt_gated", tmp_path)
    cfg = wd.read_model_config(workdir)
    raw = _flat(_raw_state(workdir, 4)["opt_state"])
    ckpt = checkpoints.Checkpoints(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        from transformer_jax.train import steps
        from transformer_jax.train.optimizer import make_optimizer

        tx = make_optimizer(lambda s: 1e-3, weight_decay=0.01, grad_clip_norm=1.0)
        target = jax.eval_shape(
            lambda r: steps.init_train_state(models.init_params(cfg, r), tx), jax.random.key(0)
        )
        state = ckpt.restore(4, target)
    finally:
        ckpt.close()
    got = _flat(flax.serialization.to_state_dict(state)["opt_state"])  # stored path names
    mu_gate = [p for p in got if p.endswith("layer_0/ffn/wi_gate/kernel") and "/mu/" in p]
    assert mu_gate, sorted(got)[:5]
    for path in mu_gate:
        old = path.replace("ffn/wi_gate/", "ffn/wi/")
        np.testing.assert_array_equal(got[path], raw[old])
        np.testing.assert_array_equal(got[old], raw[path])
        assert np.any(raw[old] != raw[path])  # the two moments differ, so a swap shows


def test_sample_py_samples_from_legacy_workdirs():
    options = dict(max_new_tokens=4, temperature=0.0, top_k=0, top_p=1.0, length_penalty=0.6)
    lines = sample.run(os.path.join(FIXTURES, "gpt_tiny"), ["abc de"], **options)
    assert "step 4" in lines[0] and lines[1].startswith("> abc de")
    lines = sample.run(os.path.join(FIXTURES, "bart_tiny"), ["abc de"], **options)
    assert lines[1] == "> abc de" and lines[2].startswith("= ")
