"""The package's shape: imports flow one way, the CLI stays thin, listing commands leave torch alone."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

PACKAGE = REPO / "studybench"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> studybench modules it imports anywhere (inside functions too), from the source."""
    modules = _modules()

    def owner(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            graph[module] |= {t for t in map(owner, names) if t and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> set[str]:
    """Modules that reach themselves again through an import that is not their own package's."""

    def reaches(start: str, goal: str) -> bool:
        todo, met = [start], set()
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in met:
                    met.add(nxt)
                    todo.append(nxt)
        return False

    return {
        m
        for m, targets in graph.items()
        for t in targets
        if not t.startswith(m + ".") and not m.startswith(t + ".") and reaches(t, m)
    }


def test_the_walk_finds_a_cycle_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {"a", "b", "c"}


def test_no_import_cycle_in_the_package():
    found = cycles(import_graph())
    assert not found, f"{len(found)} modules on an import cycle: {sorted(found)}"


def test_cli_functions_fit_on_a_screen():
    """cli.py parses and prints; the program is in api.py. Body lines: typer declares options in the signature."""
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    long = {
        node.name: node.end_lineno - node.body[0].lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.end_lineno - node.body[0].lineno + 1 > 40
    }
    assert not long, f"functions of cli.py over 40 lines: {long}"
