"""XLNet (arch="two_stream", families/xlnet.py): parity with HF's XLNetLMHeadModel (fixture by
tests/hf_fixtures/xlnet_fixtures.py), the hf.save -> hf.load round trip, preset counts, the
PLM objective's masks against a NumPy construction written here, the permutation property
of the query stream, one batch overfitted through the train step, and the errors."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_hf import FAST_COMPILE, TOL, _apply, _compare_generated, fixture_dir

from transformer_jax import hf, models, presets
from transformer_jax.config import LearnedPositions, RelativeSinusoidalPositions
from transformer_jax.data import objectives
from transformer_jax.sampling import generate
from transformer_jax.train import steps


@pytest.fixture(scope="module")
def loaded():
    config, params = hf.load(fixture_dir("xlnet"))
    return config, params, dict(np.load(fixture_dir("xlnet") + "/reference.npz"))


def test_content_and_two_stream_logits_match_hf(loaded):
    """Content logits of a left-padded batch with token types 0/1/2 (segment term) and
    clamp_len 5 < 11 tokens, and query-stream logits for a random factorisation order with 4
    targets per row (perm_mask, target_mapping as HF takes them): within 1e-5."""
    config, params, ref = loaded
    assert config.positions == RelativeSinusoidalPositions(clamp_len=5)
    real = ref["attention_mask"].astype(bool)

    def both(model, tokens, types, valid, perm_mask, target_mapping):  # one compiled program
        content = model(tokens, types, valid=valid)
        return content, model(
            tokens, types, valid=valid, perm_mask=perm_mask, target_mapping=target_mapping
        )

    args = (ref["input_ids"], ref["token_type_ids"], real)
    logits, plm = _apply(
        params, *args, ref["plm_perm_mask"], ref["plm_target_mapping"], config=config, method=both
    )
    diff = np.abs(np.asarray(logits) - ref["logits"])[real]
    assert diff.max() < TOL, f"content: max abs diff {diff.max():.3g}"
    assert plm.shape == ref["plm_logits"].shape == (2, 4, config.vocab_size)
    diff = np.abs(np.asarray(plm) - ref["plm_logits"])
    assert diff.max() < TOL, f"two-stream: max abs diff {diff.max():.3g}"


def test_greedy_tokens_match_hf_without_mems(loaded):
    """Ragged prompts (5 and 7 tokens) continued the XLNet way equal HF's
    generate(..., use_mems=False) (the fixture checked that against a full recompute)."""
    config, params, ref = loaded
    eos = int(ref["gen_eos_id"])
    tokens, lengths = generate(
        config,
        params,
        ref["gen_prompts"],
        lengths=ref["gen_lengths"],
        max_new_tokens=ref["gen_tokens"].shape[1],
        temperature=0.0,
        eos_id=eos,
    )
    _compare_generated(tokens, lengths, ref["gen_tokens"], eos)


def test_save_then_load_is_bitwise(loaded, tmp_path):
    config, params, _ = loaded
    hf.save(config, params, str(tmp_path))
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["architectures"] == ["XLNetLMHeadModel"]
    assert (written["model_type"], written["clamp_len"], written["attn_type"]) == ("xlnet", 5, "bi")
    config2, params2 = hf.load(str(tmp_path))
    assert config2 == config
    flat = jax.tree_util.tree_leaves_with_path(params)
    flat2 = dict(jax.tree_util.tree_leaves_with_path(params2))
    assert len(flat) == len(flat2)
    for path, value in flat:
        assert np.array_equal(value, flat2[path]) and value.dtype == flat2[path].dtype, path


def test_spiece_tokenizer_encodes_as_transformers():
    """XLNet's spiece.model through the TextTokenizer interface: transformers' ids (accents
    stripped, whitespace collapsed, as its tokenizer_config.json asks) and special ids.
    Decoding differs from transformers' only in keeping <unk> (shown as ⁇) by design."""
    ref = json.loads(open(fixture_dir("xlnet") + "/tokenizer_reference.json").read())
    tok = hf.load_tokenizer(fixture_dir("xlnet"))
    assert type(tok).__name__ == "SentencePieceTokenizer" and tok.vocab_size == ref["vocab_size"]
    assert tok.encode_batch(ref["texts"]) == [tok.encode(t) for t in ref["texts"]] == ref["ids"]
    assert "naïve" in ref["texts"][2] and "naive" in ref["decoded"][2]
    specials = {n: getattr(tok, f"{n}_id") for n in ref["special"]}
    assert specials == ref["special"] == {
        "pad": 5, "unk": 0, "bos": 1, "eos": 2, "mask": 6, "cls": 3, "sep": 4
    }  # fmt: skip
    for ids, decoded in zip(ref["ids"], ref["decoded"], strict=True):
        if tok.unk_id not in ids:
            assert tok.decode(ids) == decoded


