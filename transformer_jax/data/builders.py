"""TFDS builders for local files, and access to prepared TFDS catalog datasets.

Local builders (`local_text_files`, `local_parallel_text`) are ordinary
`tfds.core.GeneratorBasedBuilder`s built into a `data_dir` without downloads. Their config
is created per file set; its name ends in a hash of the sorted paths, sizes and mtimes of
every file, so a changed file set gets a new folder and a stale build is never reused:

    DATA_DIR/local_text_files/<tag>_<hash16>/1.0.0/

Catalog datasets (`lm1b`, `wmt14_translate/de-en`, `glue/sst2`, ...) are read from
`data_dir` only: this code never downloads. A missing dataset raises
`DatasetNotPreparedError` with the command that prepares it.

TensorFlow is imported only when it is needed (building a dataset, reading its examples, a
remote `scheme://` path): a run whose token cache exists starts without it (`tensorflow()`).
"""

from __future__ import annotations

import dataclasses
import glob as glob_lib
import hashlib
import logging
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence

from transformer_jax import console

# TensorFlow's start-up notices (oneDNN, CPU features) off for every program that reads data,
# entry point or notebook alike, unless the environment already says otherwise.
console.quiet_environment(console.verbose_flag(sys.argv))

import tensorflow_datasets as tfds  # noqa: E402 - imports TensorFlow lazily, on first use
from etils import epath  # noqa: E402

from transformer_jax.data import corpus  # noqa: E402

LOCAL_VERSION = "1.0.0"
log = logging.getLogger(__name__)


def tensorflow():
    """The `tensorflow` module, imported on first use (a few seconds) with every GPU hidden
    from it: TF only feeds tf.data here, the accelerators belong to JAX."""
    first = "tensorflow" not in sys.modules
    import tensorflow as tf

    if first:
        hide_gpus_from_tensorflow()
    return tf


def hide_gpus_from_tensorflow() -> None:
    """Keeps TensorFlow (used only for tf.data/TFDS) off every GPU, leaving them to JAX. Call
    it before anything that may make TF touch a device (tf.data, a TFDS build)."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TF devices already initialized: fine if TF sees no GPU.
        if tf.config.get_visible_devices("GPU"):
            raise


# ----------------------------------------------------------------------------- file sets


def expand_globs(patterns: str | Sequence[str]) -> list[str]:
    """Sorted, de-duplicated files matching one glob or a list of globs ('**' allowed). A
    pattern naming a local folder means every file under it (recursively; names starting
    with '.' skipped), so a file, a folder and a glob all work."""
    if isinstance(patterns, str):
        patterns = [patterns]
    paths: set[str] = set()
    for pattern in patterns:
        if "://" in pattern:
            paths.update(tensorflow().io.gfile.glob(pattern))
        elif os.path.isdir(pattern):
            for dirpath, dirnames, filenames in os.walk(pattern):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                paths.update(os.path.join(dirpath, f) for f in filenames if not f.startswith("."))
        else:
            paths.update(p for p in glob_lib.glob(pattern, recursive=True) if os.path.isfile(p))
    return sorted(paths)


def fingerprint(groups: Mapping[str, Sequence[str]], extra: str = "") -> str:
    """16 hex digits of sha256 over (group, path, size, mtime) of every file, in sorted order."""
    h = hashlib.sha256(extra.encode())
    for group in sorted(groups):
        for path in sorted(groups[group]):
            size, mtime = _size_and_mtime(path)
            h.update(f"{group}\0{path}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()[:16]


def _size_and_mtime(path: str) -> tuple[int, int]:
    """(bytes, mtime in ns truncated to whole seconds) as `tf.io.gfile.stat` reports them, so
    that fingerprints made while TF was imported eagerly stay valid; local files without TF."""
    if "://" in path:
        stat = tensorflow().io.gfile.stat(path)
        return stat.length, stat.mtime_nsec
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns // 10**9 * 10**9


def _read_bytes(path: str) -> bytes:
    if "://" in path:
        with tensorflow().io.gfile.GFile(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def _read_text(path: str) -> str:
    return _read_bytes(path).decode("utf-8", errors="replace")


def read_lines(path: str) -> list[str]:
    """Lines of a UTF-8 file split on '\\n' (a trailing newline does not add a line; '\\r' kept
    off the line ends). Blank lines are kept so that two files stay aligned."""
    text = _read_text(path)
    if text.endswith("\n"):
        text = text[:-1]
    if not text:
        return []
    return [line.removesuffix("\r") for line in text.split("\n")]


# ----------------------------------------------------------------------------- text files


# A split entry: a whole file (its path), or the bytes [start, end) of one (a held-out slice).
FileEntry = str | tuple[str, int, int]


@dataclasses.dataclass(eq=False)
class TextFilesConfig(tfds.core.BuilderConfig):
    """One document per file (or per byte range of a file). `splits` maps split name ->
    sorted entries: paths, or (path, start, end) byte ranges."""

    splits: dict[str, tuple[FileEntry, ...]] = dataclasses.field(default_factory=dict, repr=False)
    root: str = dataclasses.field(default="", repr=False)  # keys: paths relative to this


class _LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared base: fixed version, configs made per file set, no downloads."""

    VERSION = tfds.core.Version(LOCAL_VERSION)
    BUILDER_CONFIGS = []

    # TFDS 4.9.10's default `code_path` imports the `importlib_resources` backport, which is
    # only installed on Python < 3.9; our builders have no checksums file to find anyway.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)

    # TFDS prints "Downloading and preparing dataset Unknown size ..." to stdout; nothing is
    # downloaded here: one line of ours instead.
    def _log_download_bytes(self) -> None:
        log.info("Preparing %s (%s) in %s", self.name, self.builder_config.description,
                 self.data_dir)  # fmt: skip

    def _log_download_done(self) -> None:
        pass


