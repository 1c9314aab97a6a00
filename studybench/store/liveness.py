"""Is a run alive? One classification of a run key's state, used by `run`, `status` and Ctrl-C.

A RUNNING MLflow run is alive while its process runs (same host: by pid and start time) or,
on another host, while its heartbeat tag is fresh. A run left RUNNING by a dead process is
"failed" (a rerun resumes it), never "running": otherwise a crash would block its key forever.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

import psutil

from studybench.store.layout import TAG_ATTEMPT, TAG_ERROR, TAG_HEARTBEAT, TAG_HOST, TAG_PID

#: Seconds between heartbeats, and the age after which a RUNNING run on another host counts as dead.
HEARTBEAT_S = 60.0
STALE_AFTER_S = 15 * 60.0

#: The states of a run key, in the order status tables count them.
STATES = ("done", "failed", "running", "pending")


@dataclass(frozen=True)
class RunState:
    state: str  # one of STATES
    note: str = ""
    run: Any = None  # the MLflow run it was read from (None: pending, never started)


def run_is_alive(run: Any, stale_after_s: float = STALE_AFTER_S) -> bool:
    """Whether the process of a RUNNING MLflow run still runs (or, on another host, still beats)."""
    tags = run.data.tags
    if tags.get(TAG_HOST) == socket.gethostname() and tags.get(TAG_PID, "").isdigit():
        try:
            process = psutil.Process(int(tags[TAG_PID]))
            # a recycled pid belongs to a process started after the run
            started_before = process.create_time() * 1000 <= run.info.start_time + 1000
            return started_before and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
    beat = tags.get(TAG_HEARTBEAT)
    last = float(beat) if beat and beat.replace(".", "", 1).isdigit() else run.info.start_time / 1000
    return time.time() - last < stale_after_s


def run_state(run: Any | None) -> RunState:
    """done / failed / running / pending of a key from its newest MLflow run (None: never started)."""
    if run is None:
        return RunState("pending")
    status = run.info.status
    if status == "FINISHED":
        return RunState("done", run=run)
    if status in ("RUNNING", "SCHEDULED"):
        if run_is_alive(run):
            return RunState("running", f"attempt {run.data.tags.get(TAG_ATTEMPT, '1')}", run)
        return RunState("failed", "its process died; `run` resumes it", run)
    if status == "KILLED":
        return RunState("failed", run.data.tags.get(TAG_ERROR) or "interrupted; `run` resumes it", run)
    return RunState("failed", run.data.tags.get(TAG_ERROR, ""), run)
