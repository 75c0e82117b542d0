"""Every recipe in configs/: loads, passes every check, builds its model (shapes only), and
documents the command that runs it."""

import glob
import importlib.util
import os

import jax
import pytest

from transformer_jax import data, models
from transformer_jax.train import run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def _load(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_issue_recipes_exist():
    names = {os.path.basename(p)[:-3] for p in RECIPES}
    assert {"gpt_tiny", "bert_tiny", "bart_tiny", "transformer_base_wmt14", "gpt2_small_lm1b",
            "bert_base"} <= names  # fmt: skip


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: os.path.basename(p))
def test_recipe_is_valid_and_documents_its_command(path):
    module = _load(path)
    name = os.path.basename(path)
    assert f"python train.py --config configs/{name}" in module.__doc__
    config = module.get_config()
    run_config.validate(config)
    data.validate_config(config)
    model_cfg = run_config.model_config(config, config.vocab_size)
    sentinels = 100 if config.objective == "span_corruption" else 0  # T5's, after the vocab
    assert model_cfg.vocab_size == config.vocab_size + sentinels
    assert model_cfg.dtype == config.dtype
    shapes = jax.eval_shape(lambda r: models.init_params(model_cfg, r), jax.random.key(0))
    assert models.count_params(shapes) > 0


def test_paper_base_recipe_matches_the_paper():
    c = _load(os.path.join(ROOT, "configs", "transformer_base_wmt14.py")).get_config()
    assert (c.warmup_steps, c.label_smoothing, c.schedule) == (4000, 0.1, "rsqrt")
    assert (c.b1, c.b2, c.eps) == (0.9, 0.98, 1e-9)
    m = run_config.model_config(c, c.vocab_size)
    assert (m.d_model, m.ffn.d_ff, m.num_heads, m.num_layers, m.dropout_rate) == (
        512,
        2048,
        8,
        6,
        0.1,
    )
    assert c.reverse_translation and c.dataset == "wmt14_translate/de-en"  # en -> de
