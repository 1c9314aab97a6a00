"""Statistics over seeds: cell summaries with t intervals and paired t tests against a baseline.

A *cell* is one point of the study without its seed (dataset x method x arch x other axes);
its seeds are repeated measurements. Every interval is a 95 % Student t interval of the mean,
``mean ± t(0.975, n-1) · s / √n``: it keeps its 95 % promise at the 3-5 seeds a study can
afford when the seeds' scores are roughly normal (``tests/test_stats.py`` measures its
coverage). A percentile bootstrap does not: it can never be wider than the seeds' range and
covers 74 % at n = 3, 84 % at n = 5 and 90 % at n = 10; from n ≈ 30 on, where it comes close
(94 %), the t interval is accurate too, so the bootstrap is not used at any n.

Against the study's ``baseline`` each method is compared *paired by seed* (same seed = same
initialisation and data order, see ``train.seed_everything``), which removes the seed-to-seed
variance both methods share: the mean per-seed difference, its t interval and the paired t
test. Interval and test are computed from the same mean and standard error, so they always
agree: the interval excludes 0 exactly when p < 0.05.

Few seeds: one seed gives no interval and no test (``NO_CI``); two seeds give a t interval
with one degree of freedom, ±12.7 standard errors, marked ``WIDE_MARK`` as uninformative.

Reference: Student, *The probable error of a mean* (1908); any statistics text on the
one-sample and paired t test, e.g. Wasserman, *All of Statistics* (2004), ch. 10.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

import studybench.report.evidence as evidence

LEVEL = 0.95
#: How every interval of a report is named (table headers and notes, figure captions).
INTERVAL_NAME = "95% t interval"
#: How every comparison to the baseline is named.
TEST_NAME = "paired t test"
#: Below this many seeds a cell has no interval (a single value has no spread).
MIN_N = 2
#: Cells with this many seeds or fewer get an interval marked as uninformative (1 degree of freedom).
WIDE_N = 2
WIDE_MARK = "†"
NO_CI = "n = 1: no interval"
WIDE_NOTE = (
    f"{WIDE_MARK} n = 2: a t interval with 1 degree of freedom spans ±12.7 standard errors; "
    "it says little, run at least 3 seeds."
)


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """Student t interval of the mean of ``values`` (NaNs dropped); ``(nan, nan)`` below ``MIN_N`` values.

    Exact for normal data at any n ≥ 2, which is why it replaces the percentile bootstrap
    (too narrow at the few seeds studies run).
    """
    mean, se, n = _mean_se(values)
    if n < MIN_N:
        return math.nan, math.nan
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * se
    return mean - half, mean + half


def _mean_se(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, standard error (sample std / √n) and count of the non-NaN ``values``."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, 0
    se = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return float(x.mean()), se, n


def summarise(frame: pd.DataFrame, by: list[str], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per cell (``by``): ``n``, ``seeds`` and, per metric, ``<m>``, ``<m>_std``, ``<m>_lo``, ``<m>_hi``.

    ``n`` counts the values of the first metric (what its mean and interval are over), ``seeds``
    the cell's runs: seeds (0.50, 0.52, NaN) give n = 2, seeds = 3. ``<m>`` is the mean over seeds, std is the sample std (ddof 1; NaN for one seed), lo/hi the
    t interval of the mean. Missing metrics give NaN columns, so callers need not check which
    metrics were logged.
    """
    rows = []
    for key, group in frame.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, object] = dict(zip(by, key))
        row["seeds"] = int(group["seed"].nunique()) if "seed" in group else len(group)
        first = metrics[0] if metrics and metrics[0] in group else None
        row["n"] = int(group[first].notna().sum()) if first else row["seeds"]
        for metric in metrics:
            x = group[metric].to_numpy(dtype=np.float64) if metric in group else np.array([np.nan])
            x = x[~np.isnan(x)]
            row[metric] = float(x.mean()) if x.size else math.nan
            row[f"{metric}_std"] = float(x.std(ddof=1)) if x.size > 1 else math.nan
            row[f"{metric}_lo"], row[f"{metric}_hi"] = t_interval(x)
        rows.append(row)
    suffixes = ("", "_std", "_lo", "_hi")
    return pd.DataFrame(rows, columns=[*by, "n", "seeds", *[f"{m}{s}" for m in metrics for s in suffixes]])


@dataclass(frozen=True)
class Paired:
    """A paired comparison of two methods over shared seeds (``diff`` = method - baseline)."""

    n: int
    diff: float
    lo: float
    hi: float
    test: str
    p: float


