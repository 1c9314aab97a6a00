"""Aggregates over cells that a few bad runs cannot swing: IQM and probability of improvement.

Following Agarwal et al. (2021, the ``rliable`` library's definitions), with cells as tasks and
seeds as runs:

* **IQM**, the interquartile mean: the mean of the middle 50 % of all of a method's run scores
  pooled over cells (``scipy.stats.trim_mean(·, 0.25)``), robust to an outlying run yet less
  noisy than the median.
* **Probability of improvement** P(X > Y): per cell, the chance that a random run of X beats a
  random run of Y (Mann-Whitney U / (n_x n_y), ties count one half, 0.5 when the runs are
  identical), averaged over cells.
* **Stratified bootstrap** intervals: runs are resampled with replacement within each cell
  (independently per method), ``REPS`` times with a fixed seed, and the 2.5 / 97.5 %
  percentiles of the statistic are the interval. With 3 seeds a cell has only 10 distinct
  resamples, so with few cells the interval is rough and, like any percentile bootstrap at
  small n, tends to be too narrow; read it beside the per-cell t intervals.

Reference: R. Agarwal, M. Schwarzer, P. S. Castro, A. Courville, M. G. Bellemare, "Deep
Reinforcement Learning at the Edge of the Statistical Precipice", NeurIPS 2021.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats as sps

REPS = 2000
SEED = 0
LEVEL = 0.95


def iqm(runs: list[np.ndarray]) -> float | np.ndarray:
    """Interquartile mean of the run scores of all cells pooled (``runs``: one array per cell, runs on the last axis).

    Leading axes (bootstrap samples) are kept.
    """
    pooled = np.concatenate([np.asarray(r, dtype=np.float64) for r in runs], axis=-1)
    return sps.trim_mean(pooled, 0.25, axis=-1) if pooled.shape[-1] else math.nan


def improvement(x: list[np.ndarray], y: list[np.ndarray]) -> float | np.ndarray:
    """P(X > Y) averaged over cells; ``x[c]``, ``y[c]``: the two methods' run scores in cell c (last axis).

    Ties count one half, so identical runs give 0.5 as rliable's special case does. Leading axes are kept.
    """
    per_cell = []
    for a, b in zip(x, y):
        a, b = np.asarray(a, dtype=np.float64)[..., :, None], np.asarray(b, dtype=np.float64)[..., None, :]
        per_cell.append(((a > b) + 0.5 * (a == b)).mean(axis=(-2, -1)))
    return np.mean(per_cell, axis=0)


def resample(runs: list[np.ndarray], rng: np.random.Generator, reps: int | None = None) -> list[np.ndarray]:
    """Stratified bootstrap: each cell's runs drawn with replacement from that cell alone (``reps`` samples at once)."""
    shape = lambda r: (len(r),) if reps is None else (reps, len(r))  # noqa: E731
    return [np.asarray(r, dtype=np.float64)[rng.integers(0, len(r), shape(r))] for r in runs]


def interval(stat: Callable[..., float], *groups: list[np.ndarray], reps: int = REPS, seed: int = SEED):
    """``(estimate, lo, hi)``: ``stat(*groups)`` and its stratified-bootstrap percentile interval."""
    rng = np.random.default_rng(seed)
    draws = stat(*(resample(g, rng, reps) for g in groups))
    tail = 100 * (1 - LEVEL) / 2
    return float(stat(*groups)), float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))


def runs_by_cell(values: pd.DataFrame, method: str, cells: list[str]) -> list[np.ndarray]:
    """A method's non-missing run scores in each of ``cells`` (``values``: cell, method, seed, value)."""
    sub = values[(values["method"] == method) & values["value"].notna()]
    return [sub.loc[sub["cell"] == c, "value"].to_numpy(dtype=np.float64) for c in cells]


def summary(
    values: pd.DataFrame,
    methods: list[str],
    cells: list[str],
    baseline: str | None,
    sign: float = 1.0,
    reps: int = REPS,
):
    """Per method: IQM and (against ``baseline``) P(method > baseline), each with its bootstrap interval.

    ``sign`` = -1 turns a lower-is-better metric around for the probability of improvement.
    """
    rows = []
    base = runs_by_cell(values, baseline, cells) if baseline in methods else None
    for method in methods:
        runs = runs_by_cell(values, method, cells)
        row = dict(zip(("method", "iqm", "iqm_lo", "iqm_hi"), (method, *interval(iqm, runs, reps=reps))))
        if base is not None and method != baseline:
            turned = [[sign * r for r in group] for group in (runs, base)]
            row.update(zip(("poi", "poi_lo", "poi_hi"), interval(improvement, *turned, reps=reps)))
        rows.append(row)
    return pd.DataFrame(rows, columns=["method", "iqm", "iqm_lo", "iqm_hi", "poi", "poi_lo", "poi_hi"])


def profile(values: pd.DataFrame, methods: list[str], taus: np.ndarray) -> pd.DataFrame:
    """Performance profile: per method, the fraction of its runs (all cells) scoring above each τ."""
    data = {m: [(values.loc[values["method"] == m, "value"].dropna() > t).mean() for t in taus] for m in methods}
    return pd.DataFrame(data, index=pd.Index(taus, name="tau"))


__all__ = ["LEVEL", "REPS", "SEED", "improvement", "interval", "iqm", "profile", "resample", "runs_by_cell", "summary"]
