"""README's Python cannot rot: every ```python block of the sections "Use it from your own JAX
code" and "Sampling" runs here, in file order, in one namespace (issue 18). The one change
made to the text: the example workdir path becomes a copy of a committed workdir
(tests/fixtures/legacy_v1/gpt_tiny, written by an older version and migrated as it loads)."""

from __future__ import annotations

import os
import re
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("Use it from your own JAX code", "Sampling")
EXAMPLE_WORKDIR = '"workdirs/gpt_tiny"'


def readme_blocks() -> list[tuple[str, str]]:
    """(section title, code) of every python block in SECTIONS, in file order."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    found = []
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        title = section.splitlines()[0].strip()
        if title in SECTIONS:
            for code in re.findall(r"^```python\n(.*?)^```", section, flags=re.M | re.S):
                found.append((title, code))
    return found


def test_readme_python_blocks_run(tmp_path):
    blocks = readme_blocks()
    assert [t for t, _ in blocks].count("Sampling") == 1 and len(blocks) >= 7, blocks
    source = os.path.join(ROOT, "tests", "fixtures", "legacy_v1", "gpt_tiny")
    workdir = shutil.copytree(source, tmp_path / "gpt_tiny")
    assert sum(code.count(EXAMPLE_WORKDIR) for _, code in blocks) == 1
    namespace: dict = {}
    for title, code in blocks:
        code = code.replace(EXAMPLE_WORKDIR, repr(str(workdir)))
        exec(compile(code, f"README.md, section {title!r}", "exec"), namespace)  # noqa: S102
    # What the snippets computed is what they say.
    assert float(namespace["loss"]) > 0
    assert namespace["config"].arch == "decoder" and namespace["tokenizer"].vocab_size == 512
    assert namespace["tokens"].shape == (2, 32) and namespace["lengths"].shape == (2,)
    assert namespace["ids"] and namespace["mine"].width == 32
