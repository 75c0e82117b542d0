"""The pure train/eval steps: every objective overfits one batch (span corruption, with the
issue-10 families: test_hf_seq2seq_families.py); micro-batching and normalisation are
exact; non-finite updates are caught or skipped."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from transformer_jax import models, presets
from transformer_jax.train import steps
from transformer_jax.train.optimizer import make_optimizer

B, T = 4, 12


def _batch(objective: str, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(4, vocab, size=(B, T)).astype(np.int32)
    weights = np.ones((B, T), np.float32)
    weights[1, -3:] = 0.0  # a padded tail
    if objective == "clm":
        inputs = np.concatenate([np.full((B, 1), 2, np.int32), tokens[:, :-1]], axis=1)
        weights[:, 0] = 0.0  # every row starts with BOS: its first target is unpredictable
        return {"inputs": inputs, "targets": tokens, "weights": weights}
    if objective in ("mlm", "mlm_nsp"):
        chosen = rng.random((B, T)) < 0.3
        chosen[:, 0] = True
        inputs = np.where(chosen, 4, tokens).astype(np.int32)
        batch = {
            "inputs": inputs,
            "targets": tokens,
            "weights": chosen.astype(np.float32),
            "token_types": (np.arange(T) >= T // 2).astype(np.int32)[None].repeat(B, 0),
        }
        if objective == "mlm_nsp":
            batch["nsp_labels"] = np.array([0, 1, 1, 0], np.int32)
        return batch
    src = rng.integers(4, vocab, size=(B, T + 3)).astype(np.int32)
    dec_in = np.concatenate([np.full((B, 1), 2, np.int32), tokens[:, :-1]], axis=1)
    return {"inputs": src, "decoder_inputs": dec_in, "targets": tokens, "weights": weights}


def _setup(preset, objective, lr=3e-3, sgd=False, **kw):
    cfg = presets.get(preset, dropout_rate=0.0, attention_dropout_rate=0.0, vocab_size=64)
    model = models.build(cfg)
    sched = optax.constant_schedule(lr)
    tx = optax.sgd(sched) if sgd else make_optimizer(sched, b2=0.98, grad_clip_norm=1.0)
    state = steps.init_train_state(models.init_params(cfg, jax.random.key(0)), tx)
    step = steps.make_train_step(model, tx, sched, objective=objective, axis_name=None, **kw)
    return cfg, model, state, jax.jit(step)


@pytest.mark.slow  # 60 steps per architecture
@pytest.mark.parametrize(
    "preset,objective",
    [("gpt-tiny", "clm"), ("bert-tiny", "mlm_nsp"), ("bart-tiny", "denoise"),
     ("transformer-tiny", "seq2seq")],
)  # fmt: skip
def test_each_architecture_overfits_one_batch(preset, objective):
    # T5 / mT5 span corruption (and mBART, Marian, PLBART): test_hf_seq2seq_families.py's
    # test_overfits_one_batch_and_every_parameter_learns, one layer a stack, 60 steps.
    # Adam at 1e-2 (not the 3e-3 of 150 steps): 60 steps end at loss 1e-4 - 2e-3 (measured),
    # far under the bound; most of the test's time is compiling the step.
    num_steps = 60
    cfg, model, state, step = _setup(preset, objective, lr=1e-2)
    batch = _batch(objective, cfg.vocab_size)
    rng = jax.random.key(1)
    first = None
    for _ in range(num_steps):
        state, m = step(state, batch, rng)
        first = float(m["loss"] / m["weight"]) if first is None else first
    final = steps.summarize(jax.device_get(m))
    assert first > 3.0  # ~log(64) at init
    assert final["loss"] < 0.05, final
    assert final["accuracy"] == 1.0
    if objective == "mlm_nsp":
        assert final["nsp_accuracy"] == 1.0 and final["nsp_loss"] < 0.05
    assert int(state.step) == num_steps


def test_grad_accumulation_equals_one_big_batch():
    # Plain SGD: the parameter change is the gradient itself (Adam's first step would be
    # ~lr·sign(g), which amplifies float noise in near-zero gradients).
    cfg, model, state, step1 = _setup("gpt-tiny", "clm", lr=1.0, sgd=True)
    *_, step2 = _setup("gpt-tiny", "clm", lr=1.0, sgd=True, grad_accum_steps=2)
    batch = _batch("clm", cfg.vocab_size)
    batch["weights"][3, :] = 0.0  # uneven weights across micro-batches
    s1, m1 = step1(state, batch, jax.random.key(0))
    s2, m2 = step2(state, batch, jax.random.key(0))
    np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(m1["grad_norm"]), float(m2["grad_norm"]), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_loss_is_the_mean_over_weighted_tokens():
    """The step's gradient is that of sum(w * nll) / sum(w), computed independently."""
    cfg, model, state, step = _setup("gpt-tiny", "clm", lr=0.0)
    batch = _batch("clm", cfg.vocab_size)

    def mean_loss(params):
        logits = model.apply({"params": params}, jnp.asarray(batch["inputs"]))
        logp = jax.nn.log_softmax(logits)
        nll = -jnp.take_along_axis(logp, jnp.asarray(batch["targets"])[..., None], -1)[..., 0]
        return jnp.sum(nll * batch["weights"]) / jnp.sum(batch["weights"])

    # Jitted: op-by-op (eager) grad of the whole model compiles every primitive on its own.
    loss, grads = jax.jit(jax.value_and_grad(mean_loss))(state.params)
    _, m = step(state, batch, jax.random.key(0))
    np.testing.assert_allclose(float(m["grad_norm"]), float(optax.global_norm(grads)), rtol=1e-5)
    np.testing.assert_allclose(float(m["nll"] / m["weight"]), float(loss), rtol=1e-6)


