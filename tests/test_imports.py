"""Imports run downward: no import cycle among cvaia's modules, function-local imports included."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import cvaia

PACKAGE = Path(cvaia.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """``{module: cvaia modules it imports anywhere in its source}`` (``ast``, so imports inside
    functions count; a package's implicit import of its ``__init__`` does not)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # ``from pkg import sub`` imports the submodule pkg.sub
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in files else mod for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in files:  # ``import cvaia.models.builder.x`` → the module part
                    t = t.rpartition(".")[0]
                if t and t != name:
                    edges.add(t)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_graph_sees_function_local_imports():
    graph = import_graph()
    assert "cvaia.config" in graph["cvaia.runs"]
    assert "cvaia.train" in graph["cvaia.runs"]  # imported inside get_run only
    assert "cvaia.run_folder" in graph["cvaia.train"] and "cvaia.runs" not in graph["cvaia.train"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_reading_a_config_does_not_import_torch():
    """``cvaia.config`` (flags, validation, hashes) stays torch-free, so ``--help`` and a bad
    flag's error come back at once; the models are imported only to build one."""
    code = ("import sys, cvaia.config as c; c.make_config(model_name='adaptive_depth', tasks='depth'); "
            "print(sorted(m for m in ('torch', 'torchvision', 'cvaia.models') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
