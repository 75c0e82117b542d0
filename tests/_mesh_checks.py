"""Mesh-mode checks on 8 forced host devices, run by tests/test_sharding.py in a subprocess
(the device count is fixed when JAX starts). Prints OK at the end; any failure raises.

1. A mesh (data 2, fsdp 2, tensor 2) train step with scan_layers and remat equals the pmap
   step over 8 devices (unscanned model, same initial state and global batches): losses and
   final parameters within 1e-5.
2. Every parameter and Adam moment has the per-device shard shape that the rules table
   implies (written out below by hand), i.e. FSDP and tensor sharding really happen.
3. The sharded state saved at step 1 (orbax, shard by shard, async while step 2 donates its
   buffers) resumes on a mesh (4, 2, 1) in the other layer layout (unscanned) and on one
   device: step 2 gives the same loss as the uninterrupted runs. Read straight onto another
   mesh in its own layout, every array has the target sharding and the saved values. A
   sharded save that fails before its manifest is a CheckpointSaveError, never trusted.
4. hf.load(mesh=) places every tensor of a Hugging Face fixture in the rules' sharding with
   the values of the unsharded load, bit for bit; greedy `generate` with those sharded
   params gives the tokens of the unsharded params.
"""

import sys
import tempfile

import jax
import numpy as np
import optax

from transformer_jax import models, presets
from transformer_jax.train import sharding, steps
from transformer_jax.train.checkpoints import Checkpoints
from transformer_jax.train.optimizer import make_optimizer
from transformer_jax.train.parallel import PmapRunner

assert jax.device_count() == 8, jax.devices()

D, N, H, F, V, T = 32, 4, 8, 64, 64, 10
cfg = presets.get(
    "gpt-tiny", d_model=D, num_heads=N, d_ff=F, num_layers=2, vocab_size=V, max_len=16,
    dropout_rate=0.0, attention_dropout_rate=0.0,
)  # fmt: skip
scanned_cfg = cfg.replace(scan_layers=True, remat="dots")
remat_cfg = cfg.replace(remat="full")  # the resumed runs: per-layer, rematerialised
sched = optax.constant_schedule(3e-3)
# eps 1e-6, not 1e-9: the key bias's true gradient is 0 (softmax ignores a per-query
# constant), and Adam would scale two runs' different float noise there up to lr-sized steps.
tx = make_optimizer(sched, b2=0.98, eps=1e-6, grad_clip_norm=1.0)
kw = dict(objective="clm", label_smoothing=0.1)


def step_fns(model_cfg, axis_name):
    model = models.build(model_cfg)
    train = steps.make_train_step(model, tx, sched, axis_name=axis_name, **kw)
    return train, steps.make_eval_step(model, objective="clm", axis_name=axis_name)


def batch(seed):
    rng = np.random.default_rng(seed)
    return {
        "inputs": rng.integers(1, V, size=(8, T)).astype(np.int32),
        "targets": rng.integers(1, V, size=(8, T)).astype(np.int32),
        "weights": (rng.random((8, T)) < 0.7).astype(np.float32),  # uneven per device
    }


batches = [batch(0), batch(1)]
rng = jax.random.key(0)  # the init's key and the steps' dropout key (dropout is off)
# One jitted program each (what train.py's runner does for so small a model): eager init on
# 8 devices compiles a program per parameter shape and per op.
state0 = jax.jit(lambda r: steps.init_train_state(models.init_params(cfg, r), tx))(rng)
scanned0 = jax.jit(lambda p: steps.init_train_state(models.stack_layers(p), tx))(state0.params)

# 1. pmap (8 devices, unscanned) vs mesh 2x2x2 (scanned, remat).
pmap = PmapRunner(*step_fns(cfg, "batch"))
ps, p_losses = pmap.place(state0), []
for b in batches:
    ps, m = pmap.train(ps, b, rng)
    p_losses.append(float(pmap.single(m)["loss"]))

mesh = sharding.make_mesh(2, 2, 2)
runner = sharding.MeshRunner(
    *step_fns(scanned_cfg, None), jax.eval_shape(lambda: scanned0), scanned_cfg, mesh
)
ms, m_losses = runner.place(scanned0), []
for i, b in enumerate(batches):
    ms, m = runner.train(ms, b, rng)
    m_losses.append(float(m["loss"]))
    if i == 0:  # 3. saved after step 1, sharded, in the scanned layout
        workdir = tempfile.mkdtemp()
        ckpt = Checkpoints(workdir, async_save=True)
        ckpt.save(1, ms)  # the next step donates these buffers while the save is written
ckpt.close()
np.testing.assert_allclose(m_losses, p_losses, rtol=1e-5)
p_params = models.stack_layers(jax.device_get(pmap.single(ps.params)))
for (path, a), b in zip(
    jax.tree_util.tree_flatten_with_path(p_params)[0], jax.tree.leaves(ms.params), strict=True
):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, err_msg=str(path))

