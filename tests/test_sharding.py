"""Mesh mode (transformer_jax.train.sharding), scan over layers and rematerialisation.

The mesh checks need 8 devices, fixed when JAX starts: tests/_mesh_checks.py runs them in one
subprocess (mesh step == pmap step, shard shapes from the rules table, resharded resume,
sharded checkpoints, hf.load onto a mesh); tests/_multihost_worker.py runs as 2 processes x 4
devices (multi-host training and a sharded checkpoint written by both).
The rest run here on one device: scanned == unscanned (logits, gradients, cached decoding),
remat changes nothing, the layout conversions, the checkpoint relayout, and bad inputs."""

import functools
import os
import subprocess
import sys

import _robustness_util as U
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from transformer_jax import models, presets
from transformer_jax.train import run_config, sharding, steps
from transformer_jax.train.checkpoints import CheckpointMismatchError, Checkpoints

HERE = os.path.dirname(__file__)


@pytest.mark.slow
def test_mesh_checks_on_8_devices():
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "_mesh_checks.py")],
        env=U.env(devices=8),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")


def _random_params(cfg, seed):
    """Parameters of `cfg` without compiling its init: shapes from eval_shape, values
    N(0, 0.1) (norm scales 1 + that), per-layer layout."""
    shapes = jax.eval_shape(lambda r: models.init_params(cfg, r), jax.random.key(0))
    rng = np.random.default_rng(seed)

    def fill(path, s):
        x = 0.1 * rng.standard_normal(s.shape).astype(np.float32)
        return x + 1.0 if str(path[-1].key) == "scale" else x

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _decoder(pattern=("local", "global", "local")):
    # local/global layers: the scanned stack picks each layer's mask from a scanned flag
    return presets.get(
        "gpt-tiny", d_model=32, num_heads=4, d_ff=48, num_layers=len(pattern), vocab_size=64,
        max_len=16, dropout_rate=0.0, attention_dropout_rate=0.0,
        attention={"pattern": pattern, "window": 3 if "local" in pattern else None},
    )  # fmt: skip


@functools.partial(jax.jit, static_argnums=0)
def _logits_and_grads(cfg, params, tokens):
    def loss(p):
        logits = models.build(cfg).apply({"params": p}, tokens)  # [B, T, V]
        return jnp.sum(jnp.sin(logits)), logits

    return jax.grad(loss, has_aux=True)(params)[::-1]


@functools.partial(jax.jit, static_argnums=0)
def _decode_prompt_then_one(cfg, params, tokens):
    """Prompt tokens[:, :-1] into an empty cache, then the last token: its logits [B, V]."""
    model = models.build(cfg)
    b, t = tokens.shape
    cache = models.init_cache(cfg, b, t + 1)
    pos = jnp.broadcast_to(jnp.arange(t), (b, t))  # [B, T]
    _, cache = model.apply({"params": params}, tokens[:, :-1], pos[:, :-1], cache, method="decode")
    last, _ = model.apply({"params": params}, tokens[:, -1:], pos[:, -1:], cache, method="decode")
    return last[:, 0]


def test_scanned_and_remat_equal_unscanned_logits_grads_and_cache():
    cfg = _decoder()
    params = _random_params(cfg, 1)
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 64, size=(2, 7)))  # [B, T]
    ref_logits, ref_grads = _logits_and_grads(cfg, params, tokens)
    # (scan alone: the cache check below; dots and the per-layer remat: tests/_mesh_checks.py)
    for scan, remat in ((True, "full"),):
        c = cfg.replace(scan_layers=scan, remat=remat)
        logits, grads = _logits_and_grads(c, models.convert_layers(params, scan), tokens)
        np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
        grads = models.convert_layers(grads, False)
        for (path, a), b in zip(
            jax.tree_util.tree_flatten_with_path(ref_grads)[0], jax.tree.leaves(grads),
            strict=True,
        ):  # fmt: skip
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"{c} {path}")
    # Cached decoding through the scanned stack (caches stacked per layer) equals uncached.
    sc = cfg.replace(scan_layers=True)
    last = _decode_prompt_then_one(sc, models.stack_layers(params), tokens)
    np.testing.assert_allclose(last, ref_logits[:, -1], atol=1e-5)


