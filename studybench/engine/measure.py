"""Cost measurement: wall clocks, step timers, peak memory, parameter counts and host syncs.

Step timers never stop the host: on CUDA they record events that are read when the loop reads
its losses anyway (``Timer``). ``count_host_reads`` counts the host syncs of a block (PyTorch's
sync debug mode on CUDA; tensor -> Python conversions on CPU), for tests and ``bench --harness``.

Peak memory: on CUDA the allocator's own peak (``max_memory_allocated``, reset per run);
on CPU the process RSS sampled by a background thread, because ``ru_maxrss`` is a
lifetime peak that cannot be reset between runs of one process. Before a CPU measurement
starts, the memory that earlier runs freed but glibc kept is returned (``malloc_trim``):
otherwise a later run reuses it without the RSS growing and its "extra" memory reads near 0
(measured: 10 MB against 229 MB for the same-sized run after trimming).
(Benchmarks that need the exact peak of one call read the kernel's ``VmHWM`` in a fresh process:
``benchmarks/suite/memory.py``.)
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import functools
import os
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
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


class ResidentSize:
    """The process's resident set size, read cheaply enough to sample 50 times a second beside training.

    Why not ``psutil.Process().memory_info()``: it opens and parses ``/proc/self/statm`` on each call
    (37 us measured), and the sampler's every wake-up takes a core from a training thread (on a
    2-core machine, an OpenMP worker whose partner then waits at the next barrier). On Linux the
    file stays open and one ``pread`` reads it (1 us); the value is the same, resident pages times
    the page size, which is what psutil reports as ``rss``. Elsewhere psutil.
    """

    def __init__(self) -> None:
        self._fd: int | None = None
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        try:
            self._fd = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self._process = psutil.Process()

    def mb(self) -> float:
        """Resident memory in MiB."""
        if self._fd is None:
            return self._process.memory_info().rss / 2**20
        return int(os.pread(self._fd, 128, 0).split()[1]) * self._page / 2**20

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._process = psutil.Process()  # still answers after close (``current`` may be asked later)


class PeakMemory:
    """Context manager measuring the peak memory of the code it wraps, in MiB."""

    def __init__(self, device: torch.device, interval_s: float = 0.02) -> None:
        self.device = device
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self.start_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rss = ResidentSize()

    def _rss_mb(self) -> float:
        return self._rss.mb()

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
        self._rss.close()


class Timer:
    """Durations of a repeated section, taken without stopping the host.

    On CUDA each section is bracketed by two CUDA events recorded on the current stream; the
    events are read (``elapsed_time``) only when ``samples`` is asked for, which the loop does at
    its logging interval, after the one synchronisation it makes there anyway. Synchronising
    around every section, as this class did before, stalled the host once or twice per step and
    kept the GPU idle while the next batch was prepared. On CPU work is synchronous, so a wall
    clock is exact.

    A sample may be made of several intervals (``with timer:`` opens a sample, ``with
    timer.more():`` adds an interval to the last one): DML times the loss of both networks'
    updates as one step's loss work.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._done: list[float] = []
        self._pending: list[list[tuple[Any, Any]]] = []  # per sample: (start, end) events or clocks
        self._open: list[tuple[Any, Any]] | None = None

    def _mark(self) -> Any:
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    @contextmanager
    def more(self) -> Iterator[None]:
        """Add the section inside to the last sample (a new sample if there is none)."""
        if not self._pending:
            self._pending.append([])
        start = self._mark()
        yield
        self._pending[-1].append((start, self._mark()))

    def __enter__(self) -> Timer:
        self._pending.append([])
        self._start = self._mark()
        return self

    def __exit__(self, *exc: object) -> None:
        self._pending[-1].append((self._start, self._mark()))

    def _seconds(self, start: Any, end: Any) -> float:
        if isinstance(start, float):
            return end - start
        end.synchronize()  # already complete when read at a logging interval: no wait
        return start.elapsed_time(end) / 1000

    def resolve(self) -> None:
        """Turn the recorded sections into seconds (on CUDA: waits for the last one to finish)."""
        for intervals in self._pending:
            self._done.append(sum(self._seconds(start, end) for start, end in intervals))
        self._pending = []

    @property
    def samples(self) -> list[float]:
        """Seconds of every sample so far (resolves the pending ones)."""
        self.resolve()
        return self._done

    @samples.setter
    def samples(self, values: list[float]) -> None:
        """Continue from the samples of an earlier process (a resumed run). The list is kept, not copied:
        the caller's list (``TrainState.step_samples``, saved in checkpoints) grows with the timer."""
        self._pending = []
        self._done = values

    @property
    def median(self) -> float:
        samples = self.samples
        return statistics.median(samples) if samples else float("nan")

    @property
    def iqr(self) -> float:
        """Interquartile range of the samples: how much one run's steps vary around ``median``."""
        return interquartile_range(self.samples)


