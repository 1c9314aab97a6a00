"""Cost measurement: wall clocks, step timers, peak memory and parameter counts.

Peak memory: on CUDA the allocator's own peak (``max_memory_allocated``, reset per run);
on CPU the process RSS sampled by a background thread, because ``ru_maxrss`` is a
lifetime peak that cannot be reset between runs of one process.
"""

from __future__ import annotations

import statistics
import threading
import time

import psutil
import torch


class PeakMemory:
    """Context manager measuring the peak memory of the code it wraps, in MiB."""

    def __init__(self, device: torch.device, interval_s: float = 0.02) -> None:
        self.device = device
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self.start_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process()

    def _rss_mb(self) -> float:
        return self._process.memory_info().rss / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, self._rss_mb())

    def current(self) -> float:
        """Peak so far (also valid while still inside the context)."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return max(self.peak_mb, self._rss_mb())

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self.start_mb = self.peak_mb = self._rss_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self.peak_mb = self.current()


class Timer:
    """Collects durations of repeated sections; ``median`` is robust to the odd slow step."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.samples: list[float] = []

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> Timer:
        self.sync()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sync()
        self.samples.append(time.perf_counter() - self._t0)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def total(self) -> float:
        return sum(self.samples)


def count_params(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())