def test_nonfinite_update_is_flagged_or_skipped():
    cfg, model, state, step = _setup("gpt-tiny", "clm")
    *_, skip_step = _setup("gpt-tiny", "clm", skip_nonfinite=True)
    bad = jax.tree.map(lambda p: p, state)
    leaf = bad.params["token_embed"]["embedding"]
    bad = bad.replace(
        params={**bad.params, "token_embed": {"embedding": leaf.at[5, 0].set(jnp.nan)}}
    )
    batch = _batch("clm", cfg.vocab_size)
    batch["inputs"][0, 0] = 5
    _, m = step(bad, batch, jax.random.key(0))
    assert float(m["finite"]) == 0.0
    new, m = skip_step(bad, batch, jax.random.key(0))
    assert float(m["finite"]) == 0.0 and int(new.skipped) == 1 and int(new.step) == 1
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(bad.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # update skipped


def test_logged_learning_rate_follows_applied_updates_after_a_skip():
    """optax advances its schedule only on applied updates; the logged rate must match."""
    cfg = presets.get("gpt-tiny", dropout_rate=0.0, attention_dropout_rate=0.0, vocab_size=64)
    model = models.build(cfg)
    sched = optax.linear_schedule(1.0, 0.0, 10)  # lr(count) = 1 - count / 10
    tx = optax.sgd(sched)
    state = steps.init_train_state(models.init_params(cfg, jax.random.key(0)), tx)
    step = jax.jit(
        steps.make_train_step(
            model, tx, sched, objective="clm", skip_nonfinite=True, axis_name=None
        )
    )
    good = _batch("clm", cfg.vocab_size)
    bad = {**good, "weights": good["weights"] * np.nan}  # a NaN loss: the update is skipped
    state, m = step(state, good, jax.random.key(0))
    assert float(m["learning_rate"]) == pytest.approx(1.0)  # count 0
    state, m = step(state, bad, jax.random.key(0))
    assert float(m["finite"]) == 0.0 and int(state.skipped) == 1
    state, m = step(state, good, jax.random.key(0))
    assert int(state.step) == 3
    assert float(m["learning_rate"]) == pytest.approx(0.9)  # the second applied update: count 1


@pytest.mark.parametrize(
    "preset,objective,smoothing",
    [("codegen-tiny", "clm", 0.1), ("bert-tiny", "mlm_nsp", 0.0)],
)  # an untied head with a bias; the MLM transform + norm + logits bias, and NSP
def test_chunked_loss_equals_plain_loss_and_gradient(preset, objective, smoothing):
    """loss_chunk_size > 0 (losses.chunked_token_stats) gives the plain loss's sums and
    gradient; 5 does not divide the 48 tokens, so the padded tail chunk is covered too."""
    kw = {"num_layers": 1, "vocab_size": 64, "dropout_rate": 0.0}
    if objective == "mlm_nsp":
        kw["heads"] = {"num_labels": 2}
    cfg = presets.get(preset, **kw)
    model = models.build(cfg)
    params = models.init_params(cfg, jax.random.key(0))
    batch = _batch(objective, cfg.vocab_size)

    def grads(chunk):
        def loss_fn(params):
            stats = steps.forward_stats(
                model,
                params,
                batch,
                objective=objective,
                label_smoothing=smoothing,
                loss_chunk_size=chunk,
            )
            return stats["loss"] + stats.get("nsp_loss", 0.0), stats

        return jax.grad(loss_fn, has_aux=True)

    # One jit, one compile for both paths.
    (g_plain, plain), (g_chunked, chunked) = jax.jit(lambda p: (grads(0)(p), grads(5)(p)))(params)
    for key in plain:
        np.testing.assert_allclose(float(chunked[key]), float(plain[key]), rtol=1e-6, err_msg=key)
    assert float(plain["loss"]) > 10.0  # a real loss, not an all-padding batch
    for a, b in zip(jax.tree.leaves(g_chunked), jax.tree.leaves(g_plain), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_auto_loss_chunk_size_chunks_past_a_gibibyte_of_logits_or_32_mib_on_cpu():
    auto = steps.resolve_loss_chunk_size
    chunk = steps.AUTO_CHUNK_TOKENS
    assert auto(-1, 8 * 256, 8192, "gpu") == 0  # 64 MiB of float32 logits: the plain loss
    assert auto(-1, 8 * 1024, 32768, "tpu") == 0  # exactly 1 GiB
    assert auto(-1, 8 * 1024, 128256, "gpu") == chunk  # 3.9 GiB: chunked
    assert auto(-1, 8 * 256, 8192, "cpu") == chunk  # 64 MiB on a CPU: chunked
    assert auto(-1, 4 * 12, 512, "cpu") == 0  # the tests' tiny models: plain
    assert auto(0, 8 * 1024, 128256) == 0 and auto(256, 16, 64) == 256  # explicit values
    from transformer_jax.train import run_config

    config = run_config.default_config()
    assert config.loss_chunk_size == -1
    run_config.validate(config)
    config.loss_chunk_size = -2
    with pytest.raises(ValueError, match="config.loss_chunk_size=-2: must be an int"):
        run_config.validate(config)