class _LocalBuilderNoise(logging.Filter):
    """Drops TFDS's warnings that are expected for our local builders (their config is made
    per file set; a build folder has no dataset_info.json until it is prepared)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if msg.startswith("Using custom data configuration") and record.args:
            return not isinstance(record.args[0], TextFilesConfig | ParallelTextConfig)
        if msg.startswith("Variant folder") and record.args:
            folder = str(record.args[0])
            return not any(f"{os.sep}{name}{os.sep}" in folder for name in _LOCAL_NAMES)
        return True


_LOCAL_NAMES = ("local_text_files", "local_parallel_text")


class LocalTextFiles(_LocalBuilder):
    """Local text files, one example `{'text': str}` per file."""

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Local text files, one document per file.",
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
        )

    def _split_generators(self, dl_manager):  # no downloads: dl_manager unused
        return {
            name: self._generate_examples(paths)
            for name, paths in self.builder_config.splits.items()
        }

    def _generate_examples(
        self, entries: Sequence[FileEntry]
    ) -> Iterator[tuple[str, dict[str, str]]]:
        root = self.builder_config.root
        for entry in entries:
            if isinstance(entry, str):
                key = os.path.relpath(entry, root) if root else entry
                yield key, {"text": _read_text(entry)}
            else:
                path, start, end = entry
                key = f"{os.path.relpath(path, root) if root else path}@{start}-{end}"
                text = _read_bytes(path)[start:end].decode("utf-8", errors="replace")
                yield key, {"text": text}


def text_files_builder(
    splits: Mapping[str, Sequence[str]], data_dir: str, *, tag: str = "text_files", root: str = ""
) -> tfds.core.DatasetBuilder:
    """A `local_text_files` builder (not yet prepared) for the given split -> paths mapping."""
    for split, paths in splits.items():
        if not paths:
            raise ValueError(
                f"split {split!r} of dataset {tag!r} is empty: it has no files; add files, "
                "or give the validation files as config.eval_files"
            )
    frozen = {split: tuple(sorted(paths, key=_entry_key)) for split, paths in splits.items()}
    files = {split: [_entry_path(e) for e in entries] for split, entries in frozen.items()}
    ranges = sorted(
        f"{split}\0{e[0]}\0{e[1]}\0{e[2]}"
        for split, entries in frozen.items()
        for e in entries
        if not isinstance(e, str)
    )
    # Whole files only: the name of the builds made before byte ranges existed.
    extra = "ranges\n" + "\n".join(ranges) if ranges else ""
    config = TextFilesConfig(
        name=f"{tag}_{fingerprint(files, extra)}",
        version=LOCAL_VERSION,
        description=f"{tag}: " + ", ".join(f"{k}={len(v)} files" for k, v in frozen.items()),
        splits=frozen,
        root=root,
    )
    return tfds.builder("local_text_files", config=config, data_dir=data_dir)


def _entry_path(entry: FileEntry) -> str:
    return entry if isinstance(entry, str) else entry[0]


def _entry_key(entry: FileEntry) -> tuple[str, int]:
    return (entry, 0) if isinstance(entry, str) else (entry[0], entry[1])


def _check_not_all_empty(field: str, pattern, paths: Sequence[str]) -> None:
    """ValueError when every matched file is empty (empty files among others are skipped)."""
    if any(_size_and_mtime(p)[0] for p in paths):
        return
    if len(paths) == 1:
        raise ValueError(
            f"config.{field}={pattern!r}: the file {paths[0]!r} is empty (0 bytes); "
            "give a file with text in it"
        )
    shown = ", ".join(repr(p) for p in paths[:5]) + (", ..." if len(paths) > 5 else "")
    raise ValueError(
        f"config.{field}={pattern!r} matched {len(paths)} files and all are empty (0 bytes): "
        f"{shown}; give files with text in them"
    )


_CHUNK = 1 << 20  # bytes read at a time when looking for line breaks


def _open_binary(path: str):
    return tensorflow().io.gfile.GFile(path, "rb") if "://" in path else open(path, "rb")  # noqa: SIM115


def _line_start(path: str, pos: int) -> int:
    """Start of the line that holds byte `pos`: after the last newline in [0, pos), or 0."""
    with _open_binary(path) as f:
        end = pos
        while end > 0:
            start = max(0, end - _CHUNK)
            f.seek(start)
            newline = f.read(end - start).rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            end = start
    return 0


def _next_line_start(path: str, pos: int, size: int) -> int:
    """Start of the line after the one holding byte `pos` (`size` if it is the last)."""
    with _open_binary(path) as f:
        f.seek(pos)
        while chunk := f.read(_CHUNK):
            newline = chunk.find(b"\n")
            if newline >= 0:
                return pos + newline + 1
            pos += len(chunk)
    return size


def _count_lines(ranges: Sequence[tuple[str, int]]) -> int:
    """Lines in the bytes of (path, from byte) taken as one stream (a last line without its
    newline counts)."""
    lines, last = 0, b"\n"
    for path, start in ranges:
        with _open_binary(path) as f:
            f.seek(start)
            while chunk := f.read(_CHUNK):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
    return lines + (last != b"\n")


def holdout_tail(
    paths: Sequence[str], validation_fraction: float
) -> tuple[list[FileEntry], list[FileEntry], str]:
    """(train entries, validation entries, a one-line description): the last
    `validation_fraction` of the bytes of `paths` (sorted, taken as one stream) held out,
    cut at the start of a line, so that one file (or a few) gives both splits.

    Deterministic in the files' contents; reads only near the cut and the held-out tail.
    ValueError when the text has too few lines to give both splits at least one line.
    """
    paths = sorted(paths)
    sizes = [_size_and_mtime(p)[0] for p in paths]
    total = sum(sizes)
    held = max(1, math.ceil(validation_fraction * total))
    target = total - held  # byte offset of the cut in the concatenated stream
    k, offset = 0, 0  # the cut lies in paths[k], which starts at byte `offset`
    while offset + sizes[k] <= target:
        offset += sizes[k]
        k += 1
    size, within = sizes[k], target - offset
    cut = _line_start(paths[k], within)
    if cut == 0 and not any(sizes[:k]):  # nothing left for train: cut after that line
        cut = _next_line_start(paths[k], within, size)
    if (cut == size and not any(sizes[k + 1 :])) or (cut == 0 and not any(sizes[:k])):
        raise ValueError(
            f"the text files {paths[:3]!r}{' ...' if len(paths) > 3 else ''} hold "
            f"{_count_lines([(p, 0) for p in paths])} line(s) in all ({total} bytes): too "
            "small to hold out a validation slice; give at least two lines, or the "
            "validation data as config.eval_files"
        )
    train: list[FileEntry] = list(paths[:k])
    validation: list[FileEntry] = []
    if cut > 0:
        train.append(paths[k] if cut == size else (paths[k], 0, cut))
    if cut < size:
        validation.append(paths[k] if cut == 0 else (paths[k], cut, size))
    validation.extend(paths[k + 1 :])
    lines = _count_lines([(paths[k], cut)] + [(p, 0) for p in paths[k + 1 :]])
    where = f"{paths[k]!r} from byte {cut}" if cut else repr(paths[k])
    if k + 1 < len(paths):
        where += f" and the {len(paths) - k - 1} file(s) after it"
    description = (
        f"no eval_files: held out the last {lines} line(s) ({total - offset - cut} bytes, "
        f"validation_fraction={validation_fraction}) as validation: {where}"
    )
    return train, validation, description


def _no_files(split: str, field: str, patterns: str | Sequence[str]) -> str:
    """The message for a file set that matched no files; a folder is named as such."""
    folders = [p for p in ([patterns] if isinstance(patterns, str) else patterns)
               if "://" not in p and os.path.isdir(p)]  # fmt: skip
    what = (
        f"the directory {folders[0]!r} holds no files (names starting with '.' are skipped); "
        "put the text files there or name them"
        if folders
        else "matched no files; fix the path or glob"
    )
    return f"split {split!r} of dataset 'text_files' is empty: {field}={patterns!r}: {what}"


def text_files_splits(
    train_files: str | Sequence[str],
    eval_files: str | Sequence[str] | None = None,
    validation_fraction: float = corpus.DEFAULT_VALIDATION_FRACTION,
) -> dict[str, list[FileEntry]]:
    """{'train', 'validation'} entries: explicit globs (a file, a folder or a glob each), or
    (`eval_files` None or "") a split of the train files: by path hash (whole files) when
    that gives both splits a file, else the tail of the text (`holdout_tail`: one file, or a
    few). One INFO log line says what was held out."""
    eval_files = eval_files or None  # "" (a config default) means: split train_files
    train = expand_globs(train_files)
    if not train:
        raise ValueError(_no_files("train", "train_files", train_files))
    _check_not_all_empty("train_files", train_files, train)
    if eval_files is None:
        by_hash = corpus.split_by_hash(train, validation_fraction)
        if all(by_hash):  # the rule of earlier versions: their builds and caches stay valid
            train, validation = by_hash
            log.info(
                "text_files: no eval_files: held out %d of %d files (by path hash, "
                "validation_fraction=%s) as validation",
                len(validation), len(train) + len(validation), validation_fraction,
            )  # fmt: skip
        else:
            train, validation, description = holdout_tail(train, validation_fraction)
            log.info("text_files: %s", description)
    else:
        validation = expand_globs(eval_files)
        if not validation:
            raise ValueError(_no_files("validation", "eval_files", eval_files))
        _check_not_all_empty("eval_files", eval_files, validation)
    return {"train": train, "validation": validation}


def stdlib_builder(
    data_dir: str, validation_fraction: float = corpus.DEFAULT_VALIDATION_FRACTION
) -> tfds.core.DatasetBuilder:
    """The default corpus (the stdlib's `.py` files) as a `local_text_files` builder."""
    root = corpus.stdlib_root()
    train, validation = corpus.stdlib_split(validation_fraction, root)
    return text_files_builder(
        {"train": train, "validation": validation}, data_dir, tag="stdlib", root=root
    )


# ----------------------------------------------------------------------------- parallel text


@dataclasses.dataclass(eq=False)
class ParallelTextConfig(tfds.core.BuilderConfig):
    """`splits` maps split name -> (source file, target file), aligned line by line."""

    splits: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict, repr=False)


