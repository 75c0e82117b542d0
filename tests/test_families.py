"""Model families: the registry (every preset once, every family module documented), and the
rule that shared code knows mechanisms, never family names (an AST check of nn/ and models.py).
"""

from __future__ import annotations

import ast
import pathlib
import types

import pytest

from transformer_jax import families, presets
from transformer_jax.config import ModelConfig

ROOT = pathlib.Path(families.__file__).resolve().parents[1]  # transformer_jax/
SHARED = sorted((ROOT / "nn").glob("*.py")) + [ROOT / "models.py"]
WELL_KNOWN = {
    "gpt", "gpt2", "bert", "bart", "t5", "llama", "mistral", "falcon", "roberta", "albert",
    "marian", "mbart", "xlnet", "codegen",
}  # fmt: skip


def test_registry_holds_every_preset_exactly_once():
    defined = [name for m in families.FAMILIES.values() for name in m.PRESETS]
    assert len(defined) == len(set(defined))
    assert sorted(defined) == presets.names() == sorted(families.PRESETS)
    assert set(families.FAMILY_OF) == set(families.PRESETS)
    for name, config in families.PRESETS.items():
        module = families.FAMILIES[families.FAMILY_OF[name]]
        assert module.PRESETS[name] is config is presets.get(name)
        assert isinstance(config, ModelConfig)


@pytest.mark.parametrize("family", sorted(families.FAMILIES))
def test_family_module_has_a_docstring_and_presets(family):
    module = families.FAMILIES[family]
    assert module.__name__ == f"transformer_jax.families.{family}"
    assert module.__doc__ and len(module.__doc__.strip()) > 40
    assert isinstance(module.PRESETS, dict) and module.PRESETS
    assert any(name.endswith("-tiny") for name in module.PRESETS)  # for tests and demos
    for name in module.PRESETS:
        assert name in module.__doc__  # the table documents every preset


def test_a_preset_defined_twice_is_an_error(monkeypatch):
    twin = types.ModuleType("twin")
    twin.PRESETS = {"gpt-tiny": presets.get("bert-tiny")}
    monkeypatch.setattr(families, "FAMILIES", {**families.FAMILIES, "twin": twin})
    with pytest.raises(ValueError, match="'gpt-tiny' of family 'twin' is defined twice"):
        families._collect()


# --------------------------------------------------------------- no family names in shared code
def family_names() -> set[str]:
    return set(families.FAMILIES) | set(presets.names()) | WELL_KNOWN


def _strings(node: ast.AST) -> list[str]:
    """String constants of an operand: itself, or the items of a tuple/list/set literal."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [s for item in node.elts for s in _strings(item)]
    return []


def family_checks(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) for each ==, !=, in, not in comparison, startswith/endswith call or
    match-case value whose string constant is a family or preset name (case-insensitive;
    "bert-" and "_gpt" count as "bert" and "gpt")."""

    def is_name(s: str) -> bool:
        s = s.lower()
        return s in names or s.strip("-_. ") in names

    hits = []
    for node in ast.walk(ast.parse(source)):
        operands: list[ast.AST] = []
        if isinstance(node, ast.Compare):
            if any(isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops):
                operands = [node.left, *node.comparators]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("startswith", "endswith")
        ):
            operands = list(node.args)
        elif isinstance(node, ast.MatchValue):
            operands = [node.value]
        hits += [(node.lineno, s) for op in operands for s in _strings(op) if is_name(s)]
    return hits


def test_family_name_checker_catches_family_checks():
    names = family_names()
    snippet = """
if config.family == "bert":
    pass
ok = name != 'GPT2' and kind in ("rotary", "llama")
if arch not in ["encoder", "t5"]:
    pass
if name.startswith("bart-") or name.endswith(("_mistral", "x")):
    pass
match variant:
    case "falcon":
        pass
"""
    hits = family_checks(snippet, names)
    assert sorted(s for _, s in hits) == sorted(
        ["bert", "GPT2", "llama", "t5", "bart-", "_mistral", "falcon"]
    )
    assert [line for line, _ in hits if _ == "bert"] == [2]
    # Mechanisms, docstrings, names in other positions: not family checks.
    clean = '''
"""The bert-style pooler."""
if config.positions.kind == "rotary" and norm.residual in ("pre", "parallel"):
    name = "bert"
    table = {"gpt2": 1}
    print("llama" + name)
    if name.startswith("layer_"):
        pass
'''
    assert family_checks(clean, names) == []


@pytest.mark.parametrize("path", SHARED, ids=lambda p: p.name)
def test_shared_code_does_not_check_family_names(path):
    hits = family_checks(path.read_text(), family_names())
    assert not hits, (
        f"{path.relative_to(ROOT.parent)} branches on family names {hits}: shared code must "
        "know mechanisms (config fields), and families live in transformer_jax/families/."
    )
