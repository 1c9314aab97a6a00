"""Peak extra memory of one cell (a loss or scheme step at one size), each in a fresh process on CPU.

On CPU the cell runs in a new interpreter (``python -m studybench.bench --cell JSON``), so no
other cell's peak, allocator cache or lazily built kernel hides its own. The child runs the
step once (warm-up: lazy buffers, optimiser state, thread pools), resets the kernel's peak-RSS
counter ``VmHWM`` (``/proc/self/clear_refs``) and measures the growth of the peak RSS over a
second step above the RSS just before it (inputs, model and optimiser state already resident).
glibc is told to hand large freed blocks back at once (``MALLOC_MMAP_THRESHOLD_``), so memory
freed by the warm-up is not counted as resident. On GPU the allocator's own peak
(``max_memory_allocated`` after ``reset_peak_memory_stats``) is exact, so cells run in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import torch

from .cases import LossCase, Size, loss_step, scheme_step
from .memory import peak_rss_kib, reset_peak_rss, status_kib

#: Environment of a CPU cell: freed large blocks go back to the OS at once, one BLAS pool.
CELL_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def cell_spec(kind: str, size: Size, threads: int, **what: Any) -> dict[str, Any]:
    """Plain-data description of a cell: ``kind`` 'loss' (``loss``, ``params``) or 'scheme' (``scheme``)."""
    return {"kind": kind, "size": size.label, "threads": threads, **what}


def _step_of(spec: dict[str, Any], device: torch.device) -> Callable[[], None]:
    size = Size.parse(spec["size"])
    if spec["kind"] == "loss":
        return loss_step(LossCase(spec["loss"], spec["loss"], spec.get("params", {})), size, device)
    if spec["kind"] == "scheme":
        return scheme_step(spec["scheme"], size, device)
    raise ValueError(f"cell kind must be 'loss' or 'scheme', got {spec['kind']!r}")


def peak_extra_bytes(spec: dict[str, Any], device: torch.device) -> int:
    """Peak memory above the resident baseline over one step of the cell (bytes), in this process."""
    step = _step_of(spec, device)
    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    exact = reset_peak_rss()
    before = status_kib("VmRSS") if exact else peak_rss_kib()
    step()
    return max(0, peak_rss_kib() - before) * 1024


def run_cell_child(text: str) -> None:
    """Entry point of the child process: prints ``{"extra_bytes": N}`` as its last line."""
    spec = json.loads(text)
    torch.set_num_threads(int(spec["threads"]))
    print(json.dumps({"extra_bytes": peak_extra_bytes(spec, torch.device("cpu"))}))


def start_cell(spec: dict[str, Any]) -> subprocess.Popen:
    """Start the fresh process of a CPU cell (collect it with :func:`finish_cell`)."""
    env = {**os.environ, **CELL_ENV, "OMP_NUM_THREADS": str(spec["threads"]), "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "studybench.bench", "--cell", json.dumps(spec)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_cell(proc: subprocess.Popen) -> tuple[float, str]:
    """(peak extra bytes, error text); NaN bytes when the child failed (e.g. out of memory)."""
    out, err = proc.communicate()
    if proc.returncode != 0:
        return float("nan"), (err.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return float(json.loads(out.strip().splitlines()[-1])["extra_bytes"]), ""


def measure_cells(
    specs: list[dict[str, Any]], device: torch.device, jobs: int = 2, done: Callable[[], None] | None = None
) -> list[tuple[float, str]]:
    """Peak extra bytes of every cell, in order: fresh processes (``jobs`` at a time) on CPU."""
    results: list[tuple[float, str]] = [(float("nan"), "")] * len(specs)
    if device.type == "cuda":
        for i, spec in enumerate(specs):
            results[i] = (float(peak_extra_bytes(spec, device)), "")
            if done:
                done()
        return results
    running: list[tuple[int, subprocess.Popen]] = []
    pending = list(enumerate(specs))
    while pending or running:
        while pending and len(running) < max(1, jobs):
            i, spec = pending.pop(0)
            running.append((i, start_cell(spec)))
        i, proc = running.pop(0)
        results[i] = finish_cell(proc)
        if done:
            done()
    return results
