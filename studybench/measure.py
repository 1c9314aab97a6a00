"""Cost measurement: wall clocks, step timers, peak memory and parameter counts.

Peak memory: on CUDA the allocator's own peak (``max_memory_allocated``, reset per run);
on CPU the process RSS sampled by a background thread, because ``ru_maxrss`` is a
lifetime peak that cannot be reset between runs of one process. Before a CPU measurement
starts, the memory that earlier runs freed but glibc kept is returned (``malloc_trim``):
otherwise a later run reuses it without the RSS growing and its "extra" memory reads near 0
(measured: 10 MB against 229 MB for the same-sized run after trimming). Benchmarks that need
the exact peak of one call on CPU read the kernel's ``VmHWM`` in a fresh process (``peak_rss_kib``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import resource
import statistics
import threading
import time
from collections.abc import Callable

import psutil
import torch


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_free_heap() -> None:
    """Hand heap memory that is free but kept by the C allocator back to the OS (no-op off glibc)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


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
            release_free_heap()
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


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (Linux), e.g. ``VmRSS`` or ``VmHWM`` (peak RSS)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_rss_kib() -> int:
    """High-water mark of this process's RSS. ``VmHWM`` (Linux) belongs to the address space, so
    unlike ``ru_maxrss`` it does not inherit the parent's peak across fork + exec."""
    try:
        return status_kib("VmHWM")
    except (OSError, RuntimeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (``/proc/self/clear_refs``); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


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
