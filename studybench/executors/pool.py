"""Run RunSpecs N at a time in worker processes on this machine.

Each worker trains one run at a time with its share of the CPU threads and logs over HTTP to
a tracking server (see ``server``): workers never write the SQLite file themselves. Progress
events travel back through a queue so the driver shows one bar per running run. Ctrl-C stops
the study: running runs are marked KILLED by their workers, queued ones never start, and a
rerun resumes from checkpoints.

Workers start warm: they are forked by multiprocessing's ``forkserver``, a process that
imports torch, smp, MLflow and the trainer once (``PRELOAD``) while the MLflow server starts
beside it, instead of each spawned worker importing them again (measured: ~7 CPU-s per worker
on a 2-core machine, taken from the server's start and the runs). The forkserver only
imports: it runs no torch op and touches no GPU, so each forked worker still sets its own
torch threads and may start CUDA. A worker's parent is the forkserver, not the driver, so
workers watch the driver's pid themselves (``server.die_with``): kill -9 of the driver ends
them, and the forkserver ends once no process holds its pipe.

The queue and the stop flag are plain ``multiprocessing`` objects handed to each worker
when it starts (the pool's ``initargs``), not proxies of a ``SyncManager``: a manager is one
more process before the first worker may start. Neither can block a run when a worker dies
mid-write: ``Queue.put`` hands the message to a feeder thread (a lock left held by a killed
worker stalls progress messages, never training) and the stop flag is a lock-free shared byte.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import forkserver, get_context
from typing import Any

from studybench.engine.checkpoint import Checkpoints
from studybench.executors.local import RunOutcome, first_line, run_tracked
from studybench.executors.server import die_with, wait_for_server
from studybench.store import StudyWriter
from studybench.store.layout import CURVE_VAL_PREFIX
from studybench.study.spec import RunSpec

#: What the forkserver imports once, before it forks a worker: the driver's main script (the ``studybench``
#: console script: the CLI, which each worker would import again otherwise), torch and smp (through the
#: trainer), the MLflow client, the store, and what each run's images draw with (0.5 CPU-s a worker).
#: Imports only: none of them runs a torch op or starts CUDA (tests/test_pool_workers.py).
PRELOAD = (
    "__main__",
    "studybench.executors.pool",
    "studybench.store",
    "mlflow.tracking",
    "matplotlib.backends.backend_agg",
    "matplotlib.figure",
    "matplotlib.patches",
    "matplotlib.ticker",
)


def worker_context() -> Any:
    """The ``forkserver`` context whose server has ``PRELOAD`` imported; started now, so it warms up while the
    caller goes on (the first worker's start waits for it)."""
    context = get_context("forkserver")  # never plain fork: the driver holds threads (display, progress pump)
    context.set_forkserver_preload(list(PRELOAD))
    forkserver.ensure_running()  # returns at once; the server imports PRELOAD in the background
    return context


def cpu_count() -> int:
    """CPUs this process may use (cgroup/affinity aware where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Torch threads each of ``workers`` runs gets: this machine's CPUs shared out, at least one."""
    return max(1, cpu_count() // workers)


class PoolExecutor:
    """``workers`` runs at once, each in its own process with ``cpu_count() // workers`` threads."""

    def __init__(
        self, uri: str, study: str, workers: int, checkpoints: Checkpoints | None = None, retries: int = 0
    ) -> None:
        self.uri, self.study, self.workers = uri, study, workers
        self.checkpoints, self.retries = checkpoints, retries
        self.threads = threads_per_worker(workers)

    def run(self, specs: list[RunSpec], display) -> list[RunOutcome]:
        context = worker_context()
        events, stop, slots = context.Queue(), context.RawValue("b", 0), context.Value("i", 0)
        by_key = {spec.key: spec for spec in specs}
        pump = threading.Thread(target=_pump, args=(events, display, by_key), daemon=True)
        pump.start()
        outcomes: list[RunOutcome] = []
        try:
            workers = min(self.workers, len(specs))
            init = (events, stop, slots, os.getpid())
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init, initargs=init) as pool:
                try:  # submitting starts the workers: it waits for the forkserver's imports
                    futures = {pool.submit(_work, *self._arguments(spec)): spec for spec in specs}
                    for future in as_completed(futures):
                        outcome = _outcome(future, futures[future])
                        display.run_done(outcome)
                        outcomes.append(outcome)
                except KeyboardInterrupt:
                    stop.value = 1  # queued runs return without starting
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
        finally:
            events.put(None)
            pump.join(timeout=10)
        return outcomes

    def _arguments(self, spec: RunSpec) -> tuple:
        """What ``_work`` gets for ``spec``: the run with this pool's threads, and where it goes."""
        return spec.with_threads(self.threads), self.uri, self.study, self.checkpoints, self.retries


def _outcome(future: Any, spec: RunSpec) -> RunOutcome:
    try:
        return future.result()
    except KeyboardInterrupt:
        return RunOutcome(spec, "KILLED", error="interrupted")
    except BaseException as err:  # noqa: BLE001 - e.g. BrokenProcessPool after a worker was killed
        first = first_line(err)
        return RunOutcome(spec, "KILLED", error=f"worker: {type(err).__name__}: {first}; a rerun resumes it")


_in_run = False  # set by a worker while it trains a run
_events: Any = None  # the driver's progress queue and stop flag, handed over once per worker
_stop: Any = None
_slot = 0  # this worker's index in the pool: 0, 1, ... in the order the workers started


def _worker_init(events: Any, stop: Any, slots: Any, driver: int) -> None:
    """Ctrl-C interrupts a worker's run (marked KILLED), never an idle worker (that would break the pool);
    a worker does not outlive the ``driver`` (kill -9 of it: nothing left training or holding the store).
    The driver's pid comes explicitly: the worker's parent is the forkserver, which outlives the driver
    for as long as a worker holds its pipe."""
    global _events, _stop, _slot
    die_with(driver)
    _events, _stop, _slot = events, stop, claim_slot(slots)
    events.cancel_join_thread()  # exiting never waits on progress messages the driver no longer reads

    def on_sigint(signum: int, frame: Any) -> None:
        if _in_run:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)


