"""Interleaved timing: every case once per round, warm-up rounds first, medians of the rest.

Running the cases round by round (rather than all repeats of one case, then the next) means a
change in the machine's load, frequent on a shared machine, hits every case of a table alike,
so ratios measured in the same call stay meaningful even when absolute times drift. On GPU each
call is timed with CUDA events between synchronisations (``time_call``).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def best(self) -> float:
        return min(self.samples) if self.samples else float("nan")


def time_interleaved(
    steps: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    warmup: int = 1,
    done: Callable[[str], None] | None = None,
) -> dict[str, Timing]:
    """Seconds per call of each step: ``warmup`` untimed rounds, then ``repeats`` timed rounds."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    timings = {name: Timing([]) for name in steps}
    for round_ in range(warmup + repeats):
        for name, step in steps.items():
            seconds = time_call(step, device)
            if round_ >= warmup:
                timings[name].samples.append(seconds)
            if done:
                done(name)
    return timings


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval of the median: the order statistics ``(j, n + 1 - j)`` with the
    largest ``j`` whose coverage (binomial, p = 1/2) is still at least ``level``.

    Why not a t interval: timings on a shared machine are skewed by load spikes, and a ratio of
    two of them more so; the order-statistic interval assumes nothing of the shape. It needs six
    values for 95 %; with fewer it is the full range (``median_coverage`` says how sure that is).
    """
    ordered, n = sorted(values), len(values)
    if n == 0:
        return math.nan, math.nan
    j = _order_index(n, level)
    return ordered[j - 1], ordered[n - j]


def median_coverage(n: int, level: float = 0.95) -> float:
    """The exact coverage of ``median_interval`` for ``n`` values: 1 - 2 P(Binomial(n, 1/2) < j)."""
    from scipy.stats import binom

    return float(1 - 2 * binom.cdf(_order_index(n, level) - 1, n, 0.5)) if n else math.nan


def _order_index(n: int, level: float) -> int:
    from scipy.stats import binom

    j = 1
    while j + 1 <= n // 2 and 1 - 2 * binom.cdf(j, n, 0.5) >= level:
        j += 1
    return j


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes: CUDA events around it on GPU, a wall clock on CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
