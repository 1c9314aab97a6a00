"""A class's constructor parameters and docstrings read from its source file, without importing it.

Why: ``studybench losses`` (``datasets``, ``schemes``, ``archs``) describes what a study may
name, and importing the losses or smp costs torch (4 s of CPU) for a listing. The source is
what ``inspect`` would read anyway; ``tests/test_discover.py`` checks that both agree for every
entry. ``from .x import Name`` re-exports and base classes in the same or an imported module are
followed; anything else raises ``LookupError`` and the caller falls back to importing.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

#: A parameter whose default is missing (required).
REQUIRED = object()


@dataclass(frozen=True)
class SourceClass:
    """A class definition found in ``module``'s source."""

    module: str
    node: ast.ClassDef
    tree: ast.Module

    @property
    def doc(self) -> str:
        """Its docstring, or the first base's (as ``inspect.getdoc`` inherits it)."""
        own = ast.get_docstring(self.node)
        if own is not None:
            return own
        base = self.base()
        return base.doc if base is not None else ""

    @property
    def module_doc(self) -> str:
        return ast.get_docstring(self.tree) or ""

    def base(self) -> SourceClass | None:
        """The first base class when it is named in this module's namespace (``SegLoss``), else None."""
        first = self.node.bases[0] if self.node.bases else None
        if not isinstance(first, ast.Name):
            return None
        try:
            return find_class(self.module, first.id)
        except LookupError:
            return None

    def parameters(self) -> dict[str, object]:
        """``__init__``'s named parameters (``self`` and ``*args``/``**kwargs`` left out) -> default
        value (``REQUIRED`` if none; the source text where it is not a literal)."""
        init = next((n for n in self.node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        if init is None:
            base = self.base()
            return base.parameters() if base is not None else {}
        args = init.args
        positional = [*args.posonlyargs, *args.args][1:]
        defaults = [REQUIRED] * (len(positional) - len(args.defaults)) + [_value(d) for d in args.defaults]
        out = {a.arg: d for a, d in zip(positional, defaults)}
        out.update({a.arg: REQUIRED if d is None else _value(d) for a, d in zip(args.kwonlyargs, args.kw_defaults)})
        return out


class SourceText(str):
    """A default that is no literal (``IGNORE_INDEX``, ``nn.ReLU``), shown as written."""


def _value(node: ast.expr) -> object:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return SourceText(ast.unparse(node))


def find_class(module: str, name: str) -> SourceClass:
    """The definition of ``name`` as ``module`` exposes it, following ``from ... import`` re-exports."""
    tree = _tree(module)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return SourceClass(module, node, tree)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return find_class(_absolute(module, node), alias.name)
    raise LookupError(f"no class {name!r} in the source of {module}")


def module_names(module: str, variable: str) -> list[str]:
    """The names listed in ``variable = [A, B, ...]`` at the top of ``module`` (smp's architectures)."""
    for node in _tree(module).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == variable for t in node.targets):
            if isinstance(node.value, (ast.List, ast.Tuple)) and all(isinstance(e, ast.Name) for e in node.value.elts):
                return [e.id for e in node.value.elts]
    raise LookupError(f"no list {variable} in the source of {module}")


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The module a (possibly relative) ``from ... import`` in ``module`` names."""
    if not node.level:
        return node.module or ""
    package = module if _file(module).name == "__init__.py" else module.rpartition(".")[0]
    parts = package.split(".")
    base = parts[: len(parts) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def _tree(module: str) -> ast.Module:
    return ast.parse(_file(module).read_text(encoding="utf-8"))


@cache
def _file(module: str) -> Path:
    """``module``'s source file, found from its top-level package alone (which is located, not imported)."""
    top, _, rest = module.partition(".")
    spec = importlib.util.find_spec(top)
    if spec is None or spec.origin is None:
        raise LookupError(f"no source for {module}")
    path = Path(spec.origin).parent.joinpath(*rest.split(".")) if rest else Path(spec.origin).parent
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise LookupError(f"no source file for {module}")
