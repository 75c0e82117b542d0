"""TFDS builders for local files (built for real into tmp data_dirs), the stdlib corpus, and
the catalog error for datasets that are not prepared."""

import logging
import math
import os
import shutil
import time

import pytest
import tensorflow_datasets as tfds

from transformer_jax.data import builders, corpus, synthetic


def _read_split(builder, split, key="text"):
    examples = tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))
    return [ex[key].decode("utf-8") for ex in examples]


def test_stdlib_corpus_file_list():
    files = corpus.stdlib_files()
    assert files == sorted(files) and len(files) > 100
    root = corpus.stdlib_root()
    for path in files:
        parts = os.path.relpath(path, root).split(os.sep)
        assert path.endswith(".py")
        assert not set(parts[:-1]) & corpus.EXCLUDED_DIRS, path
    train, validation = corpus.stdlib_split()
    assert sorted(train + validation) == files and not set(train) & set(validation)
    assert 0.01 < len(validation) / len(files) < 0.06
    assert corpus.stdlib_split() == (train, validation)


def test_split_by_hash_is_stable_when_the_tree_moves(tmp_path):
    paths = synthetic.write_code_corpus(str(tmp_path / "a" / "src"), 60)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    moved = [p.replace(os.sep + "a" + os.sep, os.sep + "b" + os.sep) for p in paths]
    train_a, val_a = corpus.split_by_hash(paths, 0.2)
    train_b, val_b = corpus.split_by_hash(moved, 0.2)
    assert [os.path.basename(p) for p in val_a] == [os.path.basename(p) for p in val_b]
    assert val_a and train_a and len(train_a) + len(val_a) == 60


def test_text_files_builder_round_trip(tmp_path):
    paths = synthetic.write_code_corpus(str(tmp_path / "src"), 12)
    with open(paths[0], "a", encoding="utf-8") as f:
        f.write("\tmixed\r\nwhitespace  \n\n")
    with open(paths[1], "wb") as f:
        f.write(b"bad utf-8 \xff\xfe here\n")
    splits = builders.text_files_splits(str(tmp_path / "src" / "*.py"), validation_fraction=0.25)
    builder = builders.text_files_builder(splits, str(tmp_path / "data"))
    assert builder.name == "local_text_files"
    builders.prepare(builder)
    assert builder.is_prepared()
    for split, files in splits.items():
        assert files
        expected = sorted(corpus.read_text(p) for p in files)
        assert sorted(_read_split(builder, split)) == expected
    assert "bad utf-8 \ufffd\ufffd here\n" in _read_split(builder, "train") + _read_split(
        builder, "validation"
    )
    # Same file set -> same config, prepared data reused (through tfds.builder again).
    again = builders.text_files_builder(splits, str(tmp_path / "data"))
    assert again.data_dir == builder.data_dir and again.is_prepared()


def test_changed_file_set_gets_a_new_build(tmp_path):
    src = tmp_path / "src"
    synthetic.write_code_corpus(str(src), 6)
    glob = str(src / "*.py")
    explicit = {"train": builders.expand_globs(glob), "validation": [str(src / "file_0000.py")]}
    first = builders.prepare(builders.text_files_builder(explicit, str(tmp_path / "data")))
    (src / "extra.py").write_text("x = 1\n")
    explicit2 = {"train": builders.expand_globs(glob), "validation": explicit["validation"]}
    second = builders.text_files_builder(explicit2, str(tmp_path / "data"))
    assert second.data_dir != first.data_dir and not second.is_prepared()
    builders.prepare(second)
    assert "x = 1\n" in _read_split(second, "train")
    time.sleep(0.01)
    (src / "extra.py").write_text("x = 22\n")  # same path, new size and mtime
    third = builders.text_files_builder(
        {"train": builders.expand_globs(glob), "validation": explicit["validation"]},
        str(tmp_path / "data"),
    )
    assert third.data_dir not in (first.data_dir, second.data_dir)


def test_empty_split_is_rejected(tmp_path):
    synthetic.write_code_corpus(str(tmp_path), 2)
    with pytest.raises(ValueError, match="split 'validation' of dataset 'text_files' is empty"):
        builders.text_files_splits(str(tmp_path / "*.py"), str(tmp_path / "*.nothing"))
    with pytest.raises(ValueError, match="split 'validation' of dataset 'text_files' is empty"):
        builders.text_files_builder({"train": ["a"], "validation": []}, str(tmp_path))


