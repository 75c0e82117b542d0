"""Data parallelism: a pmapped step over 4 (forced host) devices equals the 1-device step on
the same global batch. Runs in a subprocess because the device count is fixed at JAX start."""

import os
import subprocess
import sys
import textwrap

import _robustness_util as U
import pytest

SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np, optax
    from transformer_jax.train.parallel import replicate, unreplicate
    from transformer_jax import models, presets
    from transformer_jax.train import steps
    assert jax.local_device_count() == 4, jax.devices()

    # One layer: the all-reduce of gradients and the per-device loss weighting are what is
    # compared; a second layer only doubles the two programs XLA compiles here.
    cfg = presets.get("gpt-tiny", dropout_rate=0.0, attention_dropout_rate=0.0, vocab_size=64,
                      num_layers=1)
    model = models.build(cfg)
    tx = optax.sgd(1.0)  # the parameter change is the gradient: compares gradients exactly
    # Initialised as one jitted program (op by op, eager init costs this process ~1 s more).
    params = jax.jit(models.init_params, static_argnums=0)(cfg, jax.random.key(0))
    state = steps.init_train_state(params, tx)
    rng = np.random.default_rng(0)
    batch = {
        "inputs": rng.integers(1, 64, size=(8, 10)).astype(np.int32),
        "targets": rng.integers(1, 64, size=(8, 10)).astype(np.int32),
        "weights": (rng.random((8, 10)) < 0.7).astype(np.float32),  # uneven per device
    }
    kw = dict(objective="clm", label_smoothing=0.1)
    single = jax.jit(steps.make_train_step(model, tx, optax.constant_schedule(1.0),
                                           axis_name=None, **kw))
    multi = jax.pmap(steps.make_train_step(model, tx, optax.constant_schedule(1.0), **kw),
                     axis_name="batch", in_axes=(0, 0, None))
    s1, s4 = state, replicate(state)
    sharded = {k: v.reshape(4, 2, 10) for k, v in batch.items()}  # [devices, per_device, T]
    for _ in range(2):
        s1, m1 = single(s1, batch, jax.random.key(0))
        s4, m4 = multi(s4, sharded, jax.random.key(0))
    m4 = unreplicate(m4)
    for key in ("loss", "nll", "weight", "grad_norm"):
        np.testing.assert_allclose(float(m1[key]), float(m4[key]), rtol=1e-5)
    p4 = unreplicate(s4.params)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(p4), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    print("OK")
    """
)


@pytest.mark.slow
def test_pmap_over_4_devices_equals_one_device():
    env = dict(os.environ, XLA_FLAGS=U.xla_flags(4), JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")
