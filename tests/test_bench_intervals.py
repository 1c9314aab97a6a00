"""The harness benchmark's interval of the median ratio keeps its coverage (simulation), and the table prints it."""

from __future__ import annotations

import numpy as np
import pytest

from studybench.bench import load

timing, harness = load("timing"), load("harness")


@pytest.mark.parametrize("n", [6, 9, 15])
def test_the_median_interval_covers_the_true_median_as_often_as_it_says(n):
    rng = np.random.default_rng(n)
    draws = rng.lognormal(mean=0.0, sigma=0.3, size=(4000, n)) * 0.95  # skewed, like a ratio of timings
    truth = 0.95  # the median of 0.95 x lognormal(0, s)
    hits = np.mean([lo <= truth <= hi for lo, hi in (timing.median_interval(list(row)) for row in draws)])
    assert timing.median_coverage(n) >= 0.95
    assert abs(hits - timing.median_coverage(n)) < 0.015


def test_fewer_than_six_values_give_the_range_with_its_lower_coverage():
    assert timing.median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)
    assert timing.median_coverage(5) == pytest.approx(1 - 2 / 32)


def test_the_table_prints_paired_wall_and_cpu_ratios_with_intervals():
    result = harness.HarnessResult(
        harness=[1.0, 0.9, 1.1, 1.0, 0.95, 1.05],
        bare=[1.0] * 6,
        setting={"rounds": 6},
        harness_cpu=[2.0] * 6,
        bare_cpu=[2.5] * 6,
    )
    table = harness.harness_table(result)
    assert "ratio studybench / bare (medians of 6 interleaved rounds): 1.000" in table
    assert "per-round ratio, wall: median 1.000, interval [0.900, 1.100] (96.9 %" in table
    assert "per-round ratio, CPU : median 0.800, interval [0.800, 0.800]" in table
