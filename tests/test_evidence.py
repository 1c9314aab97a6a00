"""P(A > B), the TOST verdict and seeds needed: against statsmodels and by simulation (2,000 draws per case)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import ttost_paired

from studybench.report import evidence, stats

DRAWS = 2000


def _samples(rng: np.random.Generator, n: int, mu: float, sd: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of ``DRAWS`` normal samples of size n, vectorised."""
    x = rng.normal(mu, sd, size=(DRAWS, n))
    return x.mean(axis=1), x.std(axis=1, ddof=1) / math.sqrt(n)


@pytest.mark.parametrize("n", [3, 5, 10])
def test_delta_t_interval_covers_95_percent(n):
    rng = np.random.default_rng(100 + n)
    x = rng.normal(0.4, 1.3, size=(DRAWS, n))
    bounds = np.array([stats.t_interval(row) for row in x])
    covered = np.mean((bounds[:, 0] <= 0.4) & (0.4 <= bounds[:, 1]))
    assert 0.925 <= covered <= 0.975, covered


@pytest.mark.parametrize("n", [3, 5, 10])
@pytest.mark.parametrize("mu", [0.0, 0.8])
def test_p_superior_interval_covers_95_percent(n, mu):
    rng = np.random.default_rng(7 * n + int(10 * mu))
    mean, se = _samples(rng, n, mu, 1.0)
    est, lo, hi = evidence.superiority(mean, se, n)
    truth = sps.norm.cdf(mu)
    covered = np.mean((lo <= truth) & (truth <= hi))
    assert 0.925 <= covered <= 0.975, covered
    assert np.all((lo <= est) & (est <= hi))
    assert abs(np.median(est) - truth) < 0.03  # median-unbiased


def test_p_superior_far_in_the_tail():
    # scipy's nct.cdf returns NaN far in a tail (t = 105 at nc = -58); the interval must still be right
    est, lo, hi = evidence.superiority(np.array([0.0305]), np.array([0.0305 / 105.66]), 4)
    assert est[0] > 0.999 and lo[0] > 0.9 and hi[0] == pytest.approx(1.0)


def test_p_superior_by_hand_and_degenerate():
    est, lo, hi = evidence.superiority(np.array([0.0, 1.0, -1.0]), np.array([1.0, 0.0, 0.0]), 5)
    assert est[0] == pytest.approx(0.5, abs=1e-9) and lo[0] < 0.5 < hi[0]
    assert (est[1], lo[1], hi[1]) == (1.0, 1.0, 1.0) and (est[2], lo[2], hi[2]) == (0.0, 0.0, 0.0)
    # the bound's defining property: at the lower bound's effect the observed t is the 97.5 % quantile
    mean, se, n = 0.6, 0.2, 4
    _, lo, _ = evidence.superiority(np.array([mean]), np.array([se]), n)
    nc = sps.norm.ppf(lo[0]) * math.sqrt(n)
    assert sps.nct.cdf(mean / se, n - 1, nc) == pytest.approx(0.975, abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_tost_p_equals_statsmodels(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0.60, 0.01, 5), rng.normal(0.598, 0.01, 5)
    delta = 0.005 * (seed + 1)
    ref, _, _ = ttost_paired(a, b, -delta, delta)
    d = a - b
    ours = evidence.tost_p(np.array([d.mean()]), np.array([d.std(ddof=1) / math.sqrt(5)]), 5, delta)[0]
    assert ours == pytest.approx(ref, rel=1e-9)
    assert (evidence.assess(a, b, delta).verdict == "equivalent") == (ref < 0.05)


@pytest.mark.parametrize("n", [3, 5, 10])
def test_equivalent_verdict_type_one_error_at_the_margin(n):
    rng = np.random.default_rng(50 + n)
    delta = 1.0
    for mu in (delta, -delta):  # the true difference sits on the margin: "equivalent" is the wrong call
        mean, se = _samples(rng, n, mu, 0.3 if n > 3 else 0.15)
        rate = np.mean(evidence.verdicts(mean, se, n, delta) == "equivalent")
        assert rate <= 0.05 + 0.012, rate  # nominal 5 %, plus 2.5 Monte Carlo standard errors


@pytest.mark.parametrize("n", [3, 5, 10])
def test_better_verdict_type_one_error_at_no_difference(n):
    rng = np.random.default_rng(70 + n)
    mean, se = _samples(rng, n, 0.0, 1.0)
    v = evidence.verdicts(mean, se, n, delta=0.1)
    assert np.mean(v == "better") <= 0.025 + 0.009 and np.mean(v != "undecided") <= 0.05 + 0.012


def test_verdicts_cover_the_four_outcomes():
    assert evidence.assess([0.70, 0.71, 0.72], [0.60, 0.60, 0.61], 0.005).verdict == "better"
    assert evidence.assess([0.50, 0.51, 0.52], [0.60, 0.60, 0.61], 0.005).verdict == "worse"
    eq = evidence.assess([0.6001, 0.6102, 0.5999, 0.6050], [0.6000, 0.6100, 0.6000, 0.6051], 0.005)
    assert eq.verdict == "equivalent" and eq.p_equivalent < 0.05
    assert evidence.assess([0.60, 0.65, 0.58], [0.61, 0.60, 0.60], 0.005).verdict == "undecided"
    one = evidence.assess([0.6, np.nan], [0.5, 0.5], 0.005)
    assert one.n == 1 and one.verdict == "undecided" and math.isnan(one.seeds_needed)
    with pytest.raises(ValueError, match="min_effect"):
        evidence.assess([0.6, 0.7], [0.5, 0.5], 0.0)


@pytest.mark.parametrize("sd", [0.002, 0.005, 0.01])
def test_seeds_needed_matches_statsmodels_and_is_the_smallest(sd):
    delta = 0.005
    n = evidence.seeds_needed(sd, delta)
    ref = TTestPower().solve_power(effect_size=delta / sd, alpha=0.05, power=0.8, alternative="two-sided")
    assert n == max(2, math.ceil(ref - 1e-9))
    assert evidence.power(n, delta / sd) >= 0.8
    if n > 2:
        assert evidence.power(n - 1, delta / sd) < 0.8


@pytest.mark.parametrize("sd", [0.004, 0.008])
def test_seeds_needed_reaches_80_percent_power_in_simulation(sd):
    delta = 0.005
    n = int(evidence.seeds_needed(sd, delta))
    rng = np.random.default_rng(int(sd * 1e4))
    mean, se = _samples(rng, n, delta, sd)
    rejected = 2 * sps.t.sf(np.abs(mean / se), n - 1) < 0.05
    assert rejected.mean() >= 0.80 - 0.018, (n, rejected.mean())  # 2 Monte Carlo standard errors


def test_seeds_needed_edges():
    assert math.isnan(evidence.seeds_needed(math.nan, 0.005))
    assert evidence.seeds_needed(0.0, 0.005) == 2
    assert math.isinf(evidence.seeds_needed(1.0, 0.005))
    assert evidence.seeds_text(math.inf) == f"> {evidence.MAX_SEEDS}" and evidence.seeds_text(12.0) == "12"


def test_study_min_effect_defaults_to_half_a_point_and_rejects_nonsense():
    from pydantic import ValidationError

    from studybench.report.tables import min_effect
    from studybench.study.config import Study

    assert Study(study="s").min_effect == evidence.MIN_EFFECT_PP == 0.5
    assert min_effect(Study(study="s", min_effect=2.0)) == pytest.approx(0.02)
    for bad in (0, -1, 150):
        with pytest.raises(ValidationError, match="min_effect"):
            Study(study="s", min_effect=bad)
