"""T5 span corruption against a pure-Python construction written here: T5's noise-mask
counts, the inputs and targets built from the mask, the reconstruction of the original, and
determinism per (seed, step, row) on packed rows; with an HF T5 tokenizer, its own
`<extra_id_k>` as sentinels (the ids transformers gives them, tests/hf_fixtures/t5_tokenizer)."""

import dataclasses
import json
import os

import numpy as np
import pytest

from transformer_jax.data import objectives as obj
from transformer_jax.data import packing

V = 500
TOP = V + obj.NUM_SENTINELS - 1  # sentinel k = TOP - k: T5's layout, after the vocabulary
IDS = obj.SpecialIds(vocab_size=V, sentinels=obj.after_vocab_sentinels(V))
T5_TOKENIZER = os.path.join(os.path.dirname(__file__), "hf_fixtures", "t5_tokenizer")


def _spans(mask):
    """[(is_noise, start, end)] runs of a bool list, in order."""
    runs, start = [], 0
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            runs.append((bool(mask[start]), start, i))
            start = i
    return runs


def _reference(body, mask, sentinel=lambda k: TOP - k):
    """T5's construction, by hand: inputs keep non-noise tokens and put sentinel k where noise
    span k was; targets are sentinel k followed by span k, for every span."""
    inputs, targets, k = [], [], 0
    for is_noise, start, end in _spans(mask):
        if is_noise:
            inputs.append(sentinel(k))
            targets += [sentinel(k), *body[start:end]]
            k += 1
        else:
            inputs += body[start:end]
    return inputs, targets


def _reconstruct(inputs, targets, sentinels=range(V, V + obj.NUM_SENTINELS)):
    """The original body from (inputs, targets): each sentinel in the inputs -> its span."""
    spans, current = {}, None
    for t in targets:
        if t in sentinels:
            current = t
            spans[current] = []
        else:
            spans[current].append(t)
    out = []
    for t in inputs:
        out += spans[t] if t in spans else [t]
    return out


@pytest.mark.parametrize("length", [2, 3, 7, 20, 64, 127, 511])
def test_noise_mask_follows_t5(length):
    for seed in range(20):
        mask = obj.span_noise_mask(length, np.random.default_rng(seed))
        noise = min(max(round(length * 0.15), 1), length - 1)
        spans = max(round(noise / 3.0), 1)
        runs = _spans(list(mask))
        assert mask.dtype == bool and len(mask) == length and mask.sum() == noise
        assert [r[0] for r in runs] == [False, True] * spans  # alternating, non-noise first
    if length >= 64:  # T5's defaults: 15% noise in spans of mean length ~3
        lengths = [e - s for n, s, e in _spans(list(mask)) if n]
        assert abs(np.mean(lengths) - 3.0) < 0.5 and abs(mask.mean() - 0.15) < 0.01


def test_example_matches_the_python_construction_and_reconstructs():
    rng = np.random.default_rng(0)
    for trial in range(50):
        n = int(rng.integers(1, 200))
        body = rng.integers(IDS.num_special, V, n).astype(np.int32)
        example = np.append(body, IDS.eos)
        # The mask the example draws first from its generator, drawn again by hand.
        mask = obj.span_noise_mask(n, np.random.default_rng([trial]))
        inputs, targets = obj.span_corrupt_example(example, IDS, np.random.default_rng([trial]))
        want_in, want_tgt = _reference(list(body), list(mask))
        assert inputs.tolist() == want_in + [IDS.eos]
        assert targets.tolist() == want_tgt + [IDS.eos]
        assert _reconstruct(inputs[:-1].tolist(), targets[:-1].tolist()) == list(body)
        assert len(inputs) <= len(example) and len(targets) <= len(example)