def paired_test(method: Sequence[float], baseline: Sequence[float], level: float = LEVEL) -> Paired:
    """Mean per-seed difference, its t interval, and the paired t test's two-sided p-value.

    Args:
        method, baseline: values of the same metric, aligned by seed (NaN pairs dropped).
    Interval and p come from the same mean and standard error, so the interval excludes 0
    exactly when p < 1 - ``level``. Identical inputs give diff 0, interval [0, 0] and p = 1;
    equal non-zero differences (no spread) give a zero-width interval and p = 0; one pair
    gives no interval and no p-value.
    """
    a, b = np.asarray(method, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"method and baseline must be aligned by seed, got lengths {a.size} and {b.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    mean, se, n = _mean_se(a[keep] - b[keep])
    if n < MIN_N:
        return Paired(n, mean, math.nan, math.nan, test_name(n), math.nan)
    lo, hi = t_interval(a[keep] - b[keep], level)
    if se == 0:
        p = 1.0 if mean == 0 else 0.0
    else:
        p = float(2 * sps.t.sf(abs(mean) / se, n - 1))
    return Paired(n, mean, lo, hi, test_name(n), p)


def test_name(n: int) -> str:
    """Which paired test ``paired_test`` uses for ``n`` pairs (none below ``MIN_N``)."""
    return "t-test" if n >= MIN_N else "none"


TEST_NOTES = {
    "t-test": f"{TEST_NAME} by seed (the same test as the {INTERVAL_NAME} of the difference)",
    "none": "no test (n = 1)",
}


def interval_caption(ns: Iterable[int]) -> str:
    """What a figure's error bars or bands over cells with ``ns`` seeds are, for its caption.

    Names the method and n (``95% t interval over 3 seeds``), says when there is none (one
    seed: no bars are drawn, so no "95 %" may appear) and flags n = 2 as uninformative.
    """
    counts = sorted({int(n) for n in ns if n is not None and not pd.isna(n)})
    with_interval = [n for n in counts if n >= MIN_N]
    if not with_interval:
        return "one seed: no interval"
    lo, hi = with_interval[0], with_interval[-1]
    seeds = f"{lo} seeds" if lo == hi else f"{lo}-{hi} seeds"
    text = f"{INTERVAL_NAME} over {seeds}"
    if lo <= WIDE_N:
        text += "; n = 2: very wide, uninformative"
    if counts[0] < MIN_N:
        text += "; cells with one seed: none"
    return text


#: Columns ``compare_to_baseline`` adds from ``evidence.assess`` (see that module).
EVIDENCE_COLUMNS = [
    "diff_sd",
    "p_superior",
    "p_superior_lo",
    "p_superior_hi",
    "p_equivalent",
    "verdict",
    "seeds_needed",
]


def compare_to_baseline(
    frame: pd.DataFrame, cell: list[str], baseline: str, metric: str = "miou", min_effect: float = 0.005
) -> pd.DataFrame:
    """Each method against ``baseline`` within its cell (``cell`` excludes method and seed).

    Returns one row per (cell, method) with ``n``, ``diff``, ``diff_lo``, ``diff_hi``, ``test``,
    ``p`` and the ``EVIDENCE_COLUMNS`` against ``min_effect`` (in the metric's unit); the
    baseline itself is compared with itself (diff 0, p 1). Cells without the baseline are left out.
    """
    cols = [*cell, "method", "n", "diff", "diff_lo", "diff_hi", "test", "p", *EVIDENCE_COLUMNS]
    rows = []
    groups = frame.groupby(cell, sort=True, dropna=False) if cell else [((), frame)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        wide = group.pivot_table(index="seed", columns="method", values=metric, aggfunc="mean")
        if baseline not in wide:
            continue
        for method in wide.columns:
            a, b = wide[method].to_numpy(), wide[baseline].to_numpy()
            res, ev = paired_test(a, b), evidence.assess(a, b, min_effect)
            found = [ev.sd, ev.p_superior, ev.p_superior_lo, ev.p_superior_hi, ev.p_equivalent, ev.verdict]
            rows.append([*key, method, res.n, res.diff, res.lo, res.hi, res.test, res.p, *found, ev.seeds_needed])
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
    "INTERVAL_NAME",
    "LEVEL",
    "MIN_N",
    "NO_CI",
    "TEST_NAME",
    "EVIDENCE_COLUMNS",
    "TEST_NOTES",
    "WIDE_MARK",
    "WIDE_N",
    "WIDE_NOTE",
    "Paired",
    "compare_to_baseline",
    "interval_caption",
    "paired_test",
    "pareto_front",
    "summarise",
    "t_interval",
    "test_name",
]
