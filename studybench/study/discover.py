"""What a study may name: every registered loss, dataset, scheme and smp architecture, with its parameters.

``studybench losses`` (``datasets``, ``schemes``, ``archs``) prints these entries. They are read
from the registries and the factories' own signatures and docstrings, so the listing can never
drift from what a study accepts: a parameter shown here is one ``Registry.check`` validates.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any

from studybench.registry import Registry

#: Keyword arguments of smp's model classes that studybench sets itself (``model.arch/encoder/weights``, classes).
SMP_SET_BY_US = ("encoder_name", "encoder_weights", "in_channels", "classes")
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
    for alias, target in getattr(registry, "_aliases", {}).items():
        aliases.setdefault(target, []).append(alias)
    out = []
    for name in registry.names():
        factory = registry.get(name)
        params = {k: _default(p) for k, p in registry.parameters(name).items() if p.kind not in _VARIADIC}
        out.append(Entry(name, summary(factory), params, reference(factory), tuple(sorted(aliases.get(name, ())))))
    return out


def arch_entries() -> list[Entry]:
    """The smp architectures ``model.arch`` accepts, with the options ``model.options`` may set."""
    import segmentation_models_pytorch as smp

    out = []
    for name in sorted(smp.MODEL_ARCHITECTURES_MAPPING):
        cls = smp.MODEL_ARCHITECTURES_MAPPING[name]
        sig = inspect.signature(cls.__init__).parameters
        params = {
            k: _default(p) for k, p in sig.items() if k != "self" and k not in SMP_SET_BY_US and p.kind not in _VARIADIC
        }
        out.append(Entry(name, summary(cls), params, reference(cls)))
    return out


def summary(obj: Any) -> str:
    """The first line of ``obj``'s docstring, without reST link markup (``U-Net``__ -> U-Net)."""
    doc = inspect.getdoc(obj) or ""
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    return re.sub(r"`([^`]+)`__", r"\1", first).strip()


def reference(obj: Any) -> str:
    """The paper a docstring cites: its ``Reference:`` paragraph (class, then module), else its first link,
    else an ``X et al. 2019`` in its first line."""
    for doc in (inspect.getdoc(obj), inspect.getmodule(obj).__doc__ if inspect.getmodule(obj) else None):
        found = _reference_paragraph(doc or "")
        if found:
            return found
    link = re.search(r"\.\. __: (\S+)", inspect.getdoc(obj) or "")
    if link:
        return link.group(1)
    cited = re.search(r"[A-Z][\w-]+ et al\.,? (?:[A-Za-z]+ )?(?:19|20)\d\d", summary(obj))  # "Zhao et al. 2019"
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
    if param.default is inspect.Parameter.empty:
        return _REQUIRED
    value = param.default
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