def test_an_hf_t5_tokenizer_brings_its_own_sentinels():
    """Sentinel k is the id transformers' T5Tokenizer gives `<extra_id_k>` (the top 100 of its
    ids, <extra_id_0> last), and the model's vocabulary needs no ids after the tokenizer's."""
    from transformer_jax import hf
    from transformer_jax.train import run_config

    with open(os.path.join(T5_TOKENIZER, "tokenizer_reference.json")) as f:
        ref = json.load(f)
    tok = hf.load_tokenizer(T5_TOKENIZER)
    ids = obj.SpecialIds.from_tokenizer(tok)
    assert list(ids.sentinels) == ref["sentinels"] and ids.missing("span_corruption") == ["bos"]
    ids = dataclasses.replace(ids, bos=tok.pad_id)  # the decoder start (T5's config.json)
    assert ids.missing("span_corruption") == []
    for trial, text in enumerate(ref["texts"][:6]):
        body = tok.encode(text)
        mask = obj.span_noise_mask(len(body), np.random.default_rng([trial]))
        got_in, got_tgt = obj.span_corrupt_example(
            np.append(body, tok.eos_id), ids, np.random.default_rng([trial])
        )
        want_in, want_tgt = _reference(body, list(mask), lambda k: ref["sentinels"][k])
        assert got_in.tolist() == want_in + [tok.eos_id]
        assert got_tgt.tolist() == want_tgt + [tok.eos_id]
        assert set(want_tgt) & set(ref["sentinels"]) or len(body) < 2
    config = run_config.default_config()
    config.model, config.objective = "t5-tiny", "span_corruption"
    config.model_overrides.vocab_size = 168  # T5's layout: the model's 32,128 > 32,100 ids
    assert run_config.model_config(config, tok.vocab_size, own_sentinels=True).vocab_size == 168
    with pytest.raises(ValueError, match=r"168: .*\(160 \+ 100 span-corruption sentinels\)"):
        run_config.model_config(config, tok.vocab_size)  # without: 100 more ids after 160
    with pytest.raises(ValueError, match="span corruption needs sentinel ids"):
        obj.span_corrupt_example(np.array([5, 6, 1]), obj.SpecialIds(vocab_size=V), None)


def test_packed_batch_is_per_row_deterministic_and_reconstructs():
    rng = np.random.default_rng(1)
    examples = [np.append(rng.integers(IDS.num_special, V, int(rng.integers(5, 50))), IDS.eos)
                for _ in range(40)]  # fmt: skip
    rows = packing.pack_sequences(examples, 64)
    n = len(rows["tokens"])
    batch = obj.span_corruption_batch(rows, IDS, seed=3, step=5, row_ids=range(n))
    # Row r depends on (seed, step, r) only: the same rows alone, in another batch split.
    half = {k: v[n // 2 :] for k, v in rows.items()}
    alone = obj.span_corruption_batch(half, IDS, seed=3, step=5, row_ids=range(n // 2, n))
    for key in batch:
        np.testing.assert_array_equal(batch[key][n // 2 :], alone[key], err_msg=key)
    again = obj.span_corruption_batch(rows, IDS, seed=3, step=6, row_ids=range(n))
    assert not np.array_equal(batch["inputs"], again["inputs"])  # fresh noise each step
    for i in range(n):
        for k in range(1, rows["segment_ids"][i].max() + 1):
            original = rows["tokens"][i][rows["segment_ids"][i] == k]
            inputs = batch["inputs"][i][batch["inputs_segment_ids"][i] == k]
            targets = batch["targets"][i][batch["targets_segment_ids"][i] == k]
            body = _reconstruct(inputs[:-1].tolist(), targets[:-1].tolist())
            assert body + [IDS.eos] == original.tolist()
            dec = batch["decoder_inputs"][i][batch["targets_segment_ids"][i] == k]
            assert dec.tolist() == [IDS.bos, *targets[:-1].tolist()]
            assert batch["targets_positions"][i][batch["targets_segment_ids"][i] == k].tolist() \
                == list(range(len(targets)))  # fmt: skip
    np.testing.assert_array_equal(batch["weights"], batch["targets_segment_ids"] > 0)


def test_c4_recipe_raises_the_not_prepared_error(tmp_path):
    import importlib.util
    import os

    from transformer_jax import data

    path = os.path.join(os.path.dirname(__file__), "..", "configs", "t5_small_c4.py")
    spec = importlib.util.spec_from_file_location("t5_small_c4", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.data_dir = str(tmp_path)
    with pytest.raises(data.DatasetNotPreparedError, match=r"c4/en.*tfds build c4/en"):
        data.make_datasets(config, str(tmp_path / "w"), num_devices=1, num_local_devices=1)


def test_span_settings_are_validated_and_the_vocabulary_holds_the_sentinels():
    from transformer_jax import data
    from transformer_jax.train import run_config

    config = run_config.default_config()
    config.model, config.objective = "t5-tiny", "span_corruption"
    assert run_config.model_config(config, 300).vocab_size == 300 + obj.NUM_SENTINELS
    config.model_overrides.vocab_size = 350  # the tokenizer's 300 fit, the sentinels do not
    with pytest.raises(ValueError, match=r"350: .*\(300 \+ 100 span-corruption sentinels\)"):
        run_config.model_config(config, 300)
    for field, value, rule in (("noise_density", 1.5, r"in \(0.0, 1.0\)"),
                               ("mean_noise_span_length", 0.5, ">= 1")):  # fmt: skip
        bad = run_config.default_config()
        bad.objective = "span_corruption"
        bad[field] = value
        with pytest.raises(ValueError, match=rf"config.{field}={value} must be {rule}"):
            data.validate_config(bad)
