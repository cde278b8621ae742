"""Notebooks only call: no function or class definitions in code cells, and each parameters
cell lists exactly the common parameters plus its problem's profile keys. Reads the JSON only
(nothing is executed): milliseconds."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from cvaia import experiments

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def code_cells(path: Path) -> list[tuple[int, dict, str]]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [(i, c, "".join(c["source"])) for i, c in enumerate(cells) if c["cell_type"] == "code"]


def definitions(source: str) -> list[str]:
    """Names of the functions and classes ``source`` defines (at any depth)."""
    tree = ast.parse(source)
    return [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def test_definitions_are_found():
    assert sorted(definitions("x = 1\nif x:\n    def f():\n        pass\nclass A:\n    pass\n")) == ["A", "f"]
    assert definitions("y = sorted(z, key=lambda v: -v)") == []


def test_there_are_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_definitions_in_code_cells(path):
    found = {i: definitions(src) for i, _, src in code_cells(path)}
    found = {i: names for i, names in found.items() if names}
    assert not found, (f"{path.name}: cells {found} define functions/classes; move them to "
                       f"cvaia/experiments/p{path.name[:2]}.py (notebooks only call)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_lists_exactly_the_known_parameters(path):
    tagged = [(i, src) for i, c, src in code_cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected one cell tagged 'parameters', found {len(tagged)}"
    names = [t.id for node in ast.parse(tagged[0][1]).body if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name)]
    assert len(names) == len(set(names)), f"{path.name}: a parameter is assigned twice: {names}"
    module = experiments.problem_module(path.name[:2])
    expected = set(experiments.COMMON) | set(module.PROFILES["quick"])
    assert set(names) == expected, (f"{path.name}: missing {sorted(expected - set(names))}, "
                                    f"unknown {sorted(set(names) - expected)}")
    for profile in experiments.PROFILE_NAMES:  # every profile names the same keys
        assert set(module.PROFILES[profile]) == set(module.PROFILES["quick"]), profile