def test_hf_config_refusals():
    from transformer_jax.families import xlnet

    base = xlnet.to_hf_config(presets.get("xlnet-tiny"))
    for field, value in (("attn_type", "uni"), ("bi_data", True), ("same_length", True)):
        with pytest.raises(ValueError, match=field):
            xlnet.from_hf_config({**base, field: value})


# HF XLNetLMHeadModel / XLNetModel at the published sizes. Every layer has the same shapes,
# so the count is the one-layer model's plus (L - 1) copies of its layer (tracing the full
# depth costs seconds).
COUNTS = {
    "xlnet-base-cased": (116_750_336, 116_718_336),
    "xlnet-large-cased": (360_300_800, 360_268_800),
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_preset_counts(name):
    cfg = presets.get(name)
    one = cfg.replace(num_layers=1)
    for heads, expected in zip((True, False), COUNTS[name], strict=True):
        shapes = jax.eval_shape(
            lambda r, h=heads: models.init_params(one, r, heads=h), jax.random.key(0)
        )
        layer = models.count_params(shapes["encoder"]["layer_0"])
        assert models.count_params(shapes) + (cfg.num_layers - 1) * layer == expected


# ------------------------------------------------------------------------------------ PLM
def test_plm_masks_against_a_numpy_construction():
    """A packed row: example 1 (5 tokens), example 2 (7 tokens), 3 pads; K = 3 -> P = 5 slots,
    1 + 2 targets. Built here pair by pair from the definition: i may not attend to j when
    they are in different examples, or when j is a target and i is not a target or comes no
    earlier in the factorisation order than j."""
    segs = np.array([1] * 5 + [2] * 7 + [0] * 3)
    tokens = np.arange(10, 10 + len(segs)) * (segs > 0)
    batch = objectives.plm_batch(
        {"tokens": tokens[None], "segment_ids": segs[None]}, seed=3, step=7, row_ids=[4], k=3
    )
    rng = objectives.row_rng(3, 7, 4)
    rank, target = {}, set()
    for seg, n_targets in ((1, 1), (2, 2)):
        order = rng.permutation(np.flatnonzero(segs == seg))
        rank.update({int(p): r for r, p in enumerate(order)})
        target.update(int(p) for p in order[len(order) - n_targets :])
    length = len(segs)
    expected = np.zeros((length, length), bool)
    for i in range(length):
        for j in range(length):
            if segs[i] != segs[j]:
                expected[i, j] = True
            elif j in target and (i not in target or rank[j] >= rank[i]):
                expected[i, j] = True
    np.testing.assert_array_equal(batch["perm_mask"][0], expected)
    where = sorted(target)
    mapping = np.zeros((5, length), np.float32)
    mapping[np.arange(3), where] = 1.0
    np.testing.assert_array_equal(batch["target_mapping"][0], mapping)
    np.testing.assert_array_equal(batch["targets"][0], [*tokens[where], 0, 0])
    np.testing.assert_array_equal(batch["weights"][0], [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(batch["inputs"][0], tokens)


def _tiny(**changes):
    sizes = dict(vocab_size=64, d_model=32, ffn={"d_ff": 48}, max_len=32, num_layers=1)
    return presets.get("xlnet-tiny", **{**sizes, **changes})


def _params(config, scale=0.1):
    """Random parameters without compiling init (norm scales 1): seconds saved per test."""
    shapes = jax.eval_shape(lambda r: models.init_params(config, r), jax.random.key(0))
    rng = np.random.default_rng(0)

    def draw(path, s):
        if jax.tree_util.keystr(path).endswith("['scale']"):
            return np.ones(s.shape, np.float32)
        return (scale * rng.standard_normal(s.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def test_a_target_never_sees_its_own_token_or_later_ones():
    """Query-stream logits of target t stay the same when t's own token and every token after
    t in the factorisation order change; changing a non-target (before every target) moves
    every target's logits. One batch: the original row, one row per target, one control."""
    config = _tiny(num_layers=2)  # a later layer's content keys hold mixed tokens
    params = _params(config)
    length = 12
    segs = np.ones((1, length), np.int32)
    tokens = np.random.default_rng(0).integers(8, 64, (1, length))
    batch = objectives.plm_batch(
        {"tokens": tokens, "segment_ids": segs}, seed=0, step=0, row_ids=[0], k=3
    )
    perm, mapping = batch["perm_mask"][0], batch["target_mapping"][0]
    where = np.argmax(mapping, axis=1)  # [P] target positions
    num = len(where)
    rows = [tokens[0]]
    for p in where:  # t = position p: p itself and the targets p may not see
        row = tokens[0].copy()
        hidden = np.flatnonzero(perm[p] & np.isin(np.arange(length), where))
        assert p in hidden
        row[hidden] = (row[hidden] + 17) % 56 + 8
        rows.append(row)
    control = tokens[0].copy()
    context = np.setdiff1d(np.arange(length), where)[0]
    control[context] = (control[context] + 17) % 56 + 8
    rows.append(control)
    rows = np.stack(rows)
    n = len(rows)
    logits = np.asarray(
        _apply(
            params,
            rows,
            config=config,
            method=None,
            perm_mask=np.broadcast_to(perm, (n, length, length)),
            target_mapping=np.broadcast_to(mapping, (n, num, length)),
        )
    )  # [n, P, V]
    for t in range(num):
        np.testing.assert_allclose(logits[1 + t, t], logits[0, t], atol=1e-6, err_msg=f"t={t}")
    assert np.abs(logits[-1] - logits[0]).max(axis=-1).min() > 1e-4  # the control moves all


@pytest.mark.slow  # a training loop
def test_plm_overfits_one_batch_and_every_parameter_learns():
    config = _tiny()
    model = models.build(config)
    tx = optax.adam(1e-2)  # first update ~ lr * sign(grad): moves iff the gradient is non-zero
    state = steps.init_train_state(_params(config, scale=0.02), tx)
    fn = steps.make_train_step(
        model, tx, optax.constant_schedule(1e-2), objective="plm", axis_name=None
    )
    segs = np.ones((4, 16), np.int32)
    segs[1, 12:] = 0  # padding
    segs[2, 7:] = 2  # two packed examples
    tokens = np.random.default_rng(1).integers(8, 64, (4, 16)) * (segs > 0)
    batch = objectives.plm_batch(
        {"tokens": tokens, "segment_ids": segs}, seed=0, step=0, row_ids=range(4), k=4
    )
    # Two segments per row (XLNet's A/B pairs): only then do seg_embed and r_s_bias matter
    # (one segment adds the same score to every key of a query, which softmax ignores).
    batch["token_types"] = (np.arange(16) >= 8).astype(np.int32)[None].repeat(4, 0)
    rng = jax.random.key(1)
    step = jax.jit(fn).lower(state, batch, rng).compile(compiler_options=FAST_COMPILE)
    before = jax.device_get(state.params)
    state, first = step(state, batch, rng)
    after = dict(jax.tree_util.tree_leaves_with_path(jax.device_get(state.params)))
    for path, old in jax.tree_util.tree_leaves_with_path(before):
        name = jax.tree_util.keystr(path)
        assert np.isfinite(after[path]).all(), f"{name} is not finite after one step"
        assert (after[path] != old).any(), f"{name} got a zero gradient"
    for _ in range(59):
        state, m = step(state, batch, rng)
    final = steps.summarize(jax.device_get(m))
    assert float(first["loss"] / first["weight"]) > 3.0  # ~log(64) at init
    assert final["loss"] < 0.05 and final["accuracy"] == 1.0, final


# --------------------------------------------------------------------------------- errors
def test_invalid_mask_shapes_and_configs_raise():
    config = _tiny()
    model = models.build(config)
    params = jax.eval_shape(lambda r: models.init_params(config, r), jax.random.key(0))
    tokens = jnp.ones((2, 5), jnp.int32)
    apply = lambda **kw: jax.eval_shape(  # noqa: E731
        lambda p: model.apply({"params": p}, tokens, **kw), params
    )
    with pytest.raises(ValueError, match=r"perm_mask has shape \(2, 5, 4\).*\(2, 5, 5\)"):
        apply(perm_mask=jnp.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match=r"target_mapping has shape \(2, 5\)"):
        apply(target_mapping=jnp.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"target_mapping has shape \(2, 3, 6\)"):
        apply(target_mapping=jnp.zeros((2, 3, 6)))
    with pytest.raises(ValueError, match="arch='two_stream'"):
        config.replace(positions=LearnedPositions())
    with pytest.raises(ValueError, match="arch='two_stream'"):
        presets.get("gpt-tiny").replace(positions=RelativeSinusoidalPositions())
    with pytest.raises(ValueError, match="norm.residual"):
        config.replace(norm={"residual": "pre"})
    with pytest.raises(ValueError, match="scan_layers"):
        config.replace(scan_layers=True)  # the two-stream stack is not scanned (yet)
