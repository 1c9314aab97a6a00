"""Exact peak memory of one call on CPU: the kernel's per-process high-water mark (Linux).

Benchmark-only probes, kept out of the trainer's ``engine.measure`` (a run's ``PeakMemory`` samples
its RSS instead): a memory cell resets ``VmHWM`` (``/proc/self/clear_refs``) in a fresh process,
makes its call and reads the mark again.
"""

from __future__ import annotations

import resource


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
