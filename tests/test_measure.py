"""Cost measurement on CPU: peak memory of a run must not depend on what ran before it."""

from __future__ import annotations

import gc
import sys
import time

import psutil
import pytest
import torch

from studybench.measure import PeakMemory, _malloc_trim


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