def test_own_data_a_file_a_folder_a_glob(tmp_path, caplog, monkeypatch):
    """No eval_files: one file is split by its tail (whole lines, one log line says what);
    a folder and a glob give the same split; files-only splits keep their old build name."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    text = "".join(f"line {i} {'x' * (i % 7)}\n" for i in range(40))
    (folder / "a.txt").write_text(text[:300])
    (folder / "b.txt").write_text(text[300:])
    (folder / ".hidden").write_text("never read\n")
    one = str(tmp_path / "one.txt")
    with open(one, "w") as f:
        f.write(text)
    with caplog.at_level(logging.INFO, logger="transformer_jax.data.builders"):
        splits = builders.text_files_splits(one, validation_fraction=0.1)
    size = len(text)
    [(path, start, cut)] = splits["train"]
    assert (path, start) == (one, 0) and splits["validation"] == [(one, cut, size)]
    assert text[cut - 1] == "\n" and math.ceil(0.1 * size) <= size - cut < 0.1 * size + 12
    held = text[cut:].count("\n")
    assert caplog.messages == [
        f"text_files: no eval_files: held out the last {held} line(s) ({size - cut} bytes, "
        f"validation_fraction=0.1) as validation: {one!r} from byte {cut}"
    ]
    assert builders.text_files_splits(one, validation_fraction=0.1) == splits  # deterministic
    monkeypatch.setattr(builders, "_CHUNK", 5)  # line breaks found across read chunks
    description = caplog.messages[0].removeprefix("text_files: ")
    assert builders.holdout_tail([one], 0.1) == (*splits.values(), description)
    builder = builders.prepare(builders.text_files_builder(splits, str(tmp_path / "data")))
    assert _read_split(builder, "train") + _read_split(builder, "validation") == [
        text[:cut],
        text[cut:],
    ]
    by_folder = builders.text_files_splits(str(folder), validation_fraction=0.1)
    assert by_folder == builders.text_files_splits(str(folder / "*.txt"), validation_fraction=0.1)
    assert {builders._entry_path(e) for v in by_folder.values() for e in v} == {
        str(folder / "a.txt"),
        str(folder / "b.txt"),
    }
    whole = {"train": [str(folder / "a.txt")], "validation": [str(folder / "b.txt")]}
    name = builders.text_files_builder(whole, str(tmp_path / "data")).builder_config.name
    assert name == "text_files_" + builders.fingerprint(whole)  # as before byte ranges existed


def test_own_data_that_cannot_be_split_says_why(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match=r"empty.txt' is empty \(0 bytes\)"):
        builders.text_files_splits(str(tmp_path / "empty.txt"))
    (tmp_path / "e2.txt").write_text("")
    with pytest.raises(ValueError, match=r"matched 2 files and all are empty \(0 bytes\)"):
        builders.text_files_splits(str(tmp_path))
    (tmp_path / "line.txt").write_text("just one line\n")
    with pytest.raises(ValueError, match=r"hold 1 line\(s\) in all \(14 bytes\): too small"):
        builders.text_files_splits(str(tmp_path / "line.txt"))


def test_parallel_text_builder(tmp_path):
    pairs = synthetic.write_parallel_corpus(str(tmp_path / "s.txt"), str(tmp_path / "t.txt"), 40)
    (tmp_path / "vs.txt").write_text("héllo wörld\n\nlast line without newline")
    (tmp_path / "vt.txt").write_text("HELLO\nEMPTY SOURCE\r\nLAST\n")
    builder = builders.parallel_text_builder(
        {
            "train": (str(tmp_path / "s.txt"), str(tmp_path / "t.txt")),
            "validation": (str(tmp_path / "vs.txt"), str(tmp_path / "vt.txt")),
        },
        str(tmp_path / "data"),
    )
    builders.prepare(builder)
    got = sorted(
        zip(
            _read_split(builder, "train", "source"),
            _read_split(builder, "train", "target"),
            strict=True,
        )
    )
    assert got == sorted(pairs)
    got = sorted(
        zip(
            _read_split(builder, "validation", "source"),
            _read_split(builder, "validation", "target"),
            strict=True,
        )
    )
    assert got == sorted(
        [("héllo wörld", "HELLO"), ("", "EMPTY SOURCE"), ("last line without newline", "LAST")]
    )


def test_parallel_text_line_count_mismatch(tmp_path):
    (tmp_path / "s.txt").write_text("a\nb\nc\n")
    (tmp_path / "t.txt").write_text("A\nB\n")
    with pytest.raises(ValueError, match=r"s\.txt' has 3 lines but target .*t\.txt' has 2"):
        builders.parallel_text_builder(
            {"train": (str(tmp_path / "s.txt"), str(tmp_path / "t.txt"))}, str(tmp_path / "d")
        )


@pytest.mark.parametrize("name", ["lm1b", "wmt14_translate/de-en", "glue/sst2"])
def test_missing_catalog_dataset_raises_fast_without_network(tmp_path, name):
    start = time.perf_counter()
    with pytest.raises(builders.DatasetNotPreparedError) as info:
        builders.catalog_builder(name, str(tmp_path))
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert name in message and str(tmp_path) in message and f"tfds build {name}" in message


def test_catalog_text_keys():
    assert builders.catalog_spec("lm1b").text_key == "text"
    sst2 = builders.catalog_spec("glue/sst2")
    assert (sst2.text_key, sst2.label_key) == ("sentence", "label")
    wmt = builders.catalog_spec("wmt14_translate/de-en")
    assert (wmt.source_key, wmt.target_key, wmt.is_parallel) == ("de", "en", True)
    rev = builders.catalog_spec("wmt14_translate/de-en", reverse_translation=True)
    assert (rev.source_key, rev.target_key) == ("en", "de")
    with pytest.raises(ValueError, match="no known text features"):
        builders.catalog_spec("mnist")


def test_fingerprint_equals_the_one_made_with_tf_gfile_stat(tmp_path):
    """Local files are fingerprinted without TensorFlow; the value must be the one that
    `tf.io.gfile.stat` (size, mtime in whole seconds as ns) gave, so existing builds and token
    caches stay valid."""
    import hashlib

    import tensorflow as tf

    paths = []
    for i in range(3):
        path = tmp_path / f"f{i}.txt"
        path.write_text("x" * (10 + i))
        os.utime(path, ns=(1_700_000_000_123_456_789 + i, 1_700_000_000_987_654_321 + i))
        paths.append(str(path))
    groups = {"train": paths[:2], "validation": paths[2:]}
    h = hashlib.sha256(b"extra")
    for group in sorted(groups):
        for path in sorted(groups[group]):
            stat = tf.io.gfile.stat(path)
            h.update(f"{group}\0{path}\0{stat.length}\0{stat.mtime_nsec}\n".encode())
    assert builders.fingerprint(groups, "extra") == h.hexdigest()[:16]
