"""Notebooks only call: no function or class definitions in code cells — except the students'
exercise cells (tag ``exercise``: stubs, each followed by its check cell) — and each parameters
cell lists exactly the common parameters plus its problem's profile keys. Reads the JSON only
(nothing is executed): milliseconds."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from cvaia import exercises_notebooks as EN
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
    found = {i: definitions(src) for i, c, src in code_cells(path) if EN.EXERCISE_TAG not in c.get("metadata", {}).get("tags", [])}
    found = {i: names for i, names in found.items() if names}
    assert not found, (f"{path.name}: cells {found} define functions/classes; move them to "
                       f"cvaia/experiments/p{path.name[:2]}.py (notebooks only call; only cells tagged "
                       f"'{EN.EXERCISE_TAG}' hold the students' stubs)")


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


def top_level_names(source: str) -> list[str]:
    return [n.name for n in ast.parse(source).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]


def is_stub(node) -> bool:
    """A function whose body is (docstring,) (super().__init__(),) raise NotImplementedError(...)."""
    body = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if body and isinstance(body[0], ast.Expr) and "super().__init__" in ast.unparse(body[0]):
        body = body[1:]
    return (len(body) == 1 and isinstance(body[0], ast.Raise) and body[0].exc is not None
            and "NotImplementedError" in ast.unparse(body[0].exc))


def test_stub_detection():
    stub = ast.parse("def f(x):\n    \"\"\"doc\"\"\"\n    raise NotImplementedError('write f')\n").body[0]
    done = ast.parse("def f(x):\n    return x\n").body[0]
    assert is_stub(stub) and not is_stub(done)


EXERCISE_NOTEBOOKS = [p for p in NOTEBOOKS if p.name[:2] != "00"]


@pytest.mark.parametrize("path", EXERCISE_NOTEBOOKS, ids=lambda p: p.stem)
def test_exercise_cells_are_stubs_with_a_solution_block_and_a_check_cell(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = nb["cells"]
    found = EN.exercise_cells(nb)
    assert found, f"{path.name}: no exercise cell (tag {EN.EXERCISE_TAG!r})"
    for i, cell in found:
        src = EN.source(cell)
        student = EN.without_solution(src)
        assert student != src, f"{path.name} cell {i}: no solution block ({EN.SOLUTION_MARKER!r} …)"
        names = top_level_names(student)
        assert names, f"{path.name} cell {i}: an exercise cell defines the student's class or function"
        for node in ast.walk(ast.parse(student)):
            if isinstance(node, ast.FunctionDef):
                assert is_stub(node), f"{path.name} cell {i}: {node.name} is not a stub (raise NotImplementedError)"
        solution = src[len(student.rstrip()):]
        assert "cvaia.reference" in solution and all(n in solution for n in names), (path.name, i, solution)
        assert "reference" not in student, f"{path.name} cell {i}: the stub part mentions the reference"
        nxt = cells[i + 1]
        assert EN.CHECK_TAG in EN.tags(nxt), f"{path.name}: cell {i + 1} after exercise cell {i} is not its check"
        check = EN.source(nxt)
        for name in names:
            assert re.search(rf"exercises\.check_\w+\({name}, required=P\.SOLUTIONS\)", check), (path.name, name)


@pytest.mark.parametrize("path", EXERCISE_NOTEBOOKS, ids=lambda p: p.stem)
def test_the_narrative_never_uses_the_students_code(path):
    """What a stub defines is used only by its check: the rest of the notebook runs on cvaia's modules,
    so a student's unfinished exercise never breaks it."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    defined: dict[str, int] = {}
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        tags = EN.tags(cell)
        src = EN.source(cell)
        if EN.EXERCISE_TAG in tags:
            defined.update({n: i for n in top_level_names(EN.without_solution(src))})
        elif EN.CHECK_TAG not in tags:
            used = {n.id for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
            clash = sorted(used & set(defined))
            assert not clash, f"{path.name} cell {i} uses {clash}, defined by exercise cell(s) {[defined[n] for n in clash]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_solutions_default_to_true(path):
    """Batch runs and the tests execute cvaia's references; the student build sets it to False."""
    tagged = [src for _, c, src in code_cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    values = [node.value for node in ast.parse(tagged[0]).body if isinstance(node, ast.Assign)
              and any(isinstance(t, ast.Name) and t.id == "SOLUTIONS" for t in node.targets)]
    assert len(values) == 1 and isinstance(values[0], ast.Constant) and values[0].value is True
    assert experiments.COMMON["SOLUTIONS"] is True
