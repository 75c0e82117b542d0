"""Learning-rate schedules against the paper's formula and hand-computed values."""

import jax
import numpy as np
import optax
import pytest

from transformer_jax.train.optimizer import decay_mask, make_optimizer
from transformer_jax.train.schedules import linear_warmup_rsqrt_decay, make_schedule, rsqrt_warmup


def test_rsqrt_warmup_matches_issue_values():
    sched = rsqrt_warmup(d_model=512, warmup_steps=4000)
    # optax counts updates from 0; the formula counts steps from 1.
    np.testing.assert_allclose(float(sched(0)), 1.7469e-07, rtol=1e-4)
    np.testing.assert_allclose(float(sched(3999)), 6.9877e-04, rtol=1e-4)
    np.testing.assert_allclose(float(sched(15999)), 3.4939e-04, rtol=1e-4)


@pytest.mark.parametrize("step", [1, 7, 100, 4000, 4001, 123456])
def test_rsqrt_warmup_formula(step):
    d, w, scale = 256, 1000, 2.0
    expected = scale * d**-0.5 * min(step**-0.5, step * w**-1.5)
    got = float(rsqrt_warmup(d, w, scale)(step - 1))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_linear_warmup_rsqrt_decay():
    sched = linear_warmup_rsqrt_decay(peak=1e-3, warmup_steps=10)
    np.testing.assert_allclose(float(sched(0)), 1e-4, rtol=1e-5)  # step 1 of 10
    np.testing.assert_allclose(float(sched(9)), 1e-3, rtol=1e-5)  # the peak at step 10
    np.testing.assert_allclose(float(sched(39)), 1e-3 * (10 / 40) ** 0.5, rtol=1e-5)


def test_schedule_errors_name_the_value():
    with pytest.raises(ValueError, match="warmup_steps=0"):
        rsqrt_warmup(512, 0)
    with pytest.raises(ValueError, match="'cosine'"):
        make_schedule("cosine", d_model=8, warmup_steps=1, learning_rate=1.0)


def test_weight_decay_skips_biases_and_norms():
    params = {"dense": {"kernel": np.ones((3, 2)), "bias": np.ones(2)}, "ln": {"scale": np.ones(3)}}
    assert decay_mask(params) == {
        "dense": {"kernel": True, "bias": False},
        "ln": {"scale": False},
    }
    # Real model trees: attention q/k/v biases are [heads, head_dim] and still not decayed.
    from transformer_jax import models, presets

    shapes = jax.eval_shape(
        lambda r: models.init_params(presets.get("bert-tiny"), r), jax.random.key(0)
    )
    mask = decay_mask(shapes)
    attn = mask["encoder"]["layer_0"]["self_attn"]
    assert attn["query"]["bias"] is False and attn["query"]["kernel"] is True
    assert shapes["encoder"]["layer_0"]["self_attn"]["query"]["bias"].ndim == 2
    assert mask["token_embed"]["embedding"] is True and mask["logits_bias"] is False
    flat = jax.tree_util.tree_leaves_with_path(mask)
    for path, decays in flat:
        name = path[-1].key
        assert decays == (name in ("kernel", "embedding")), (path, decays)
    # With zero gradients, AdamW moves only decayed parameters: p <- p - lr * wd * p.
    tx = make_optimizer(optax.constant_schedule(0.1), weight_decay=0.5)
    zeros = {
        "dense": {"kernel": np.zeros((3, 2)), "bias": np.zeros(2)},
        "ln": {"scale": np.zeros(3)},
    }
    updates, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates["dense"]["kernel"], -0.1 * 0.5 * np.ones((3, 2)), rtol=1e-6)
    np.testing.assert_allclose(updates["dense"]["bias"], 0.0)
    np.testing.assert_allclose(updates["ln"]["scale"], 0.0)
