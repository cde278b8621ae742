"""The exercise cells of the notebooks, and the student build (``python -m cvaia student``).

In the workbook's notebooks every course module the students write has

- an **exercise cell** (tag ``exercise``): the stub — a class or function whose body raises
  ``NotImplementedError`` — and, at the end of the cell, a block starting with
  :data:`SOLUTION_MARKER` (``if P.SOLUTIONS:``) that replaces the stub by cvaia's readable
  reference (:mod:`cvaia.reference`) when the notebook parameter ``SOLUTIONS`` is True (the
  default: batch runs and the tests execute the references);
- a **check cell** (tag ``exercise-check``) right after it, calling one
  :mod:`cvaia.exercises` check with ``required=P.SOLUTIONS``.

The only definitions a notebook may hold are in exercise cells (tests/test_notebook_structure.py).

:func:`student_notebook` turns a notebook into its student version: ``SOLUTIONS = False`` in the
parameters cell, the solution block cut from every exercise cell, and — in notebooks with
exercises — the statements that display a reference's source (``inspect.getsource``) replaced
by a note, outputs cleared. :func:`build_student` writes all of them into a new folder. Reads
and writes JSON only (no torch).
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
from pathlib import Path

EXERCISE_TAG = "exercise"
CHECK_TAG = "exercise-check"
#: The line that opens an exercise cell's solution block (the rest of the cell).
SOLUTION_MARKER = "if P.SOLUTIONS:"
#: What replaces a statement showing a reference's source in the student build.
HIDDEN_SOURCE = ('display(Markdown("*The reference implementation is not shown in the student build: '
                 'write your own in the exercise cells.*"))')
_SOLUTIONS_LINE = re.compile(r"^SOLUTIONS\s*=.*$", re.MULTILINE)


class StudentBuildError(RuntimeError):
    """The student build cannot be written (the output folder, or a notebook that does not fit)."""


def tags(cell: dict) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _set_source(cell: dict, text: str) -> None:
    parts = text.split("\n")
    cell["source"] = [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def exercise_cells(nb: dict) -> list[tuple[int, dict]]:
    """``(index, cell)`` of the exercise cells of notebook ``nb`` (its JSON)."""
    return [(i, c) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and EXERCISE_TAG in tags(c)]


def without_solution(text: str) -> str:
    """An exercise cell's source without its solution block (from :data:`SOLUTION_MARKER` on)."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.startswith(SOLUTION_MARKER):
            return "\n".join(lines[:i]).rstrip() + "\n"
    return text


def _hide_reference_source(text: str) -> str:
    """Replace each top-level statement calling ``inspect.getsource`` by :data:`HIDDEN_SOURCE`."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text
    spans = []
    for node in tree.body:
        calls = [n for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                 and n.func.attr == "getsource" and isinstance(n.func.value, ast.Name) and n.func.value.id == "inspect"]
        if calls:
            spans.append((node.lineno, node.end_lineno))
    if not spans:
        return text
    lines = text.split("\n")
    for start, end in reversed(spans):
        indent = re.match(r"\s*", lines[start - 1]).group(0)
        lines[start - 1:end] = [indent + HIDDEN_SOURCE]
    return "\n".join(lines)


def student_notebook(nb: dict, name: str = "notebook") -> dict:
    """The student version of notebook ``nb`` (a copy; ``name`` only labels errors)."""
    nb = copy.deepcopy(nb)
    has_exercises = bool(exercise_cells(nb))
    params = [c for c in nb["cells"] if c["cell_type"] == "code" and "parameters" in tags(c)]
    if len(params) != 1:
        raise StudentBuildError(f"{name}: expected one cell tagged 'parameters', found {len(params)}")
    text = source(params[0])
    if not _SOLUTIONS_LINE.search(text):
        raise StudentBuildError(f"{name}: its parameters cell has no SOLUTIONS line (expected 'SOLUTIONS = True')")
    _set_source(params[0], _SOLUTIONS_LINE.sub(
        "SOLUTIONS = False  # the student build: the exercise cells hold your code", text, count=1))
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        text = source(cell)
        if EXERCISE_TAG in tags(cell):
            stripped = without_solution(text)
            if stripped == text:
                raise StudentBuildError(f"{name}: exercise cell {cell.get('id', '?')} has no solution block "
                                        f"(a line starting with {SOLUTION_MARKER!r})")
            text = stripped.rstrip("\n")
        elif has_exercises:
            text = _hide_reference_source(text)
        _set_source(cell, text)
        cell["outputs"], cell["execution_count"] = [], None
    return nb


def build_student(out: str | os.PathLike, notebooks_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write the student version of every notebook ``NN_*.ipynb`` of ``notebooks_dir`` (default:
    the workbook's) into the new folder ``out``; never into a non-empty folder. Returns the paths."""
    from .workbook import list_notebooks

    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise StudentBuildError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise StudentBuildError(f"--out {out}: the folder is not empty; the student build writes only into a new or "
                                f"empty folder (it never overwrites notebooks a student may have worked in)")
    sources = list_notebooks(notebooks_dir)
    if not sources:
        raise StudentBuildError(f"no notebooks NN_*.ipynb in {notebooks_dir}")
    built = []
    for path in sources:
        try:
            nb = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise StudentBuildError(f"{path}: cannot be read as a notebook ({exc})") from exc
        built.append((path.name, student_notebook(nb, path.name)))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, nb in built:
        target = out / name
        target.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(target)
    return written


def exercise_list(notebooks: list[Path]) -> list[tuple[str, str, str]]:
    """``(notebook, cell id, first line)`` of every exercise cell, for the command's summary."""
    rows = []
    for path in notebooks:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
        for _, cell in exercise_cells(nb):
            first = source(cell).split("\n", 1)[0].lstrip("# ").split(": your code")[0].strip()
            rows.append((Path(path).name, cell.get("id", "?"), first))
    return rows