def check_aligned(source: str, target: str) -> int:
    """Number of aligned lines; ValueError naming both files when the counts differ."""
    n_src, n_tgt = len(read_lines(source)), len(read_lines(target))
    if n_src != n_tgt:
        raise ValueError(
            f"parallel files are not aligned: source {source!r} has {n_src} lines but target "
            f"{target!r} has {n_tgt}; every source line needs exactly one target line"
        )
    return n_src


class LocalParallelText(_LocalBuilder):
    """Two aligned local files per split -> `{'source': str, 'target': str}` per line."""

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Local parallel text: aligned source/target files, one pair per line.",
            features=tfds.features.FeaturesDict(
                {"source": tfds.features.Text(), "target": tfds.features.Text()}
            ),
            supervised_keys=("source", "target"),
        )

    def _split_generators(self, dl_manager):  # no downloads: dl_manager unused
        return {
            name: self._generate_examples(src, tgt)
            for name, (src, tgt) in self.builder_config.splits.items()
        }

    def _generate_examples(self, source: str, target: str):
        check_aligned(source, target)
        for i, (s, t) in enumerate(zip(read_lines(source), read_lines(target), strict=True)):
            yield i, {"source": s, "target": t}


def parallel_text_builder(
    splits: Mapping[str, tuple[str, str]], data_dir: str, *, tag: str = "parallel_text"
) -> tfds.core.DatasetBuilder:
    """A `local_parallel_text` builder (not yet prepared); checks alignment and emptiness first."""
    for split, (src, tgt) in splits.items():
        for field, path in (("source", src), ("target", tgt)):
            exists = tensorflow().io.gfile.exists if "://" in path else os.path.exists
            if not exists(path):
                raise ValueError(f"{split} {field} file {path!r} does not exist")
        if check_aligned(src, tgt) == 0:
            raise ValueError(f"split {split!r} of dataset {tag!r} is empty: {src!r} has no lines")
    frozen = {split: (src, tgt) for split, (src, tgt) in splits.items()}
    groups = {f"{split}/{i}": [p] for split, pair in frozen.items() for i, p in enumerate(pair)}
    config = ParallelTextConfig(
        name=f"{tag}_{fingerprint(groups)}",
        version=LOCAL_VERSION,
        description=f"{tag}: " + ", ".join(f"{k}={v[0]}|{v[1]}" for k, v in frozen.items()),
        splits=frozen,
    )
    return tfds.builder("local_parallel_text", config=config, data_dir=data_dir)


