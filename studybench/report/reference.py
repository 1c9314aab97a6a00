"""Paper values declared in a study file, matched to our runs.

A study lists the numbers its source paper reports under ``reference:``, one mapping per
number, so the report can show them beside ours::

    reference:
      - {method: rmi, dataset: voc2012-aug, arch: deeplabv3, miou: 0.7871, note: "Table 1"}
      - {method: rmi, dataset: voc2012-aug, arch: deeplabv3, ablation: region-f4, loss.radius: 2, miou: 0.7852}

Accepted keys:

- ``method`` (required): a method name of the study's grid.
- ``dataset``, ``arch``: restrict the match to runs on that dataset / architecture (omitted: any).
- ``ablation``: the value belongs to that ablation's table (omitted: the main comparison).
- any dotted config key (``loss.radius``, ``train.iterations``, ...): the run's resolved value
  of that key must equal it (compared as text, so ``3`` matches a logged ``3``).
- ``miou``, ``pixel_acc``, ``mean_acc``: the paper's values as fractions in [0, 1] (77.14 % is
  ``0.7714``), like the metrics studybench logs.
- ``note``: free text shown in the table (e.g. ``"Table 2"``).

A key outside this list, or a value out of range, is listed as a problem on the report page
(the rest of the report is still built).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

import studybench.report.stats as stats
from studybench.report.collect import in_group, label, param_values

METRIC_KEYS = ("miou", "pixel_acc", "mean_acc")
PLAIN_KEYS = ("method", "dataset", "arch", "ablation", "note", *METRIC_KEYS)
SECTIONS = ("data", "model", "loss", "scheme", "train")


def check_reference(entries: list[Mapping[str, Any]]) -> list[str]:
    """Problems with the study's ``reference:`` entries (empty when all are valid)."""
    problems = []
    for i, entry in enumerate(entries):
        where = f"reference[{i}]"
        if not isinstance(entry.get("method"), str):
            problems.append(f"{where}: 'method' is required (a method name of the grid), got {entry.get('method')!r}")
        for key, value in entry.items():
            if key in METRIC_KEYS:
                if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                    problems.append(f"{where}.{key}: expected a fraction in [0, 1] (77.1 % is 0.771), got {value!r}")
            elif key not in PLAIN_KEYS and not _dotted(key):
                problems.append(
                    f"{where}: unknown key {key!r}; allowed: {', '.join(PLAIN_KEYS)} or a dotted config key (e.g. loss.radius)"
                )
    return problems


def _dotted(key: str) -> bool:
    return "." in key and key.split(".", 1)[0] in SECTIONS


def _settings(entry: Mapping[str, Any]) -> dict[str, str]:
    return {k: label(v) for k, v in entry.items() if _dotted(k)}


def match_reference(
    entries: list[Mapping[str, Any]],
    cell: Mapping[str, Any],
    ablation: str | None = None,
    keys: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The first entry that describes ``cell`` (method, dataset, arch) in ``ablation`` with ``keys`` values."""
    want = {k: label(v) for k, v in (keys or {}).items()}
    for entry in entries:
        if entry.get("method") != cell.get("method") or entry.get("ablation") != ablation:
            continue
        if any(entry.get(k) is not None and entry.get(k) != cell.get(k) for k in ("dataset", "arch")):
            continue
        if _settings(entry) != want:
            continue
        return dict(entry)
    return None


def reference_rows(frame: pd.DataFrame, study: Any) -> pd.DataFrame | None:
    """One row per valid reference entry: the paper's values and ours (mean, std, n over matching runs)."""
    entries = [e for e in study.reference if isinstance(e.get("method"), str)]
    if not entries:
        return None
    rows = []
    for entry in entries:
        mask = frame["method"] == entry["method"]
        for key in ("dataset", "arch"):
            if entry.get(key) is not None:
                mask &= frame[key] == entry[key]
        mask &= in_group(frame, entry.get("ablation") or "main")
        for key, value in _settings(entry).items():
            mask &= param_values(frame, key).map(label) == value
        ours = stats.summarise(frame[mask].assign(_all=0), ["_all"], list(METRIC_KEYS)) if mask.any() else None
        setting = ", ".join(
            [
                *([f"ablation {entry['ablation']}"] if entry.get("ablation") else []),
                *(f"{k}={v}" for k, v in _settings(entry).items()),
            ]
        )
        row = {
            "method": entry["method"],
            "dataset": entry.get("dataset", "any"),
            "arch": entry.get("arch", "any"),
            "setting": setting or "main",
            "note": entry.get("note", ""),
            "n": int(ours["n"].iloc[0]) if ours is not None else 0,
        }
        for metric in METRIC_KEYS:
            row[f"paper_{metric}"] = float(entry[metric]) if isinstance(entry.get(metric), (int, float)) else math.nan
            row[metric] = float(ours[metric].iloc[0]) if ours is not None else math.nan
            row[f"{metric}_std"] = float(ours[f"{metric}_std"].iloc[0]) if ours is not None else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["METRIC_KEYS", "check_reference", "match_reference", "reference_rows"]
