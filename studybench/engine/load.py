"""How busy the machine was around a run: its time costs mean little on a loaded machine.

Why: the quick start under load measured 3,018 ms per step against 168 ms on an idle machine,
and the costs table showed it without a word. Each run records the 1-minute load average at its
start and end and the CPUs it could use; the report warns when the load exceeded them.
"""

from __future__ import annotations

import math
import os

from studybench.store.layout import METRIC_CPUS


def load_average() -> float:
    """The 1-minute load average (runnable processes), NaN where the system has none (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return math.nan


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_metrics(name: str) -> dict[str, float]:
    """``{name: load average, cpus: usable CPUs}``, to log with the run's metrics."""
    return {name: load_average(), METRIC_CPUS: float(usable_cpus())}
