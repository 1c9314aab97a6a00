"""Cost measurement on CPU: peak memory of a run must not depend on what ran before it."""

from __future__ import annotations

import gc
import math
import sys
import time

import psutil
import pytest
import torch

from studybench.engine.measure import PeakMemory, Timer, _malloc_trim, interquartile_range


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux") or _malloc_trim() is None, reason="glibc only")
def test_memory_freed_by_an_earlier_run_is_not_counted_as_free_for_the_next():
    """Small blocks freed by a previous run stay in glibc's heap (RSS unchanged); a measurement
    that started there would see the next run reuse them without any RSS growth."""
    blocks = [bytearray(4096) for _ in range(30_000)]  # ~120 MB of heap (below the mmap threshold)
    keep = bytearray(4096)  # allocated last: the heap's top cannot shrink by itself
    del blocks
    gc.collect()
    retained = _rss_mb()
    with PeakMemory(torch.device("cpu")) as peak:
        pass
    assert peak.start_mb < retained - 80, (peak.start_mb, retained)
    assert len(keep) == 4096


def test_peak_memory_sees_an_allocation_inside():
    with PeakMemory(torch.device("cpu"), interval_s=0.005) as peak:
        big = torch.ones(64, 2**20 // 4)  # 64 MiB, touched
        time.sleep(0.1)  # several sampling intervals
        del big
    assert peak.peak_mb - peak.start_mb > 50


def test_interquartile_range_goes_with_the_median_and_ignores_a_few_stalls():
    assert interquartile_range([1.0, 2.0, 3.0, 4.0, 5.0]) == 2.0  # Q1 = 2, Q3 = 4
    assert interquartile_range([0.5]) == 0.0 and math.isnan(interquartile_range([]))
    steady = [0.010 + 0.001 * (i % 5) for i in range(40)]
    stalled = steady[:-2] + [5.0, 9.0]  # two steps stalled by another process
    assert interquartile_range(stalled) == pytest.approx(interquartile_range(steady), abs=0.001)
    timer = Timer(torch.device("cpu"))
    timer.samples = [1.0, 2.0, 3.0, 4.0, 5.0]
    with timer:
        pass
    assert len(timer.samples) == 6 and timer.median == pytest.approx(2.5, abs=1e-3)  # a ~0 s sample added
    assert timer.iqr == pytest.approx(3.75 - 1.25, abs=1e-3)


def test_resident_size_reads_what_psutil_reads_and_follows_an_allocation():
    """The memory sampler's cheap reader (one ``pread`` of ``/proc/self/statm`` on Linux) gives psutil's RSS."""
    from studybench.engine.measure import ResidentSize

    rss = ResidentSize()
    try:
        assert rss.mb() == pytest.approx(_rss_mb(), abs=2.0)
        before = rss.mb()
        big = torch.ones(64, 2**20 // 4)  # 64 MiB, touched
        assert rss.mb() - before > 60
        del big
    finally:
        rss.close()
    assert rss.mb() == pytest.approx(_rss_mb(), abs=2.0)  # closed: psutil answers
