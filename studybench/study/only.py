"""What ``--only key=value`` can match, and why a filter matched no run.

Why: "matches no run" alone left a user guessing between a misspelt key (``metod=rmi``) and a
value the grid does not have (``method=rmj``); the message now lists the keys and their values.
"""

from __future__ import annotations

from typing import Any

from studybench.registry import did_you_mean

#: Values listed per key before the rest are counted (an axis may have hundreds).
MAX_SHOWN = 12


def run_fields(spec: Any) -> dict[str, str]:
    """The ``key=value`` pairs a run answers to: its axes (dotted and by last part), seed, method, dataset, arch."""
    axes = {k: str(v) for k, v in spec.axes.items() if v is not None}  # no dataset axis: dataset None
    fields = {k.rsplit(".", 1)[-1]: v for k, v in axes.items()}
    fields.update(axes)
    fields.update(seed=str(spec.seed), method=spec.method, dataset=spec.dataset, arch=spec.arch)
    return fields


def why_no_match(specs: list[Any], terms: list[str]) -> str:
    """The first term no run satisfies (key unknown, value absent, substring in no name), else the combination."""
    values: dict[str, set[str]] = {}
    for spec in specs:
        for key, value in run_fields(spec).items():
            values.setdefault(key, set()).add(value)
    for term in terms:
        if "=" not in term:
            if not any(term in s.name for s in specs):
                return f"no run name contains {term!r}; {_keys(values)}"
            continue
        key, value = (part.strip() for part in term.split("=", 1))
        if key not in values:
            return f"unknown key {key!r}{did_you_mean(key, sorted(values))}; {_keys(values)}"
        if value not in values[key]:
            known = sorted(values[key])
            return f"no run has {key}={value}{did_you_mean(value, known)}; {key} is one of: {_listed(known)}"
    return "each term matches some run, but no run matches all of them; " + _keys(values)


def _keys(values: dict[str, set[str]]) -> str:
    return "keys and values: " + "; ".join(f"{k}: {_listed(sorted(v))}" for k, v in sorted(values.items()))


def _listed(values: list[str]) -> str:
    shown = ", ".join(values[:MAX_SHOWN])
    return shown if len(values) <= MAX_SHOWN else f"{shown} (+{len(values) - MAX_SHOWN} more)"
