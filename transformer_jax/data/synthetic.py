"""Small deterministic corpora for tests and smoke runs (written to local files)."""

from __future__ import annotations

import os

import numpy as np

_WORDS = (
    "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega value index count "
    "total items result buffer stream token record parse build load save print check"
).split()
_OPS = ("+", "-", "*", "//", "%")


def code_document(rng: np.random.Generator, num_functions: int = 4) -> str:
    """A small Python-like file: indented function bodies, comments, a non-ASCII string."""
    lines = [f"# module {rng.choice(_WORDS)} — {rng.choice(_WORDS)} ünïcode ✓", ""]
    for _ in range(num_functions):
        name = "_".join(rng.choice(_WORDS, 2))
        args = ", ".join(rng.choice(_WORDS, int(rng.integers(1, 4)), replace=False))
        lines.append(f"def {name}({args}):")
        for _ in range(int(rng.integers(2, 6))):
            a, b = rng.choice(_WORDS, 2)
            lines.append(f"    {a} = {b} {rng.choice(_OPS)} {int(rng.integers(100))}")
        lines.append(f"    if {rng.choice(_WORDS)}:")
        lines.append(f"        return {rng.choice(_WORDS)}")
        lines.append(f'    return "{rng.choice(_WORDS)}"')
        lines.append("")
    return "\n".join(lines) + "\n"


def write_code_corpus(folder: str, num_files: int, seed: int = 0, suffix: str = ".py") -> list[str]:
    """Writes `num_files` code documents into `folder`; returns their sorted paths."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(num_files):
        path = os.path.join(folder, f"file_{i:04d}{suffix}")
        with open(path, "w", encoding="utf-8") as f:
            f.write(code_document(rng, int(rng.integers(2, 7))))
        paths.append(path)
    return sorted(paths)


def write_parallel_corpus(
    source_path: str, target_path: str, num_lines: int, seed: int = 0
) -> list[tuple[str, str]]:
    """Aligned files: a random word sentence -> the same words reversed and upper-cased."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(num_lines):
        words = list(rng.choice(_WORDS, int(rng.integers(2, 12))))
        pairs.append((" ".join(words), " ".join(w.upper() for w in reversed(words))))
    for path, side in ((source_path, 0), (target_path, 1)):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(p[side] + "\n" for p in pairs))
    return pairs