def test_seq2seq_scanned_equals_unscanned():
    cfg = presets.get("bart-tiny", vocab_size=64, dropout_rate=0.0, attention_dropout_rate=0.0)
    params = _random_params(cfg, 2)
    src = jnp.asarray([[5, 6, 7, 8, 9], [3, 4, 5, 0, 0]])  # [B, S] with padding
    tgt = jnp.asarray([[2, 5, 6], [2, 3, 0]])  # [B, T]
    ref = jax.jit(models.build(cfg).apply)({"params": params}, src, tgt)
    sc = cfg.replace(scan_layers=True, remat="full")
    got = jax.jit(models.build(sc).apply)({"params": models.stack_layers(params)}, src, tgt)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_stack_unstack_layers_round_trip_and_shapes():
    cfg = _decoder()
    params = _random_params(cfg, 0)
    stacked = models.stack_layers(params)
    scanned_shapes = jax.eval_shape(
        lambda r: models.init_params(cfg.replace(scan_layers=True), r), jax.random.key(0)
    )
    assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(jnp.shape, scanned_shapes)
    q = stacked["decoder"]["layers"]["self_attn"]["query"]["kernel"]  # [L, D, N, H]
    layer_2 = params["decoder"]["layer_2"]
    np.testing.assert_array_equal(q[2], layer_2["self_attn"]["query"]["kernel"])
    back = models.unstack_layers(stacked)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="not numbered"):
        models.stack_layers({"layer_0": {"w": 1.0}, "layer_2": {"w": 2.0}})


def test_logical_axes_follow_the_modules_and_leave_params_unchanged():
    cfg = _decoder()
    axes = models.logical_axes(cfg)
    attn = axes["decoder"]["layer_0"]["self_attn"]
    assert attn["query"]["kernel"] == P("embed", "heads", "head_dim")
    assert attn["out"]["kernel"] == P("heads", "head_dim", "embed")
    assert axes["decoder"]["layer_0"]["ffn"]["wo"]["kernel"] == P("mlp", "embed")
    assert axes["token_embed"]["embedding"] == P("vocab", "embed")
    assert axes["decoder"]["final_norm"]["scale"] == P()
    scanned = models.logical_axes(cfg.replace(scan_layers=True))
    assert scanned["decoder"]["layers"]["ffn"]["wi"]["kernel"] == P("layers", "embed", "mlp")
    # Recording the names leaves init_params as it was: plain arrays, no metadata boxes.
    params = jax.eval_shape(lambda r: models.init_params(cfg, r), jax.random.key(0))
    leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
    assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)


def test_mesh_spec_rules_and_indivisible_dims():
    mesh = jax.sharding.AbstractMesh((2, 2, 2), sharding.MESH_AXES)
    assert sharding.mesh_spec(P("embed", "heads", "head_dim"), (32, 4, 8), mesh) == P(
        "fsdp", "tensor", None
    )
    # 1 key/value head does not split over tensor 2: it stays whole.
    assert sharding.mesh_spec(P("embed", "kv_heads", "head_dim"), (32, 1, 8), mesh) == P(
        "fsdp", None, None
    )
    assert sharding.mesh_spec(P("batch"), (8, 10), mesh) == P(("data", "fsdp"), None)
    assert sharding.mesh_spec(P(), (5,), mesh) == P(None)


def test_bad_mesh_inputs_name_the_field_and_numbers():
    with pytest.raises(ValueError, match=r"config.mesh.*= 6 differs from the 8 devices"):
        sharding.mesh_shape(3, 2, 1, 8)
    with pytest.raises(ValueError, match=r"fixed axes \(3 devices\) do not divide the 8"):
        sharding.mesh_shape(3, -1, 1, 8)
    assert sharding.mesh_shape(2, -1, 2, 8) == (2, 2, 2)
    cfg = _decoder()
    with pytest.raises(ValueError, match=r"mesh.tensor=3 does not divide .*num_heads=4"):
        sharding.check_model(cfg, 3)
    with pytest.raises(ValueError, match=r"mesh.tensor=4 does not divide .*d_ff=42"):
        sharding.check_model(cfg.replace(ffn={"d_ff": 42}), 4)
    mesh = jax.sharding.AbstractMesh((2, 2, 1), sharding.MESH_AXES)
    with pytest.raises(ValueError, match=r"global batch of 6 rows does not split over data x"):
        sharding.check_batch(6, mesh)
    config = run_config.default_config()
    config.parallelism = "mesh"
    config.mesh.data = 3  # x fsdp -1: 3 does not divide this process's device count
    if jax.device_count() % 3:
        with pytest.raises(ValueError, match="config.mesh"):
            run_config.validate(config)
    config.parallelism = "tpu"
    with pytest.raises(ValueError, match=r"config.parallelism='tpu'"):
        run_config.validate(config)


