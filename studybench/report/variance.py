"""Variance by source: how much of a method's spread comes from its initial weights, its data order, ...

A study that gives seeds by source (``seeds: {init: [0, 1, 2], data: [0, 1]}``) runs the
Cartesian product of the sources' seeds (``spec.SOURCES``: ``init``, ``data``, ``aug``,
``method``). Per method and cell the runs then form a full factorial design with one run per
combination, and the spread of the mIoU splits into one part per varying source
(Bouthillier et al. 2021, "Accounting for variance in machine learning benchmarks", MLSys):

* **one varying source**: its variance is the sample variance of the runs (ddof 1);
* **several**: a random-effects analysis of variance without replication. For source ``j``
  with ``L_j`` levels among ``N`` runs, ``MS_j = (N / L_j) · Σ_l (ȳ_l - ȳ)² / (L_j - 1)`` and
  the residual mean square ``MS_e`` is what the main effects leave (interactions and every
  other draw), over ``N - 1 - Σ (L_j - 1)`` degrees of freedom. Since
  ``E[MS_j] = σ²_e + (N / L_j) σ²_j``, the unbiased estimate is
  ``σ²_j = (MS_j - MS_e) / (N / L_j)``, and ``σ²_e = MS_e`` (Searle, Casella & McCulloch,
  "Variance Components", 1992, ch. 4, method of moments / ANOVA estimators).

An estimate can be negative (noise larger than the effect): it is kept in ``variance.csv``
(truncating it at 0 would bias the average upwards) and shown as SD 0. With 2-3 seeds per
source a variance has 1-2 degrees of freedom, so read it as an order of size; only complete
designs (every combination present) are decomposed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from studybench.report.collect import in_group
from studybench.report.tables import Table, _axis_cols, _display_name, _labelled, _sort_methods, method_order, pct
from studybench.store.layout import PARAM_SEED_PREFIX
from studybench.study.spec import SOURCES

#: The name of what the main effects leave (interactions and every draw not varied on purpose).
RESIDUAL = "residual"


def components(values: np.ndarray) -> dict[str, float]:
    """Variance components of a full factorial array (one axis per varying source, one run per entry).

    Returns ``{"0": σ²_0, "1": σ²_1, ..., RESIDUAL: σ²_e}`` keyed by axis index; with one axis, its
    sample variance and no residual. NaN entries are not allowed (an incomplete design).
    """
    y = np.asarray(values, dtype=np.float64)
    if np.isnan(y).any():
        raise ValueError("an incomplete design (a NaN run) cannot be decomposed")
    if y.ndim == 1:
        return {"0": float(y.var(ddof=1))}
    n, grand = y.size, y.mean()
    out, ss_effects, df_effects = {}, 0.0, 0
    mean_squares = []
    for axis, levels in enumerate(y.shape):
        others = tuple(a for a in range(y.ndim) if a != axis)
        ss = (n / levels) * float(((y.mean(axis=others) - grand) ** 2).sum())
        mean_squares.append((ss / (levels - 1), n / levels))
        ss_effects, df_effects = ss_effects + ss, df_effects + levels - 1
    df_res = n - 1 - df_effects
    ms_res = (float(((y - grand) ** 2).sum()) - ss_effects) / df_res
    for axis, (ms, weight) in enumerate(mean_squares):
        out[str(axis)] = (ms - ms_res) / weight
    out[RESIDUAL] = ms_res
    return out


def _sources(frame: pd.DataFrame) -> pd.DataFrame | None:
    """Each run's seed per source (``param.seed.<source>``; a plain-seed run: every source its seed), or None."""
    cols = [f"param.{PARAM_SEED_PREFIX}{name}" for name in SOURCES]
    if not all(c in frame for c in cols):
        return None
    out = pd.DataFrame(index=frame.index)
    for name, col in zip(SOURCES, cols):
        out[_column(name)] = pd.to_numeric(frame[col], errors="coerce").fillna(frame["seed"]).astype("int64")
    return out


