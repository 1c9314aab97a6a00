"""Expected best tuning score against the number of trials (does the ranking depend on budget?).

Dodge et al. (2019, "Show Your Work") plot, for n = 1..B, the expected maximum of n trials
drawn from the B observed ones; their estimator draws with replacement and so is biased
low for n near B. Tang et al. (2020, "Showing Your Work Doesn't Always Work") use the
U-statistic instead: the mean of the maximum over every n-subset of the B trials, which is
unbiased for the expected best of n independent trials. Both are here; the report uses the
unbiased one.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln


def expected_best(scores: np.ndarray | list[float], n: int) -> float:
    """Unbiased expected maximum of ``n`` trials (Tang et al. 2020): mean max over all n-subsets.

    With the scores sorted ascending, the i-th (1-based) is the maximum of C(i-1, n-1) of the
    C(B, n) subsets.
    """
    v = _sorted_finite(scores)
    b = len(v)
    if not 1 <= n <= b:
        raise ValueError(f"n must lie in [1, {b}] (the number of finished trials), got {n}")
    i = np.arange(n, b + 1)  # the i-th smallest is a subset's maximum only for i >= n
    log_weights = _log_comb(i - 1, n - 1) - _log_comb(b, n)  # in logs: C(2000, 1000) overflows a float
    return float(np.dot(np.exp(log_weights), v[n - 1 :]))


def expected_best_with_replacement(scores: np.ndarray | list[float], n: int) -> float:
    """Dodge et al. (2019): expected maximum of ``n`` draws with replacement from the empirical distribution."""
    v = _sorted_finite(scores)
    b = len(v)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    cdf = np.arange(0, b + 1) / b
    return float(np.dot(cdf[1:] ** n - cdf[:-1] ** n, v))


def budget_curve(scores: np.ndarray | list[float]) -> list[float]:
    """``expected_best(scores, n)`` for n = 1 .. number of trials."""
    v = _sorted_finite(scores)
    return [expected_best(v, n) for n in range(1, len(v) + 1)]


def _log_comb(n: np.ndarray | int, k: int) -> np.ndarray:
    return gammaln(np.asarray(n) + 1.0) - gammaln(k + 1.0) - gammaln(np.asarray(n) - k + 1.0)


def _sorted_finite(scores: np.ndarray | list[float]) -> np.ndarray:
    v = np.asarray(scores, dtype=float)
    if v.ndim != 1 or v.size == 0 or not np.isfinite(v).all():
        raise ValueError("expected a non-empty 1-D list of finite scores (failed trials left out)")
    return np.sort(v)
