"""The default corpus: this machine's Python standard library `.py` sources.

File lists are sorted and the train/validation split is a stable hash of each file's path
relative to its corpus root, so every machine with the same Python sees the same split.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from collections.abc import Sequence

# Folder names never entered: third-party code, test suites, bytecode caches.
EXCLUDED_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
)
DEFAULT_VALIDATION_FRACTION = 0.03
_HASH_BUCKETS = 1_000_000


def stdlib_root() -> str:
    """Absolute path of the running interpreter's standard library."""
    return os.path.realpath(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: str | None = None) -> list[str]:
    """Sorted absolute paths of the stdlib `.py` files (tests and site-packages left out)."""
    root = root or stdlib_root()
    if not os.path.isdir(root):
        raise ValueError(f"stdlib root {root!r} is not a directory; pass the folder to scan")
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS)
        paths.extend(os.path.join(dirpath, f) for f in filenames if f.endswith(".py"))
    return sorted(paths)


def is_validation(relative_path: str, validation_fraction: float) -> bool:
    """Stable split rule: sha256 of the '/'-separated relative path, bucketed."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction={validation_fraction} must be in [0, 1)")
    key = relative_path.replace(os.sep, "/").encode("utf-8")
    bucket = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % _HASH_BUCKETS
    return bucket < validation_fraction * _HASH_BUCKETS


def split_by_hash(
    paths: Sequence[str],
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    root: str | None = None,
) -> tuple[list[str], list[str]]:
    """Splits `paths` into sorted (train, validation) lists by hashing paths relative to `root`.

    `root` defaults to the paths' common folder, so moving the whole tree keeps the split.
    """
    paths = sorted(paths)
    if not paths:
        return [], []
    if root is None:
        root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    train, validation = [], []
    for p in paths:
        rel = os.path.relpath(os.path.abspath(p), root)
        (validation if is_validation(rel, validation_fraction) else train).append(p)
    return train, validation


def stdlib_split(
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION, root: str | None = None
) -> tuple[list[str], list[str]]:
    """(train, validation) file lists of the stdlib corpus."""
    root = root or stdlib_root()
    return split_by_hash(stdlib_files(root), validation_fraction, root=root)


def read_text(path: str) -> str:
    """Reads a file as UTF-8, replacing undecodable bytes with U+FFFD."""
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace")