def interquartile_range(values: list[float]) -> float:
    """Q3 - Q1 (linear interpolation between samples); 0 for one value, NaN for none.

    The spread that goes with a median: like the median, a few slow steps (a page fault, another
    process on the machine) barely move it, unlike a standard deviation.
    """
    if not values:
        return float("nan")
    q1, q3 = np.percentile(np.asarray(values, dtype=np.float64), [25, 75])
    return float(q3 - q1)


def count_params(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


#: Tensor methods that hand a value to Python (on CUDA each waits for the device: a host sync).
HOST_READS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")
#: Code that reads tensors while preparing batches (sampler order, transforms): CPU work, never the
#: device's, so it is counted apart (with loader workers it runs in other processes anyway).
_LOADER_CODE = (f"torch{os.sep}utils{os.sep}data{os.sep}", f"studybench{os.sep}data{os.sep}")


@dataclass
class HostReads:
    """What ``count_host_reads`` saw: reads by the training code and by the data pipeline."""

    count: int = 0  # training step, loop bookkeeping, logging
    loader: int = 0  # sampler and dataset code (not a device sync)
    sites: collections.Counter = field(default_factory=collections.Counter)  # "file:line" of each counted read


def _caller_site() -> tuple[str, bool]:
    """``file:line`` of the first frame outside torch's tensor code, and whether data loading is on the stack."""
    frame, site, loading = sys._getframe(2), "", False
    while frame is not None:
        name = frame.f_code.co_filename
        if not site and not name.endswith(f"torch{os.sep}_tensor.py"):
            site = f"{os.path.basename(name)}:{frame.f_lineno}"
        loading = loading or any(part in name for part in _LOADER_CODE)
        frame = frame.f_back
    return site, loading


@contextmanager
def count_host_reads(device: torch.device) -> Iterator[HostReads]:
    """Count the host reads of tensors inside the block.

    CUDA: every synchronising call, as PyTorch's sync debug mode reports it (a warning each).
    CPU: nothing synchronises, so the block's tensor -> Python conversions (``HOST_READS``) are
    counted instead by wrapping those methods; they are the calls that would wait for a GPU.
    Conversions nested in another (``__format__`` calling ``item``) count once.
    """
    reads = HostReads()
    if device.type == "cuda":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            previous = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield reads
            finally:
                torch.cuda.set_sync_debug_mode(previous)
        synced = [w for w in caught if "synchroniz" in str(w.message)]
        reads.count = len(synced)
        reads.sites.update(f"{os.path.basename(w.filename)}:{w.lineno}" for w in synced)
        return
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}
    depth = threading.local()

    def counted(name: str) -> Callable[..., Any]:
        original = originals[name]

        def read(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if getattr(depth, "n", 0) == 0 and threading.current_thread() is main:
                site, loading = _caller_site()
                if loading:
                    reads.loader += 1
                else:
                    reads.count += 1
                    reads.sites[site] += 1
            depth.n = getattr(depth, "n", 0) + 1
            try:
                return original(self, *args, **kwargs)
            finally:
                depth.n -= 1

        return read

    main = threading.current_thread()
    for name in HOST_READS:
        setattr(torch.Tensor, name, counted(name))
    try:
        yield reads
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
