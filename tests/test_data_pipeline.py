"""make_datasets: determinism in (seed, step), process slicing, eval coverage, validation."""

import collections
import math
import os
import shutil

import ml_collections
import numpy as np
import pytest

from transformer_jax.data import pipeline, sources, synthetic
from transformer_jax.data import tokenizer as tok_lib

VOCAB = 400
EXPECTED_KEYS = {
    "clm": {"inputs", "targets", "weights", "positions", "segment_ids"},
    "mlm": {"inputs", "targets", "weights", "positions", "segment_ids", "token_types"},
    "denoise": {
        "inputs", "inputs_positions", "inputs_segment_ids", "decoder_inputs", "targets",
        "weights", "targets_positions", "targets_segment_ids",
    },
}  # fmt: skip
EXPECTED_KEYS["mlm_nsp"] = EXPECTED_KEYS["mlm"] | {"nsp_labels"}
EXPECTED_KEYS["seq2seq"] = EXPECTED_KEYS["span_corruption"] = EXPECTED_KEYS["denoise"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    synthetic.write_code_corpus(str(root / "train"), 40, seed=0)
    synthetic.write_code_corpus(str(root / "eval"), 6, seed=1)
    synthetic.write_parallel_corpus(str(root / "tr.src"), str(root / "tr.tgt"), 300, seed=0)
    synthetic.write_parallel_corpus(str(root / "ev.src"), str(root / "ev.tgt"), 37, seed=1)
    return root


@pytest.fixture(scope="module")
def shared_tokenizer(files, tmp_path_factory):
    """One tokenizer file copied into each workdir, so tests do not retrain it."""
    folder = tmp_path_factory.mktemp("tok")
    texts = [p.read_text(encoding="utf-8") for p in sorted((files / "train").glob("*.py"))]
    texts += (files / "tr.src").read_text().splitlines() + (files / "tr.tgt").read_text().split()
    tok_lib.train_tokenizer(texts, VOCAB, str(folder / "tokenizer.model"))
    return folder / "tokenizer.model"


def _config(files, objective="clm", **overrides):
    config = ml_collections.ConfigDict(
        {
            "dataset": "text_files",
            "train_files": str(files / "train" / "*.py"),
            "eval_files": str(files / "eval" / "*.py"),
            "data_dir": None,
            "objective": objective,
            "vocab_size": VOCAB,
            "max_length": 64,
            "per_device_batch_size": 3,
            "eval_batch_size": 5,
            "seed": 7,
            "num_eval_batches": None,
            "mlm_probability": 0.15,
            "denoise_ratio": 0.3,
            "poisson_lambda": 3.0,
        }
    )
    if objective == "seq2seq":
        config.dataset = "parallel_text"
        config.train_source, config.train_target = str(files / "tr.src"), str(files / "tr.tgt")
        config.eval_source, config.eval_target = str(files / "ev.src"), str(files / "ev.tgt")
    config.update(overrides)
    return config


def _make(config, workdir, tokenizer_file=None, **kwargs):
    os.makedirs(workdir, exist_ok=True)
    if tokenizer_file is not None and not os.path.exists(os.path.join(workdir, "tokenizer.model")):
        shutil.copy(tokenizer_file, os.path.join(workdir, "tokenizer.model"))
    kwargs.setdefault("num_devices", 2)
    kwargs.setdefault("num_local_devices", 2)
    return pipeline.make_datasets(config, str(workdir), **kwargs)


def _assert_equal_batches(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize(
    "objective", ["clm", "mlm", "mlm_nsp", "denoise", "span_corruption", "seq2seq"]
)
def test_batches_are_a_pure_function_of_seed_and_step(files, shared_tokenizer, tmp_path, objective):
    config = _config(files, objective)
    train, eval_source, tok = _make(config, tmp_path / "w", shared_tokenizer)
    batch = train.get_batch(3)
    assert set(batch) == EXPECTED_KEYS[objective]
    for key, value in batch.items():
        leading = (6,) if key == "nsp_labels" else (6, 64)
        assert value.shape == leading, key
        assert value.dtype == (np.float32 if key == "weights" else np.int32), key
    sentinels = 100 if objective == "span_corruption" else 0  # ids after the tokenizer's
    assert batch["weights"].sum() > 0 and (batch["targets"] < tok.vocab_size + sentinels).all()
    _assert_equal_batches(batch, train.get_batch(3))
    assert not np.array_equal(batch["inputs"], train.get_batch(4)["inputs"])
    # A second run (cache hit, new objects) reproduces it; so does iterate(start_step).
    train2, _, _ = _make(config, tmp_path / "w")
    _assert_equal_batches(batch, train2.get_batch(3))
    it = train2.iterate(start_step=2)
    next(it)
    _assert_equal_batches(batch, next(it))
    it.close()
    # Another seed gives another order.
    config.seed = 8
    other, _, _ = _make(config, tmp_path / "w")
    assert not np.array_equal(batch["targets"], other.get_batch(3)["targets"])
    assert sum(1 for _ in eval_source.iterate_eval()) == eval_source.num_eval_batches


@pytest.mark.parametrize("objective", ["clm", "mlm", "mlm_nsp", "denoise"])
def test_process_slices_concatenate_to_the_global_batch(
    files, shared_tokenizer, tmp_path, objective
):
    config = _config(files, objective)
    whole, whole_eval, _ = _make(config, tmp_path / "w", shared_tokenizer)
    parts = [
        _make(
            config,
            tmp_path / "w",
            process_index=p,
            process_count=2,
            num_devices=2,
            num_local_devices=1,
        )
        for p in range(2)
    ]
    for step in (0, 1, 29):  # 29: past the first epoch for the small train split
        local = [train.get_batch(step) for train, _, _ in parts]
        assert local[0]["targets"].shape[0] == 3
        joined = {k: np.concatenate([b[k] for b in local]) for k in local[0]}
        _assert_equal_batches(joined, whole.get_batch(step))
    for step in range(whole_eval.num_eval_batches):
        local = [ev.get_batch(step) for _, ev, _ in parts]
        joined = {k: np.concatenate([b[k] for b in local]) for k in local[0]}
        _assert_equal_batches(joined, whole_eval.get_batch(step))


def test_train_epochs_are_permutations(files, shared_tokenizer, tmp_path):
    train, _, _ = _make(_config(files, "clm", per_device_batch_size=1), tmp_path / "w",
                        shared_tokenizer, num_devices=1, num_local_devices=1)  # fmt: skip
    n = train.num_items
    rows = [train.get_batch(s)["targets"][0].tobytes() for s in range(2 * n)]
    assert len(set(rows[:n])) == n and set(rows[:n]) == set(rows[n:])
    assert rows[:n] != rows[n:]  # a fresh permutation per epoch


def test_eval_covers_every_row_once(files, shared_tokenizer, tmp_path):
    config = _config(files, "clm")
    train, eval_source, tok = _make(config, tmp_path / "w", shared_tokenizer)
    assert eval_source.num_eval_batches == math.ceil(eval_source.num_items / 10)
    assert eval_source.num_items % 10, "want a padded last batch for this test"
    got, real_rows, batches = collections.Counter(), 0, list(eval_source.iterate_eval())
    for batch in batches:
        assert batch["targets"].shape == (10, 64)
        weights = batch["weights"] > 0
        got.update(batch["targets"][weights].tolist())
        real_rows += int(weights.any(axis=1).sum())
        padded = ~weights.any(axis=1)
        assert (batch["segment_ids"][padded] == 0).all() and (batch["inputs"][padded] == 0).all()
    assert real_rows == eval_source.num_items
    expected = collections.Counter()
    for path in sorted((files / "eval").glob("*.py")):
        expected.update(tok.encode(path.read_text(encoding="utf-8")) + [tok.eos_id])
    assert got == expected
    # Unigram baseline: a finite cross-entropy well below the uniform log(V).
    entropy = pipeline.unigram_entropy(train, eval_source, tok.vocab_size)
    assert 1.0 < entropy < math.log(tok.vocab_size)
    # num_eval_batches caps the pass.
    config.num_eval_batches = 2
    _, capped, _ = _make(config, tmp_path / "w")
    assert len(list(capped.iterate_eval())) == 2


def test_seq2seq_batch_contents(files, shared_tokenizer, tmp_path):
    _, eval_source, tok = _make(_config(files, "seq2seq"), tmp_path / "w", shared_tokenizer)
    batch = eval_source.get_batch(0)
    segs = batch["targets_segment_ids"][0]
    first_tgt = batch["targets"][0][segs == 1]
    first_src = batch["inputs"][0][batch["inputs_segment_ids"][0] == 1]
    src_line = (files / "ev.src").read_text().splitlines()
    tgt_line = (files / "ev.tgt").read_text().splitlines()
    pair = (tok.decode(first_src), tok.decode(first_tgt))
    assert pair in set(zip(src_line, tgt_line, strict=True))
    assert first_src[-1] == tok.eos_id and first_tgt[-1] == tok.eos_id
    np.testing.assert_array_equal(
        batch["decoder_inputs"][0][segs == 1], [tok.bos_id, *first_tgt[:-1]]
    )


def test_tokenizer_is_trained_on_first_run_and_reused(files, tmp_path):
    config = _config(files, "clm")
    _, _, tok = _make(config, tmp_path / "w")
    assert tok.vocab_size == VOCAB and os.path.exists(tmp_path / "w" / "tokenizer.model")
    assert os.listdir(tmp_path / "w" / "data_cache")
    _, _, again = _make(config, tmp_path / "w")
    assert again.digest == tok.digest


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"per_device_batch_size": 0}, r"per_device_batch_size=0 must be an integer >= 1"),
        ({"eval_batch_size": -2}, r"eval_batch_size=-2 must be an integer >= 1"),
        ({"objective": "xlnet"}, r"objective='xlnet' is unknown; use one of"),
        ({"dataset": "nope_dataset"}, r"dataset='nope_dataset' is unknown"),
        ({"max_length": 4}, r"max_length=4 must be an integer >= 8"),
        ({"vocab_size": 100}, r"vocab_size=100 is too small"),
        ({"seed": -1}, r"seed=-1"),
        ({"num_eval_batches": 0}, r"num_eval_batches=0 .* or None"),
        ({"mlm_probability": 1.5}, r"mlm_probability=1.5 must be in"),
        ({"objective": "seq2seq"}, r"objective='seq2seq' needs a parallel dataset"),
    ],
)
def test_config_validation(files, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        config = _config(files, "clm")
        config.update(overrides)
        _make(config, tmp_path / "w")
    assert not os.path.exists(tmp_path / "w" / "tokenizer.model")  # failed before any work


def test_process_layout_validation(files, tmp_path):
    with pytest.raises(ValueError, match="process_index=2"):
        _make(_config(files), tmp_path / "w", process_index=2, process_count=2)
    with pytest.raises(ValueError, match="num_local_devices=2 \\* process_count=2"):
        _make(_config(files), tmp_path / "w", process_count=2, num_devices=2)


def test_empty_eval_split(files, tmp_path):
    (tmp_path / "empty.src").write_text("")
    (tmp_path / "empty.tgt").write_text("")
    config = _config(files, "seq2seq")
    config.eval_source, config.eval_target = (
        str(tmp_path / "empty.src"),
        str(tmp_path / "empty.tgt"),
    )
    with pytest.raises(ValueError, match="split 'validation' of dataset 'parallel_text' is empty"):
        _make(config, tmp_path / "w")


def test_missing_catalog_dataset(files, tmp_path):
    config = _config(files, "clm", dataset="lm1b", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(FileNotFoundError, match="tfds build lm1b --data_dir"):
        _make(config, tmp_path / "w")


def test_text_files_hash_split_when_eval_files_is_empty(files, shared_tokenizer, tmp_path):
    config = _config(files, "clm", eval_files="", validation_fraction=0.25)
    train, eval_source, _ = _make(config, tmp_path / "w", shared_tokenizer)
    assert train.num_items > eval_source.num_items > 0


def test_one_text_file_trains_and_a_too_small_one_says_so(files, shared_tokenizer, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(p.read_text() for p in sorted((files / "train").glob("*.py"))))
    config = _config(files, "clm", train_files=str(corpus), eval_files="")
    train, eval_source, _ = _make(config, tmp_path / "w", shared_tokenizer)
    assert train.num_items > eval_source.num_items > 0
    config.per_device_batch_size = train.num_items  # x 2 devices: more rows than there are
    with pytest.raises(ValueError, match=f"too small for one batch: it holds {train.num_items} "):
        _make(config, tmp_path / "w")


@pytest.mark.slow  # builds the whole stdlib corpus and trains its tokenizer
def test_default_stdlib_corpus(tmp_path):
    config = _config(tmp_path, "clm", vocab_size=1024, tokenizer_max_sentences=20_000)
    del config["train_files"], config["eval_files"], config["dataset"]  # 'stdlib' is the default
    train, eval_source, tok = _make(config, tmp_path / "w")
    assert train.num_items > 10_000 and eval_source.num_items > 100
    batch = train.get_batch(0)
    text = tok.decode(batch["targets"][0][batch["segment_ids"][0] == 1])
    assert text and "\n" in text


def test_prefetch_propagates_errors_and_stops():
    def make_rows(items, step, rows):
        if step == 3:
            raise RuntimeError("boom at step 3")
        return {"targets": np.stack([items, rows]).T.astype(np.int32)}

    source = sources.BatchSource(10, make_rows, global_batch_size=4, seed=0)
    it = source.iterate(start_step=1)
    np.testing.assert_array_equal(next(it)["targets"], source.get_batch(1)["targets"])
    np.testing.assert_array_equal(next(it)["targets"], source.get_batch(2)["targets"])
    with pytest.raises(RuntimeError, match="boom at step 3"):
        next(it)
    with pytest.raises(ValueError, match="iterate_eval"):
        source.iterate_eval()


def test_parallel_targets_use_the_tokenizers_target_model(monkeypatch):
    """Marian (hf/tokenizer.py MarianTokenizer): sources through source.spm, the target column
    of a parallel set through target.spm; a one-column text set only through `encode`."""
    from transformer_jax import hf

    tok = hf.load_tokenizer(
        os.path.join(os.path.dirname(__file__), "hf_fixtures", "marian_tokenizer")
    )
    pairs = [("the dog sat", "Größe der Hund"), ("Hello world!", "Hallo Welt!")]
    monkeypatch.setattr(pipeline, "_read", lambda ds, split, limit: iter(pairs))
    ds = pipeline._Dataset("pairs", None, "train", "eval", ("source", "target"), "pairs")
    got = list(pipeline._encoded(ds, "train", tok, None))
    assert got == [(tok.encode(s), tok.encode_target(t)) for s, t in pairs]
    assert tok.encode_target("Größe") != tok.encode("Größe")  # the column matters here
    text = pipeline._Dataset("text", None, "train", "eval", ("text",), "text")
    monkeypatch.setattr(pipeline, "_read", lambda ds, split, limit: iter([("Größe",)]))
    assert list(pipeline._encoded(text, "train", tok, None)) == [(tok.encode("Größe"),)]