logging.getLogger("absl").addFilter(_LocalBuilderNoise())  # TFDS logs through absl


def prepare(builder: tfds.core.DatasetBuilder) -> tfds.core.DatasetBuilder:
    """Builds a local builder into its data_dir unless already prepared (never contacts GCS)."""
    if not builder.is_prepared():
        hide_gpus_from_tensorflow()  # building writes through tf.data
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    return builder


# ----------------------------------------------------------------------------- TFDS catalog


@dataclasses.dataclass(frozen=True)
class CatalogSpec:
    """Which features of a catalog dataset hold text, and which splits to use.

    Text datasets set `text_key`; translation datasets set `source_key`/`target_key`.
    """

    name: str
    train_split: str
    eval_split: str
    text_key: str | None = None
    source_key: str | None = None
    target_key: str | None = None
    label_key: str | None = None

    @property
    def is_parallel(self) -> bool:
        return self.source_key is not None


CATALOG: dict[str, CatalogSpec] = {
    "lm1b": CatalogSpec("lm1b", "train", "test", text_key="text"),
    "c4/en": CatalogSpec("c4/en", "train", "validation", text_key="text"),
    "glue/sst2": CatalogSpec("glue/sst2", "train", "validation", "sentence", label_key="label"),
    "imdb_reviews": CatalogSpec("imdb_reviews", "train", "test", "text", label_key="label"),
    "wikitext/wikitext-103-raw-v1": CatalogSpec(
        "wikitext/wikitext-103-raw-v1", "train", "validation", text_key="text"
    ),
}