def test_checkpoint_restores_into_the_other_layer_layout(tmp_path):
    cfg = _decoder()
    tx = optax.adam(1e-3)
    state = steps.init_train_state(_random_params(cfg, 0), tx)
    ckpt = Checkpoints(str(tmp_path / "unscanned"), async_save=False)
    ckpt.save(3, state)
    scanned_target = jax.eval_shape(
        lambda: steps.init_train_state(models.stack_layers(state.params), tx)
    )
    restored = ckpt.restore(3, scanned_target)  # per-layer on disk -> stacked
    want = models.stack_layers(jax.device_get(state.params))
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(jax.device_get(
            steps.init_train_state(want, tx))), strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    assert restored.opt_state[0].mu["decoder"]["layers"]["ffn"]["wi"]["kernel"].shape[0] == 3
    ckpt2 = Checkpoints(str(tmp_path / "scanned"), async_save=False)
    ckpt2.save(4, restored)
    back = ckpt2.restore(4, jax.eval_shape(lambda: state))  # stacked on disk -> per-layer
    for a, b in zip(jax.tree.leaves(back.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(a, b)
    # A real mismatch is still one: a stacked checkpoint of another depth.
    other = jax.eval_shape(lambda: steps.init_train_state(
        models.init_params(_decoder(("global", "global")), jax.random.key(0)), tx))  # fmt: skip
    with pytest.raises(CheckpointMismatchError):
        ckpt2.restore(4, other)


@pytest.mark.slow
def test_two_processes_train_save_sharded_and_match_one_process(tmp_path):
    """2 processes x 4 CPU devices (gloo): mesh steps with each process feeding its own rows
    equal the same steps on one device; the sharded checkpoint (each process wrote its shards,
    async, before the next step donated them; a killed save's leftover of that step moved
    aside first) reads back on one device as the reference state after that step, and
    resumes in place on the mesh; its manifest covers both processes' files and catches a
    changed byte."""
    import json
    import socket

    import _multihost_worker as W

    from transformer_jax.train.checkpoints import CheckpointCorruptError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    leftover = tmp_path / "checkpoints" / str(W.SAVE_AT)  # a killed save's: moved aside
    leftover.mkdir(parents=True)
    (leftover / "half-written").write_bytes(b"x")
    worker = os.path.join(HERE, "_multihost_worker.py")
    procs = [
        subprocess.Popen(
            [sys.executable, worker, str(i), str(port), str(tmp_path)],
            env=U.env(devices=4),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0 and out.strip().endswith("OK"), err[-3000:]
    got = json.loads((tmp_path / "losses.json").read_text())

    # The same steps on this process's one device, on whole global batches.
    step = jax.jit(W.train_step())
    state, losses, rng = W.init_state(), [], jax.random.key(1)
    for i in range(W.STEPS):
        state, m = step(state, W.batch(i), rng)
        losses.append(float(m["loss"]))
        if i + 1 == W.SAVE_AT:
            saved = jax.device_get(state)
    np.testing.assert_allclose(got["losses"], losses, rtol=1e-5)
    assert got["resumed"] == got["losses"][W.SAVE_AT :]  # bitwise: the same state and step

    directory = tmp_path / "checkpoints"
    ckpt = Checkpoints(str(directory), async_save=False)
    restored = ckpt.restore(W.SAVE_AT, jax.eval_shape(W.init_state))  # 8 devices -> 1
    for (path, a), b in zip(
        jax.tree_util.tree_flatten_with_path(saved)[0], jax.tree.leaves(restored), strict=True
    ):
        np.testing.assert_allclose(np.asarray(b), a, atol=1e-5, err_msg=str(path))
    (moved,) = os.listdir(directory / "untrusted")
    assert moved.startswith(f"{W.SAVE_AT}-replaced") and ckpt.trusted_steps() == [W.SAVE_AT]
    manifest = json.loads((directory / str(W.SAVE_AT) / "checksums.json").read_text())
    assert manifest["sharded"] and not any("sha256" in a for a in manifest["arrays"])
    shards = sorted(f for f in manifest["files"] if "/ocdbt.process_1/d/" in f)
    assert shards and any("/ocdbt.process_0/d/" in f for f in manifest["files"])
    path = directory / str(W.SAVE_AT) / shards[0]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptError, match=f"file {shards[0]} does not match"):
        ckpt.restore(W.SAVE_AT, jax.eval_shape(W.init_state))
