"""What a report covers: exactly the runs of one study grid, and what it says about the rest.

A table must never mix configurations: the report uses the newest FINISHED run of each key
of the grid (the manifest), leaves out every other run of the experiment (another epochs
setting, a removed method) and says how many it left out, and warns about runs that are
pending or failed and about cells whose number of seeds differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from studybench.store.liveness import run_state
from studybench.study.spec import SOURCES


@dataclass
class Scope:
    expected: int  # runs in the grid
    finished: int  # of them with a FINISHED run
    seeds: list[int]
    pending: list[str] = field(default_factory=list)  # names of grid runs never started
    failed: list[str] = field(default_factory=list)  # names of grid runs whose newest attempt failed
    running: list[str] = field(default_factory=list)
    left_out: int = 0  # finished run keys of this experiment that are not in the grid
    unequal: list[str] = field(default_factory=list)  # "cell: n=k" where seeds per cell differ
    seeds_text: str = ""  # seeds by source, as written (their runs' seed ids say nothing to a reader)

    def header(self) -> str:
        """The report's first line: what it covers."""
        seeds = self.seeds_text or f"seeds {self.seeds}"
        return f"{self.finished} of {self.expected} runs of this study finished; {seeds}"

    def warnings(self) -> list[str]:
        out = []
        for what, names in (("pending", self.pending), ("failed", self.failed), ("still running", self.running)):
            if names:
                shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                out.append(f"{len(names)} run(s) of the study {what}, not in the tables: {shown}")
        if self.left_out:
            out.append(
                f"{self.left_out} finished run(s) of other configurations in this experiment were left out "
                "(not in this study's grid)"
            )
        if self.unequal:
            out.append("unequal number of seeds per cell: " + "; ".join(self.unequal[:6]))
        return out


def grid_scope(manifest: dict[str, Any], latest: dict[str, Any], finished: dict[str, Any]) -> Scope:
    """Coverage of the manifest's grid by the store's runs (``latest``/``finished``: key -> newest run)."""
    grid = {r["key"]: r for r in manifest["runs"]}
    scope = Scope(expected=len(grid), finished=sum(k in finished for k in grid), seeds=list(manifest["seeds"]))
    for key, entry in grid.items():
        if key in finished:
            continue
        state = run_state(latest.get(key)).state
        {"pending": scope.pending, "failed": scope.failed, "running": scope.running}[state].append(entry["name"])
    scope.left_out = sum(1 for key in finished if key not in grid)
    scope.seeds_text = seeds_by_source_text(manifest)
    return scope


def seeds_by_source_text(manifest: dict[str, Any]) -> str:
    """``seeds by source: init [0, 1, 2] x data [0, 1] (others 0)`` for a study that gives them so, else ""."""
    definition = manifest.get("definition") or {}
    profile = (definition.get("profiles") or {}).get(manifest.get("profile") or "") or {}
    seeds = profile.get("seeds") or definition.get("seeds")
    if not isinstance(seeds, dict):
        return ""
    given = [f"{name} {seeds[name]}" for name in SOURCES if seeds.get(name) is not None]
    return f"seeds by source: {' x '.join(given)}" + (" (others 0)" if len(given) < len(seeds) else "")


def unequal_cells(frame: pd.DataFrame, cell: list[str]) -> list[str]:
    """``"cell: n=k"`` for cells whose number of runs differs from the most common one."""
    if frame.empty:
        return []
    counts = frame.groupby(cell, dropna=False).size()
    usual = counts.mode().iloc[0]
    return [f"{_cell_name(idx)}: n={n}" for idx, n in counts.items() if n != usual]


def _cell_name(idx: Any) -> str:
    """``synthetic / ce / unet``: the cell's values, without empty axes or repeats of the method and dataset."""
    values = [str(v) for v in (idx if isinstance(idx, tuple) else (idx,)) if not pd.isna(v)]
    return " / ".join(dict.fromkeys(v for v in values if v not in ("null", "None", "")))