def _column(source: str) -> str:
    """A source's column in the working frame (``method`` is also a source's name)."""
    return f"{PARAM_SEED_PREFIX}{source}"


def variance_by_source(frame: pd.DataFrame, cell: list[str], metric: str = "miou") -> tuple[pd.DataFrame, list[str]]:
    """Per cell and method: one row per varying source and the residual (``variance``, ``sd``).

    Also returns the (cell, method) groups left out because their design is incomplete.
    Columns: cell, ``method``, ``runs``, ``component`` (a source or ``RESIDUAL``), ``levels``,
    ``variance``, ``sd`` (NaN for a negative variance), ``total_variance`` (sample variance of the runs).
    """
    cols = [*cell, "method", "runs", "component", "levels", "variance", "sd", "total_variance"]
    seeds = _sources(frame)
    if seeds is None:
        return pd.DataFrame(columns=cols), []
    data = pd.concat([frame[[*cell, "method", metric]], seeds], axis=1)
    rows, incomplete = [], []
    for key, group in data.groupby([*cell, "method"], sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        varied = [s for s in SOURCES if group[_column(s)].nunique() > 1]
        if not varied:
            continue
        index = [_column(s) for s in varied]
        design = group.pivot_table(index=index, values=metric, aggfunc="mean", dropna=False)[metric]
        shape = [group[c].nunique() for c in index]
        if design.size != math.prod(shape) or design.isna().any() or len(group) != design.size:
            incomplete.append(f"{' · '.join(map(str, key))}: {group[metric].notna().sum()} of {math.prod(shape)} runs")
            continue
        found = components(design.to_numpy().reshape(shape))
        total = float(group[metric].var(ddof=1))
        for index, value in found.items():
            name = RESIDUAL if index == RESIDUAL else varied[int(index)]
            levels = shape[int(index)] if index != RESIDUAL else ""
            sd = math.sqrt(value) if value >= 0 else math.nan
            rows.append([*key, len(group), name, levels, value, sd, total])
    return pd.DataFrame(rows, columns=cols), incomplete


def variance_table(frame: pd.DataFrame, study: Any) -> Table | None:
    """The report's "variance by source" table (``variance.csv``); None when no run varies a source on its own."""
    cell = _axis_cols(frame)
    main = _labelled(frame[in_group(frame, "main")], cell)
    found, incomplete = variance_by_source(main, cell)
    if found.empty:
        return None
    found = _sort_methods(found, method_order(study, list(found["method"].unique())), cell)
    keys = [*cell, "method"]
    disp_rows = []
    for key, group in found.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = {_display_name(c): v for c, v in zip(keys, key)}
        row["runs"] = int(group["runs"].iloc[0])
        for _, part in group.iterrows():
            head = f"SD {part['component']}" + (f" ({part['levels']} seeds)" if part["component"] != RESIDUAL else "")
            row[head] = _sd_text(part["variance"])
        row["SD of all runs"] = pct(math.sqrt(group["total_variance"].iloc[0]), 2)
        disp_rows.append(row)
    disp = pd.DataFrame(disp_rows).fillna("")
    note = (
        "mIoU SD (pp) attributable to each source of randomness varied on its own (Bouthillier et al. 2021): "
        "one varying source: the SD of its runs; several: random-effects ANOVA without replication, one main "
        "effect per source, the residual holding their interactions (method-of-moments estimates). "
        "0*: a negative variance estimate (noise larger than the effect). With 2-3 seeds per source each "
        "estimate rests on 1-2 degrees of freedom: an order of size, not a measurement."
    )
    if incomplete:
        note += f" Left out (a run missing): {'; '.join(incomplete)}."
    return Table("variance", "Variance by source of randomness", found, disp, note)


def _sd_text(variance: float) -> str:
    return "0*" if variance < 0 else pct(math.sqrt(variance), 2)


__all__ = ["RESIDUAL", "components", "variance_by_source", "variance_table"]