def catalog_spec(name: str, reverse_translation: bool = False) -> CatalogSpec:
    """The text keys of a catalog dataset.

    `*_translate/xx-yy` (e.g. 'wmt14_translate/de-en') translates xx -> yy, or yy -> xx when
    `reverse_translation` is True.
    """
    if name in CATALOG:
        return CATALOG[name]
    base, _, config = name.partition("/")
    langs = config.split(":")[0].split("-")
    if base.endswith("_translate") and len(langs) == 2 and all(langs):
        src, tgt = reversed(langs) if reverse_translation else langs
        return CatalogSpec(name, "train", "validation", source_key=src, target_key=tgt)
    known = sorted(CATALOG) + ["<wmtNN>_translate/xx-yy"]
    raise ValueError(f"dataset {name!r} has no known text features; use one of {known}")


class DatasetNotPreparedError(FileNotFoundError):
    """A TFDS catalog dataset is missing from data_dir (this code never downloads)."""


def catalog_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """`tfds.builder(name, data_dir=...)`, raising `DatasetNotPreparedError` if not prepared."""
    hide_gpus_from_tensorflow()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError as e:
        raise ValueError(f"dataset {name!r} is not in the TFDS catalog: {e}") from e
    if not builder.is_prepared():
        root = str(builder.data_dir_root)
        raise DatasetNotPreparedError(
            f"TFDS dataset {name!r} is not prepared in data_dir {root!r} (looked in "
            f"{builder.data_dir!r}) and this code never downloads. On a machine with internet "
            f"run `tfds build {name} --data_dir {root}` (or `tfds.builder({name!r}, "
            f"data_dir=...).download_and_prepare()`), then copy the resulting "
            f"'{name.split('/')[0]}' folder into {root!r} here, or set config.data_dir to "
            f"where it already is."
        )
    return builder
