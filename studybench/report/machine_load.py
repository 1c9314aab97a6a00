"""A report's warning when its runs' time costs were measured on a busy machine.

Why: a loaded machine stretches every step (3,018 ms against 168 ms idle, measured on the quick
start), so costs compared across runs then compare the load, not the losses. Each run records
the 1-minute load average at its start and end and its usable CPUs (``engine.load``).
"""

from __future__ import annotations

import pandas as pd

from studybench.store.layout import METRIC_CPUS, METRIC_LOAD_END, METRIC_LOAD_START


def load_warnings(frame: pd.DataFrame) -> list[str]:
    """One warning naming how many runs ran with a load average above their CPU count (none if no run did)."""
    if METRIC_CPUS not in frame or frame.empty:
        return []  # runs recorded before the load was: nothing to judge
    loads = frame.reindex(columns=[METRIC_LOAD_START, METRIC_LOAD_END]).max(axis=1)
    busy = frame[loads > frame[METRIC_CPUS]]
    if busy.empty:
        return []
    worst = busy.loc[loads[busy.index].idxmax()]
    return [
        f"{len(busy)} of {len(frame)} runs ran on a loaded machine (1-minute load average up to "
        f"{loads[busy.index].max():.1f} on {int(worst[METRIC_CPUS])} CPUs, at their start or end): their time "
        "costs (step, loss, wall) are inflated; compare costs only between runs on an idle machine, or rerun them"
    ]
