"""Statistics over seeds: cell summaries with bootstrap CIs and paired comparisons to a baseline.

A *cell* is one point of the study without its seed (dataset x method x arch x other axes);
its seeds are repeated measurements. Every interval is a 95 % percentile bootstrap of the
mean over seeds with a fixed RNG seed, so a report rebuilt from the same store is identical.

Against the study's ``baseline`` each method is compared *paired by seed* (same seed = same
initialisation and data order, see ``train.seed_everything``), which removes the seed-to-seed
variance both methods share: the per-seed difference, its bootstrap CI, and a paired test.
The test is a paired t-test for fewer than ``WILCOXON_MIN_N`` pairs (the Wilcoxon
signed-rank test cannot reach p < 0.05 below 6 pairs) and Wilcoxon signed-rank from there on.

Reference: Efron & Tibshirani, *An Introduction to the Bootstrap* (1993), ch. 13 (percentile
interval); Wilcoxon, *Individual comparisons by ranking methods* (1945).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

LEVEL = 0.95
N_BOOT = 4000
RNG_SEED = 0  # fixed: reports are reproducible byte for byte
WILCOXON_MIN_N = 6
NO_CI = "n = 1: no CI"


def bootstrap_ci(
    values: Sequence[float], level: float = LEVEL, n_boot: int = N_BOOT, seed: int = RNG_SEED
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (NaNs dropped); ``(nan, nan)`` if n < 2."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def summarise(frame: pd.DataFrame, by: list[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per cell (``by``): ``n`` and, per metric, ``<m>``, ``<m>_std``, ``<m>_lo``, ``<m>_hi``.

    ``<m>`` is the mean over seeds, std is the sample std (ddof 1; NaN for one seed).
    Missing metrics give NaN columns, so callers need not check which metrics were logged.
    """
    rows = []
    for key, group in frame.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, object] = dict(zip(by, key))
        row["n"] = int(group["seed"].nunique()) if "seed" in group else len(group)
        for metric in metrics:
            x = group[metric].to_numpy(dtype=np.float64) if metric in group else np.array([np.nan])
            x = x[~np.isnan(x)]
            row[metric] = float(x.mean()) if x.size else math.nan
            row[f"{metric}_std"] = float(x.std(ddof=1)) if x.size > 1 else math.nan
            row[f"{metric}_lo"], row[f"{metric}_hi"] = bootstrap_ci(x)
        rows.append(row)
    return pd.DataFrame(rows, columns=[*by, "n", *[f"{m}{s}" for m in metrics for s in ("", "_std", "_lo", "_hi")]])


@dataclass(frozen=True)
class Paired:
    """A paired comparison of two methods over shared seeds (``diff`` = method - baseline)."""

    n: int
    diff: float
    lo: float
    hi: float
    test: str
    p: float


def paired_test(method: Sequence[float], baseline: Sequence[float]) -> Paired:
    """Mean per-seed difference, its bootstrap CI, and the paired test's two-sided p-value.

    Args:
        method, baseline: values of the same metric, aligned by seed (NaN pairs dropped).
    Identical inputs give diff 0 and p = 1 (no evidence of a difference); one pair gives no
    CI and no p-value.
    """
    a, b = np.asarray(method, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"method and baseline must be aligned by seed, got lengths {a.size} and {b.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    d = a[keep] - b[keep]
    n = int(d.size)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, "none", math.nan)
    lo, hi = bootstrap_ci(d)
    test = test_name(n)
    if n < 2:
        p = math.nan
    elif np.all(d == 0):
        p = 1.0
    elif test == "wilcoxon":
        p = float(sps.wilcoxon(d).pvalue)
    else:
        p = float(sps.ttest_1samp(d, 0.0).pvalue)
    return Paired(n, float(d.mean()), lo, hi, test, p)


def test_name(n: int) -> str:
    """Which paired test ``paired_test`` uses for ``n`` pairs."""
    if n < 2:
        return "none"
    return "wilcoxon" if n >= WILCOXON_MIN_N else "t-test"


TEST_NOTES = {
    "t-test": f"paired t-test (fewer than {WILCOXON_MIN_N} seeds)",
    "wilcoxon": "Wilcoxon signed-rank test",
    "none": "no test (n = 1)",
}


def compare_to_baseline(frame: pd.DataFrame, cell: list[str], baseline: str, metric: str = "miou") -> pd.DataFrame:
    """Each method against ``baseline`` within its cell (``cell`` excludes method and seed).

    Returns one row per (cell, method) with ``n``, ``diff``, ``diff_lo``, ``diff_hi``, ``test``,
    ``p``; the baseline itself is compared with itself (diff 0, p 1). Cells without the
    baseline are left out.
    """
    cols = [*cell, "method", "n", "diff", "diff_lo", "diff_hi", "test", "p"]
    rows = []
    groups = frame.groupby(cell, sort=True, dropna=False) if cell else [((), frame)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        wide = group.pivot_table(index="seed", columns="method", values=metric, aggfunc="mean")
        if baseline not in wide:
            continue
        for method in wide.columns:
            res = paired_test(wide[method].to_numpy(), wide[baseline].to_numpy())
            rows.append([*key, method, res.n, res.diff, res.lo, res.hi, res.test, res.p])
    return pd.DataFrame(rows, columns=cols)


def pareto_front(cost: Sequence[float], score: Sequence[float]) -> np.ndarray:
    """Boolean mask of points not dominated by another (lower-or-equal cost and higher-or-equal score, one strictly)."""
    c, s = np.asarray(cost, dtype=np.float64), np.asarray(score, dtype=np.float64)
    front = np.ones(c.size, dtype=bool)
    for i in range(c.size):
        dominated = (c <= c[i]) & (s >= s[i]) & ((c < c[i]) | (s > s[i]))
        front[i] = not dominated.any() and not (np.isnan(c[i]) or np.isnan(s[i]))
    return front


__all__ = [
    "LEVEL",
    "NO_CI",
    "Paired",
    "TEST_NOTES",
    "bootstrap_ci",
    "compare_to_baseline",
    "paired_test",
    "pareto_front",
    "summarise",
    "test_name",
]
