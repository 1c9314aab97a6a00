"""Which methods differ over cells: pairwise Wilcoxon signed-rank tests with Holm's correction.

Nemenyi's test compares mean ranks, and whether A and B differ then depends on which other
methods were ranked beside them (Benavoli, Corani & Mangili 2016). Each pair is instead tested
on its own scores over the cells with the two-sided Wilcoxon signed-rank test (scipy's exact
null distribution for the small N a study has; zero differences dropped), and the family of
k(k-1)/2 p-values is corrected by Holm's step-down procedure, which keeps the chance of any
false "different" at most α. Cliques are maximal runs of methods, in average-rank order, with
no significant pair among them (the bars of the critical-difference diagram).

With N cells the smallest two-sided Wilcoxon p is 2 / 2^N: below 6 cells no pair can reach
0.05 even before the correction (``min_cells``).

References: A. Benavoli, G. Corani, F. Mangili, JMLR 17 (2016) 1-10; F. Wilcoxon, Biometrics
Bull. 1 (1945) 80-83; S. Holm, Scand. J. Statist. 6 (1979) 65-70.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats as sps

ALPHA = 0.05
TEST_NAME = "Wilcoxon signed-rank, Holm-corrected"


def pairwise_p(scores: np.ndarray) -> np.ndarray:
    """Two-sided Wilcoxon p of every method pair (last axis) over cells (second-to-last), vectorised over leading axes.

    Returns ``(..., pairs)`` in ``itertools.combinations(range(k), 2)`` order; a pair with no
    non-zero difference gets p = 1.
    """
    x = np.asarray(scores, dtype=np.float64)
    out = []
    for i, j in itertools.combinations(range(x.shape[-1]), 2):
        d = x[..., i] - x[..., j]
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            p = np.asarray(sps.wilcoxon(d, axis=-1).pvalue, dtype=np.float64)
        out.append(np.where(np.all(d == 0, axis=-1) | np.isnan(p), 1.0, p))
    return np.stack(out, axis=-1)


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's adjusted p-values along the last axis: ``max_{j≤i} min(1, (m - j) p_(j))`` in sorted order."""
    p = np.asarray(p, dtype=np.float64)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1) * (m - np.arange(m))
    adjusted = np.minimum(1.0, np.maximum.accumulate(ranked, axis=-1))
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return out


def wilcoxon_holm(scores: pd.DataFrame) -> pd.DataFrame:
    """Cells x methods scores -> one row per pair: ``a``, ``b``, ``p`` (raw), ``p_holm``, ``different``."""
    pairs = list(itertools.combinations(scores.columns, 2))
    raw = pairwise_p(scores.to_numpy(dtype=float))
    adjusted = holm(raw)
    rows = [(a, b, p, q, bool(q < ALPHA)) for (a, b), p, q in zip(pairs, raw, adjusted)]
    return pd.DataFrame(rows, columns=["a", "b", "p", "p_holm", "different"])


def cliques(order: list[str], tests: pd.DataFrame) -> list[tuple[int, int]]:
    """Maximal runs ``(first, last)`` of ``order`` (≥ 2 methods) within which no pair differs."""
    differ = {frozenset((a, b)) for a, b in tests.loc[tests["different"], ["a", "b"]].itertuples(index=False)}
    out: list[tuple[int, int]] = []
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and all(frozenset((order[m], order[j + 1])) not in differ for m in range(i, j + 1)):
            j += 1
        if j > i and (not out or j > out[-1][1]):
            out.append((i, j))
    return out


def min_cells(alpha: float = ALPHA) -> int:
    """Fewest cells at which a two-sided Wilcoxon test can reach p < ``alpha`` (its smallest p is 2 / 2^N)."""
    return math.ceil(math.log2(2 / alpha) + 1e-12)


__all__ = ["ALPHA", "TEST_NAME", "cliques", "holm", "min_cells", "pairwise_p", "wilcoxon_holm"]
