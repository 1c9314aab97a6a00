"""Exact (permutation) p-values of Friedman's test for the few cells a study has.

Under the null hypothesis every arrangement of a cell's ranks over the methods is equally
likely, independently of the other cells, so the null distribution of Friedman's statistic is
that of ``S = Σ_j R_j²`` (R_j: the rank sums) over all (k!)^N arrangements. The chi-square and
Iman-Davenport approximations are asymptotic in N: with every cell ranking 4 methods alike over
2 cells they print "p < 0.001" where the exact p is 1/24 = 0.042. Demšar (2006, Sec. 3.2.2)
recommends exact values for about 10 cells or fewer.

Joint relabelling of the methods leaves S unchanged, so the first cell can be held fixed:
(k!)^(N-1) arrangements are enumerated when that is at most ``MAX_ENUMERATE``, otherwise
``DRAWS`` random arrangements are drawn with a fixed seed and ``p = (1 + hits) / (1 + draws)``
(Phipson & Smyth 2010, never 0). Ties stay tied: a cell's own rank vector is permuted.

References: M. Friedman, JASA 32 (1937) 675-701; J. Demšar, JMLR 7 (2006) 1-30; B. Phipson,
G. K. Smyth, Stat. Appl. Genet. Mol. Biol. 9 (2010) art. 39.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

MAX_ENUMERATE = 300_000
DRAWS = 100_000
SEED = 0
#: Beyond this many cells the chi-square approximation is good and no permutation p is computed.
MAX_CELLS = 30
_CHUNK = 10_000


def friedman_p(ranks: np.ndarray, draws: int = DRAWS, seed: int = SEED) -> tuple[float, str]:
    """Permutation p-value of Friedman's statistic for N cells x k methods of within-cell ranks, and how it was got."""
    r = np.asarray(ranks, dtype=np.float64)
    n, k = r.shape
    if n < 2 or k < 2:
        raise ValueError(f"a permutation p needs at least 2 cells and 2 methods, got {n} cells and {k} methods")
    observed = float((r.sum(axis=0) ** 2).sum()) - 1e-9 * n * k * k  # float slack for equal statistics
    count = math.factorial(k) ** (n - 1)
    if count <= MAX_ENUMERATE:
        return _enumerated(r, observed), f"exact, all {count:,} rank arrangements"
    hits = sum(_drawn_hits(r, observed, size, rng) for size, rng in _chunks(draws, seed))
    return (1 + hits) / (1 + draws), f"Monte Carlo, {draws:,} random rank arrangements (seed {seed})"


def _enumerated(r: np.ndarray, observed: float) -> float:
    """Share of the arrangements of cells 2..N (cell 1 fixed) whose statistic reaches ``observed``."""
    perms = np.array(list(itertools.permutations(range(r.shape[1]))))
    sums = r[:1]
    for row in r[1:]:
        sums = (sums[:, None, :] + row[perms][None, :, :]).reshape(-1, r.shape[1])
    return float(((sums**2).sum(axis=1) >= observed).mean())


def _chunks(draws: int, seed: int):
    rng = np.random.default_rng(seed)
    for start in range(0, draws, _CHUNK):
        yield min(_CHUNK, draws - start), rng


def _drawn_hits(r: np.ndarray, observed: float, size: int, rng: np.random.Generator) -> int:
    """How many of ``size`` random arrangements (each cell's ranks shuffled) reach ``observed``."""
    order = np.argsort(rng.random((size, *r.shape)), axis=2)
    shuffled = np.take_along_axis(np.broadcast_to(r, (size, *r.shape)), order, axis=2)
    return int(((shuffled.sum(axis=1) ** 2).sum(axis=1) >= observed).sum())


__all__ = ["DRAWS", "MAX_CELLS", "MAX_ENUMERATE", "SEED", "friedman_p"]
