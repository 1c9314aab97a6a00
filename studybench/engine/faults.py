"""Fault injection: kill, interrupt or fail a run at a named point, to prove crash safety.

Crash safety is only believable if it is exercised with real crashes at the moments that
matter, deterministically. Set ``STUDYBENCH_FAULT`` to a comma-separated list of
``ACTION@POINT[:EPOCH][#RUN]`` and the trainer triggers ACTION when it reaches POINT (of
epoch EPOCH, of runs whose name contains RUN):

- actions: ``kill`` (SIGKILL this process, as ``kill -9`` would), ``interrupt`` (SIGINT, as
  Ctrl-C would), ``oom`` (raise ``torch.OutOfMemoryError``, a transient failure), ``nan``
  (raise ``NonFiniteLossError``, a deterministic one), ``error`` (raise ``RuntimeError``),
  ``stall`` (sleep ``STALL_S`` seconds, as a slow step or a wait on a shared disk would: a run
  that takes long without using the CPU, to meet a time limit);
- points: ``train`` (after the first step of the epoch), ``eval`` (before evaluating the
  epoch), ``log`` (after the epoch's curves are logged, before its checkpoint is written),
  ``final`` (after the final metrics are logged, before the run is marked FINISHED).

Raising actions fire once per process, so a retry in the same process gets past them; a
stall fires every time its point is reached.
Example: ``STUDYBENCH_FAULT="kill@eval:1" studybench run study.yaml`` dies while
evaluating the second epoch of the first run; the rerun resumes it from its checkpoint.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "STUDYBENCH_FAULT"
ACTIONS = ("kill", "interrupt", "oom", "nan", "error", "stall")
STALL_S = 5.0
POINTS = ("train", "eval", "log", "final")
_fired: set[str] = set()


def inject(point: str, epoch: int | None, run: str) -> None:
    """Trigger the configured fault if one matches this point, epoch and run name."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return
    for item in (part.strip() for part in text.split(",") if part.strip()):
        action, where, run_part = _parse(item)
        at_point, _, at_epoch = where.partition(":")
        if at_point != point or (at_epoch and epoch != int(at_epoch)) or (run_part and run_part not in run):
            continue
        _trigger(action, item, f"{point} of epoch {epoch} of {run}")


def _parse(item: str) -> tuple[str, str, str]:
    action, sep, rest = item.partition("@")
    where, _, run_part = rest.partition("#")
    point, _, epoch = where.partition(":")
    if not sep or action not in ACTIONS or point not in POINTS or (epoch and not epoch.isdigit()):
        raise ValueError(
            f"{ENV}={item!r}: expected ACTION@POINT[:EPOCH][#RUN] with ACTION one of {', '.join(ACTIONS)} "
            f"and POINT one of {', '.join(POINTS)}"
        )
    return action, where, run_part


def _trigger(action: str, item: str, where: str) -> None:
    if action == "stall":
        time.sleep(STALL_S)
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "interrupt":
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # e.g. a background job: what Ctrl-C would raise
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGINT)
        return
    if item in _fired:
        return
    _fired.add(item)
    message = f"injected by {ENV}={item!r} at {where}"
    if action == "oom":
        import torch

        raise torch.OutOfMemoryError(f"CUDA out of memory ({message})")
    if action == "nan":
        from studybench.schemes.base import NonFiniteLossError

        raise NonFiniteLossError(f"loss is nan ({message})")
    raise RuntimeError(message)
