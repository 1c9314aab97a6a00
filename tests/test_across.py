"""Across cells: exact Friedman p-values (the issue's cases), Wilcoxon-Holm against scipy/statsmodels and its
type-I error by simulation, IQM and probability of improvement against rliable."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from rliable import metrics as rlm
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from studybench.report import aggregate, permutation, posthoc, ranking


def _same_order(k: int, n: int) -> np.ndarray:
    return np.tile(np.arange(1.0, k + 1), (n, 1))


#: (ranks, exact p): every cell in the same order, and the issue's further cases (chi-square p 0.097, 0.0498, 0.072).
CASES = [
    (_same_order(2, 2), 0.5),
    (_same_order(4, 2), 1 / 24),
    (_same_order(2, 5), 0.0625),
    (np.array([[1, 2, 3], [1, 2, 3], [1, 3, 2]], float), 0.194),
    (np.array([[1, 2, 3], [1, 3, 2], [1, 2, 3], [1, 3, 2]], float), 0.069),
    (np.array([[1, 2, 3, 4], [1, 2, 4, 3], [1, 3, 2, 4]], float), 0.054),
]


@pytest.mark.parametrize("ranks, expected", CASES)
def test_exact_friedman_p_reproduces_the_issue_cases(ranks, expected):
    p, how = permutation.friedman_p(ranks)
    assert p == pytest.approx(expected, abs=5e-4) and how.startswith("exact")
    fr = ranking.friedman_test(pd.DataFrame(ranks))
    assert fr.p_exact == pytest.approx(p) and not np.isinf(fr.f)


def test_exact_p_by_brute_force_with_ties():
    ranks = np.array([[1, 2.5, 2.5], [2, 1, 3], [1.5, 1.5, 3]])
    stat = lambda r: (r.sum(axis=0) ** 2).sum()  # noqa: E731
    arrangements = [np.array(rows) for rows in itertools.product(*[list(itertools.permutations(r)) for r in ranks])]
    brute = np.mean([stat(a) >= stat(ranks) - 1e-9 for a in arrangements])
    assert permutation.friedman_p(ranks)[0] == pytest.approx(brute)


def test_monte_carlo_p_agrees_with_the_exact_one(monkeypatch):
    ranks, exact = CASES[-1]
    monkeypatch.setattr(permutation, "MAX_ENUMERATE", 10)
    p, how = permutation.friedman_p(ranks, draws=40_000)
    assert how.startswith("Monte Carlo") and p == pytest.approx(exact, abs=0.004)
    assert permutation.friedman_p(_same_order(3, 12))[0] == pytest.approx(1 / (1 + permutation.DRAWS))  # never 0


def test_wilcoxon_holm_equals_scipy_and_statsmodels():
    rng = np.random.default_rng(3)
    scores = pd.DataFrame(rng.normal(size=(9, 4)) + [0, 0.3, 3.0, 3.1], columns=list("abcd"))
    tests = posthoc.wilcoxon_holm(scores)
    raw = [sps.wilcoxon(scores[a], scores[b]).pvalue for a, b in itertools.combinations("abcd", 2)]
    assert tests["p"].to_numpy() == pytest.approx(raw)
    assert tests["p_holm"].to_numpy() == pytest.approx(multipletests(raw, method="holm")[1])
    assert tests.set_index(["a", "b"]).loc[("a", "d"), "different"]


def test_cliques_from_the_pairs_that_differ():
    tests = pd.DataFrame(
        [("a", "c", 0.01, 0.02, True), ("a", "d", 0.0, 0.01, True), ("b", "d", 0.0, 0.03, True)],
        columns=["a", "b", "p", "p_holm", "different"],
    )
    assert posthoc.cliques(list("abcd"), tests) == [(0, 1), (1, 2), (2, 3)]
    assert posthoc.cliques(list("abcd"), tests.iloc[:0]) == [(0, 3)]
    assert posthoc.min_cells() == 6


@pytest.mark.parametrize("cells", [6, 10])
def test_wilcoxon_holm_family_error_at_most_alpha(cells):
    rng = np.random.default_rng(cells)
    scores = rng.normal(size=(2000, cells, 4))  # four methods with no difference at all
    any_different = (posthoc.holm(posthoc.pairwise_p(scores)) < posthoc.ALPHA).any(axis=-1)
    assert any_different.mean() <= 0.05 + 0.012


def test_iqm_and_improvement_equal_rliable():
    rng = np.random.default_rng(5)
    x = rng.normal(0.6, 0.02, size=(5, 4)).round(2)  # rounding makes ties
    y = rng.normal(0.59, 0.02, size=(5, 4)).round(2)
    assert aggregate.iqm(list(x.T)) == pytest.approx(rlm.aggregate_iqm(x))
    assert aggregate.improvement(list(x.T), list(y.T)) == pytest.approx(rlm.probability_of_improvement(x, y))
    assert aggregate.improvement(list(x.T), list(x.T)) == 0.5


def test_stratified_bootstrap_interval_by_its_definition():
    # rliable.library needs arch, which does not import under pandas 3: the definition, written out here
    rng = np.random.default_rng(6)
    x = rng.normal(0.6, 0.03, size=(10, 3))
    ours = aggregate.interval(aggregate.iqm, list(x.T), reps=1000)
    ref_rng = np.random.default_rng(99)
    draws = [
        sps.trim_mean(np.take_along_axis(x, ref_rng.integers(0, 10, x.shape), axis=0), 0.25, axis=None)
        for _ in range(1000)
    ]
    width = ours[2] - ours[1]
    assert ours[0] == pytest.approx(rlm.aggregate_iqm(x))
    assert ours[1] == pytest.approx(np.percentile(draws, 2.5), abs=0.1 * width)
    assert ours[2] == pytest.approx(np.percentile(draws, 97.5), abs=0.1 * width)
    cells = [np.array([1.0, 2.0]), np.array([10.0, 20.0, 30.0])]
    again = aggregate.resample(cells, np.random.default_rng(0))  # stratified: a cell keeps its own runs
    assert set(again[0]) <= {1.0, 2.0} and set(again[1]) <= {10.0, 20.0, 30.0} and len(again[1]) == 3


def test_summary_and_profile_on_a_values_frame():
    rows = [(f"c{c}", m, s, 0.5 + 0.1 * (m == "b") + 0.01 * s) for c in range(3) for m in "ab" for s in range(3)]
    values = pd.DataFrame(rows, columns=["cell", "method", "seed", "value"])
    table = aggregate.summary(values, ["a", "b"], ["c0", "c1", "c2"], "a", reps=200)
    b = table.set_index("method").loc["b"]
    assert b["poi"] == 1.0 and b["iqm"] == pytest.approx(0.61)
    prof = aggregate.profile(values, ["a", "b"], np.array([0.0, 0.55, 1.0]))
    assert prof["a"].tolist() == [1.0, 0.0, 0.0] and prof["b"].tolist() == [1.0, 1.0, 0.0]