def _work(
    spec: RunSpec,
    uri: str,
    study: str,
    checkpoints: Checkpoints | None,
    retries: int,
) -> RunOutcome:
    """One run in a worker process (module-level: spawned workers import it by name)."""
    if _stop.value:
        return RunOutcome(spec, "KILLED", error="not started: the study was interrupted")
    global _in_run
    _spread_over_gpus(_slot)
    if uri.startswith("http://127.0.0.1:"):  # our local server, started beside the workers (both take seconds)
        wait_for_server(uri)
    _events.put((spec.key, "run_started", ()))
    _in_run = True
    try:
        return run_tracked(spec, StudyWriter(uri, study), QueueProgress(_events, spec.key), checkpoints, retries)
    finally:
        _in_run = False


def claim_slot(slots: Any) -> int:
    """The next free worker index from the pool's shared counter (a ``multiprocessing.Value``)."""
    with slots.get_lock():
        slot = slots.value
        slots.value = slot + 1
    return slot


def gpu_for(slot: int, count: int) -> int | None:
    """The GPU of worker ``slot`` on a machine with ``count`` GPUs: slot mod count; None with one or none."""
    return slot % count if count > 1 else None


def _spread_over_gpus(slot: int) -> None:
    """With several GPUs, worker i uses GPU i mod n (``device: auto``/``cuda`` means the current one)."""
    import torch

    gpu = gpu_for(slot, torch.cuda.device_count())
    if gpu is not None:
        torch.cuda.set_device(gpu)


class QueueProgress:
    """``train.Progress`` that forwards events to the driver (best effort: never fails a run).

    Steps are batched (at most one message per ``every_s``): a message per training step
    would cost the worker and the driver CPU that the runs need.
    """

    def __init__(self, events: Any, key: str, every_s: float = 0.5) -> None:
        self.events, self.key, self.every_s = events, key, every_s
        self._steps, self._last = 0, 0.0

    def _send(self, method: str, *args: Any) -> None:
        try:
            self.events.put((self.key, method, args))
        except Exception:  # noqa: BLE001 - a lost progress event must not fail the run
            pass

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        self._steps, self._last = 0, time.monotonic()
        self._send("epoch_started", epoch, epochs, steps)

    def step_done(self, loss: float, steps: int = 1) -> None:
        self._steps += steps
        if time.monotonic() - self._last >= self.every_s:
            self._send("step_done", loss, self._steps)
            self._steps, self._last = 0, time.monotonic()

    def epoch_done(self, epoch: int, metrics: dict[str, float]) -> None:
        if self._steps:
            self._send("step_done", float("nan"), self._steps)
            self._steps = 0
        self._send("epoch_done", epoch, {k: v for k, v in metrics.items() if k.startswith(CURVE_VAL_PREFIX)})


def _pump(events: Any, display, by_key: dict[str, RunSpec]) -> None:
    """Driver thread: apply the workers' progress events to the display."""
    while True:
        try:
            item = events.get()
        except (EOFError, OSError):
            return
        if item is None:
            return
        key, method, args = item
        spec = by_key[key]
        if method == "run_started":
            display.run_started(spec)
        else:
            getattr(display.progress_for(spec), method)(*args)