# 2. Per-device shard shapes: FSDP (fsdp=2) splits the model width D, tensor (2) splits
# heads, the MLP width and the vocabulary; biases and norms stay whole. L = 2 layers.
L = 2
expected = {
    "token_embed/embedding": (V // 2, D // 2),
    "decoder/embed/pos_embed/embedding": (16, D),
    "decoder/layers/self_attn/query/kernel": (L, D // 2, N // 2, H),
    "decoder/layers/self_attn/key/kernel": (L, D // 2, N // 2, H),
    "decoder/layers/self_attn/out/kernel": (L, N // 2, H, D // 2),
    "decoder/layers/self_attn/query/bias": (L, N, H),
    "decoder/layers/ffn/wi/kernel": (L, D // 2, F // 2),
    "decoder/layers/ffn/wo/kernel": (L, F // 2, D // 2),
    "decoder/layers/ffn/wi/bias": (L, F),
    "decoder/final_norm/scale": (D,),
}


def flat(tree):
    return {
        "/".join(str(k.key) for k in p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


params = flat(ms.params)
adam = ms.opt_state[1][0]  # chain(clip, adamw) -> adamw's ScaleByAdamState
for name, tree in (("params", params), ("mu", flat(adam.mu)), ("nu", flat(adam.nu))):
    assert set(expected) <= set(tree), sorted(tree)
    for path, shard in expected.items():
        x = tree[path]
        got = {s.data.shape for s in x.addressable_shards}
        assert got == {shard}, (name, path, got, shard)
        per_device = x.addressable_shards[0].data.nbytes
        assert per_device * np.prod(x.shape) == x.nbytes * np.prod(shard), (name, path)

# 3. Resume the step-1 checkpoint on a 4x2x1 mesh, unscanned, and on one device.
abstract = jax.eval_shape(lambda: state0)
restored = Checkpoints(workdir, async_save=False).restore(1, abstract)  # relayout on read
runner2 = sharding.MeshRunner(
    *step_fns(remat_cfg, None), abstract, remat_cfg, sharding.make_mesh(4, 2, 1)
)
s2, m = runner2.train(runner2.place(restored), batches[1], rng)
np.testing.assert_allclose(float(m["loss"]), m_losses[1], rtol=1e-5)
one = jax.jit(step_fns(cfg, None)[0])
s1, m = one(jax.device_put(restored, jax.devices()[0]), batches[1], rng)
np.testing.assert_allclose(float(m["loss"]), m_losses[1], rtol=1e-5)
# ... and ends at the uninterrupted run's parameters (per-layer vs stacked).
want = jax.tree.leaves(models.unstack_layers(jax.device_get(ms.params)))
for a, b in zip(want, jax.tree.leaves(jax.device_get(s2.params)), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-5)
# Read straight onto a (1, 4, 2) mesh in the stored (scanned) layout: no host copy.
mesh3 = sharding.make_mesh(1, 4, 2)
abstract_scanned = jax.eval_shape(lambda: scanned0)
target = sharding.state_shardings(
    abstract_scanned, sharding.param_shardings(scanned_cfg, mesh3), mesh3
)
placed = Checkpoints(workdir, async_save=False).restore(1, abstract_scanned, shardings=target)
host = Checkpoints(workdir, async_save=False).restore(1, abstract_scanned)
for (path, a), b, want_sharding in zip(
    jax.tree_util.tree_flatten_with_path(placed)[0], jax.tree.leaves(host),
    jax.tree.leaves(target), strict=True,
):  # fmt: skip
    assert a.sharding == want_sharding, (path, a.sharding, want_sharding)
    np.testing.assert_array_equal(np.asarray(a), b, err_msg=str(path))

# Crash safety of sharded saves: a save that fails before its manifest (here: while the
# file digests are computed) raises CheckpointSaveError and is never trusted; saving that
# step again moves the leftover to untrusted/, and retention keeps the newest step only.
import os  # noqa: E402

from transformer_jax.train import checkpoints as C  # noqa: E402

ck = Checkpoints(tempfile.mkdtemp(), async_save=True, max_to_keep=1)
ck.save(1, ms)
ck.wait()
digests = C.file_digests
C.file_digests = lambda step_dir: (_ for _ in ()).throw(OSError(28, "No space left on device"))
ck.save(2, ms)
try:
    ck.wait()
    raise AssertionError("the failed sharded save did not raise")
except C.CheckpointSaveError as e:
    assert "step 2" in str(e) and "No space left on device" in str(e), e
C.file_digests = digests
assert ck.step_status() == {1: "trusted", 2: "no_manifest"} and ck.latest_step() == 1
ck.save(2, ms)
ck.close()
assert ck.step_status() == {2: "trusted"}, ck.step_status()
assert os.listdir(os.path.join(ck.directory, C.UNTRUSTED_DIR))[0].startswith("2-replaced")

# 4. hf.load onto the 2x2x2 mesh == the unsharded load; sharded greedy decoding.
from transformer_jax import hf  # noqa: E402
from transformer_jax.sampling import generate  # noqa: E402

fixture = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_fixtures", "llama")
hf_cfg, ref = hf.load(fixture)
_, got = hf.load(fixture, mesh=mesh)
rules = sharding.param_shardings(hf_cfg, mesh)
for (path, a), b, want_sharding in zip(
    jax.tree_util.tree_flatten_with_path(ref)[0], jax.tree.leaves(got), jax.tree.leaves(rules),
    strict=True,
):  # fmt: skip
    assert b.sharding == want_sharding, (path, b.sharding, want_sharding)
    assert b.dtype == a.dtype and np.array_equal(np.asarray(b), a), path
assert sum(not x.is_fully_replicated for x in jax.tree.leaves(got)) > 10
prompts = [[1, 5, 9], [1, 7]]
want_tokens = generate(hf_cfg, ref, prompts, max_new_tokens=4, temperature=0.0)
got_tokens = generate(hf_cfg, got, prompts, max_new_tokens=4, temperature=0.0)
np.testing.assert_array_equal(got_tokens[0], want_tokens[0])
np.testing.assert_array_equal(got_tokens[1], want_tokens[1])
print("OK")
sys.stdout.flush()
