"""What a study may name: every registered loss, dataset, scheme and smp architecture, with its parameters.

``studybench losses`` (``datasets``, ``schemes``, ``archs``) prints these entries. They are read
from the registries and the factories' own signatures and docstrings, so the listing can never
drift from what a study accepts: a parameter shown here is one ``Registry.typed`` validates. The
signatures and docstrings are read from the source files (``source``), not by importing the
factories: a listing then needs no torch and takes a fraction of a second.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from studybench.registry import Registry
from studybench.study.source import REQUIRED, SourceText, find_class, module_names

#: Keyword arguments of smp's model classes that studybench sets itself (``model.arch/encoder/weights``, classes).
SMP_SET_BY_US = ("encoder_name", "encoder_weights", "in_channels", "classes")
SMP = "segmentation_models_pytorch"
_REQUIRED = "(required)"
#: Where a study names an entry of each family.
FIELDS = {
    "losses": "loss.name",
    "datasets": "data.dataset, options in data.options",
    "schemes": "scheme.name",
    "archs": "model.arch, options in model.options",
}


@dataclass(frozen=True)
class Entry:
    """One name a study may use, with what a user needs to write it."""

    name: str
    summary: str  # first line of the factory's docstring
    params: dict[str, str] = field(default_factory=dict)  # parameter -> default as YAML would show it
    reference: str = ""  # the paper, where the docstring names one
    aliases: tuple[str, ...] = ()


def registry_entries(registry: Registry) -> list[Entry]:
    """Every name of ``registry`` (aliases folded into their target), sorted."""
    aliases: dict[str, list[str]] = {}
    for alias, target in registry.aliases().items():
        aliases.setdefault(target, []).append(alias)
    out = []
    for name in registry.names():
        entry = _entry(name, registry.target(name), lambda n=name: registry.get(n), registry.reserved)
        out.append(replace(entry, aliases=tuple(sorted(aliases.get(name, ())))))
    return out


def arch_entries() -> list[Entry]:
    """The smp architectures ``model.arch`` accepts, with the options ``model.options`` may set."""
    try:
        classes = {c.lower(): f"{SMP}:{c}" for c in module_names(SMP, "_MODEL_ARCHITECTURES")}
    except LookupError:  # another smp layout: ask the imported package
        import segmentation_models_pytorch as smp

        classes = {n: None for n in smp.MODEL_ARCHITECTURES_MAPPING}

    def imported(name: str) -> Any:
        import segmentation_models_pytorch as smp

        return smp.MODEL_ARCHITECTURES_MAPPING[name]

    return [_entry(n, classes[n], lambda n=n: imported(n), frozenset(SMP_SET_BY_US)) for n in sorted(classes)]


def _entry(name: str, target: str | None, load: Callable[[], Any], hidden: frozenset[str]) -> Entry:
    """The entry of ``name`` from the source of ``target`` (``"module:Class"``), else from the loaded class."""
    if target is not None:
        try:
            found = find_class(*target.split(":"))
            params = {k: _shown(v) for k, v in found.parameters().items() if k not in hidden}
            return Entry(name, _summary(found.doc), params, _reference(found.doc, found.module_doc))
        except LookupError:
            pass
    factory = load()
    target = factory.__init__ if inspect.isclass(factory) else factory
    signature = inspect.signature(target).parameters.items()
    params = {k: _default(p) for k, p in signature if k != "self" and k not in hidden and p.kind not in _VARIADIC}
    return Entry(name, summary(factory), params, reference(factory))


def summary(obj: Any) -> str:
    """The first line of ``obj``'s docstring as plain text: no reST links, roles or literal quotes."""
    return _summary(inspect.getdoc(obj) or "")


def _summary(doc: str) -> str:
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    first = re.sub(r"`([^`]+)`__", r"\1", first)  # reST link
    first = re.sub(r":\w+:`~?([^`]+)`", r"\1", first)  # :func:`name`
    return re.sub(r"``([^`]+)``", r"\1", first).strip()  # ``literal``


def reference(obj: Any) -> str:
    """The paper ``obj``'s docstring (or its module's) cites (see ``_reference``)."""
    module = inspect.getmodule(obj)
    return _reference(inspect.getdoc(obj) or "", module.__doc__ if module else None)


def _reference(doc: str, module_doc: str | None) -> str:
    """The paper a docstring cites: its ``Reference:`` paragraph (class, then module), else its first link,
    else an ``X et al. 2019`` in its first line."""
    for text in (doc, module_doc):
        found = _reference_paragraph(text or "")
        if found:
            return found
    link = re.search(r"\.\. __: (\S+)", doc)
    if link:
        return link.group(1)
    cited = re.search(r"[A-Z][\w-]+ et al\.,? (?:[A-Za-z]+ )?(?:19|20)\d\d", _summary(doc))  # "Zhao et al. 2019"
    return cited.group(0) if cited else ""


def _reference_paragraph(doc: str) -> str:
    """Text of the paragraph that starts with ``Reference``, cut after the venue and year."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if not re.match(r"\s*References?\b", line):
            continue
        text = line.split(":", 1)[1] if ":" in line else ""
        for more in lines[i + 1 :]:
            if not more.strip():
                break
            text += " " + more.strip()
        return _cut(" ".join(text.split()))
    return ""


def _cut(text: str, limit: int = 160) -> str:
    """The citation part of a reference: up to the year (and a parenthesis after it), else a clause or ``limit``."""
    year = re.match(r"(.*?\b(?:19|20)\d\d\b(?:\s*\([^)]*\))?)", text)
    if year and len(year.group(1)) <= 2 * limit:
        return year.group(1)
    clause = re.split(r" — |; |: ", text)[0]
    return clause if len(clause) <= limit else text[: limit - 1] + "…"


def _default(param: inspect.Parameter) -> str:
    """A parameter's default as a user would write it in YAML (``None`` -> null)."""
    return _shown(REQUIRED if param.default is inspect.Parameter.empty else param.default)


def _shown(value: Any) -> str:
    if value is REQUIRED:
        return _REQUIRED
    if isinstance(value, SourceText):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


_VARIADIC = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)


def entries(family: str) -> list[Entry]:
    """Entries of ``family``: ``losses``, ``datasets``, ``schemes`` or ``archs``."""
    if family == "archs":
        return arch_entries()
    if family == "losses":
        from studybench.losses import LOSSES as registry
    elif family == "datasets":
        from studybench.data import DATASETS as registry
    elif family == "schemes":
        from studybench.schemes import SCHEMES as registry
    else:
        raise ValueError(f"unknown family {family!r}; one of losses, datasets, schemes, archs")
    return registry_entries(registry)


def format_params(entry: Entry) -> str:
    """``radius=3, pool='avg'``; a required parameter shows as ``terms (required)``."""
    return ", ".join(f"{k} {v}" if v == _REQUIRED else f"{k}={v}" for k, v in entry.params.items()) or "none"


__all__ = ["FIELDS", "Entry", "arch_entries", "entries", "format_params", "reference", "registry_entries", "summary"]
