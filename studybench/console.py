"""Terminal output of ``studybench run``: progress bars (or, in a log, progress lines) and the closing summary table.

On a terminal each running run has a live epoch bar. When stdout is a file or a pipe (CI logs,
``nohup``, Slurm's ``slurm-<id>.out``) live bars would be either invisible or thousands of
redrawn lines, so instead one plain line per running run is printed every ``every_s`` seconds
(``$STUDYBENCH_PROGRESS_EVERY_S``, default 30): run name, epoch, step, loss, elapsed time and
ETA. Finished runs and the summary table are printed in both modes.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from studybench.executors import RunOutcome
from studybench.store.layout import CURVE_VAL_MIOU, METRIC_MIOU, METRIC_PEAK_MEM, METRIC_WALL
from studybench.study.spec import RunSpec

#: Seconds between progress lines when stdout is not a terminal.
DEFAULT_EVERY_S = 30.0
EVERY_S_ENV = "STUDYBENCH_PROGRESS_EVERY_S"


def progress_every_s() -> float:
    """Seconds between progress lines in a log: ``$STUDYBENCH_PROGRESS_EVERY_S`` if a number >= 0, else 30."""
    try:
        value = float(os.environ.get(EVERY_S_ENV, DEFAULT_EVERY_S))
    except ValueError:
        return DEFAULT_EVERY_S
    return value if value >= 0 else DEFAULT_EVERY_S


class RunDisplay:
    """Overall bar (runs) + one epoch bar (steps) per running run; ``progress_for`` gives a run's ``train.Progress``.

    With ``every_s`` (for a log, not a terminal) there are no bars: ``ProgressLines`` prints a
    line per running run every ``every_s`` seconds instead. Thread-safe (rich's progress and
    ``ProgressLines`` have their own locks), so a parallel executor can feed it from a thread
    that relays its workers' events.
    """

    def __init__(
        self,
        total_runs: int,
        console: Console | None = None,
        enabled: bool = True,
        every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console or Console()
        self.lines = ProgressLines(self.console, total_runs, every_s, clock) if every_s is not None else None
        enabled = enabled and self.lines is None
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not enabled,
            transient=False,
        )
        self.overall = self.progress.add_task("runs", total=total_runs, info="")
        self.runs: dict[str, _RunBar] = {}
        self.finished: set[str] = set()

    def __enter__(self) -> RunDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    # ------------------------------------------------------------- run level
    def run_started(self, spec: RunSpec) -> None:
        self.progress.update(self.overall, info=spec.name)

    def progress_for(self, spec: RunSpec) -> _RunBar:
        if spec.key in self.finished:  # a late event relayed from a worker: no bar for a finished run
            return _RunBar(self.progress, spec.name, closed=True)
        if spec.key not in self.runs:
            self.runs[spec.key] = _RunBar(self.progress, spec.name, lines=self.lines, key=spec.key)
        return self.runs[spec.key]

    def run_done(self, outcome: RunOutcome) -> None:
        self.finished.add(outcome.spec.key)
        bar = self.runs.pop(outcome.spec.key, None)
        if bar is not None:
            bar.close()
        if self.lines is not None:
            self.lines.finished(outcome.spec.key)
        marks = {
            "FINISHED": "[green]done",
            "FAILED": "[red]FAILED",
            "KILLED": "[yellow]KILLED",
            "SKIPPED": "[dim]skipped",
        }
        mark = marks.get(outcome.status, f"[bold]{outcome.status}")
        detail = f"mIoU {outcome.metrics['miou']:.3f}" if "miou" in outcome.metrics else (outcome.error or "")
        self.progress.console.print(f"{mark}[/] {outcome.spec.name}  {detail}")
        self.progress.advance(self.overall)


class _RunBar:
    """The epoch bar of one run (and its state for ``ProgressLines``); implements ``train.Progress``."""

    def __init__(
        self, progress: Progress, name: str, closed: bool = False, lines: ProgressLines | None = None, key: str = ""
    ) -> None:
        self.progress, self.name = progress, name
        self.task: int | None = None
        self.closed = closed
        self.lines, self.key = lines, key

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        if self.closed:
            return
        if self.lines is not None:
            self.lines.epoch(self.key, self.name, epoch, epochs, steps)
        desc = f"  {self.name} epoch {epoch + 1}/{epochs}"
        if self.task is None:
            self.task = self.progress.add_task(desc, total=steps, info="")
        else:
            self.progress.reset(self.task, total=steps, description=desc, info="")

    def step_done(self, loss: float, steps: int = 1) -> None:
        if self.lines is not None and not self.closed:
            self.lines.step(self.key, loss, steps)
        if self.task is not None:
            info = f"loss {loss:.4f}" if loss == loss else None  # NaN: a batched count without a loss
            self.progress.update(self.task, advance=steps, **({"info": info} if info else {}))

    def epoch_done(self, epoch: int, metrics: dict[str, float]) -> None:
        miou = metrics.get(CURVE_VAL_MIOU)
        if miou is not None and self.task is not None:
            self.progress.update(self.task, info=f"val mIoU {miou:.3f}")

    def close(self) -> None:
        self.closed = True
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None


@dataclass
class _RunState:
    name: str
    started: float
    epoch: int = 0
    epochs: int = 1
    step: int = 0
    steps: int = 0
    loss: float = math.nan


class ProgressLines:
    """A line per running run every ``every_s`` seconds, for logs: ``name: epoch e/E, step s/S, loss, elapsed, ETA``.

    Lines are printed from the events themselves (no timer thread): the first event at least
    ``every_s`` after the previous print prints every running run. The ETA assumes the rest
    of the run goes at the pace so far (epochs of equal steps).
    """

    def __init__(self, console: Console, total_runs: int, every_s: float, clock: Callable[[], float]) -> None:
        self.console, self.total, self.every_s, self.clock = console, total_runs, every_s, clock
        self.runs: dict[str, _RunState] = {}
        self.done = 0
        self.last = clock()
        self.lock = threading.Lock()

    def epoch(self, key: str, name: str, epoch: int, epochs: int, steps: int) -> None:
        with self.lock:
            run = self.runs.setdefault(key, _RunState(name, self.clock()))
            run.epoch, run.epochs, run.step, run.steps = epoch, max(epochs, 1), 0, steps
        self._maybe_print()

    def step(self, key: str, loss: float, steps: int = 1) -> None:
        with self.lock:
            run = self.runs.get(key)
            if run is None:
                return
            run.step += steps
            if loss == loss:  # NaN: a batched count without a loss
                run.loss = loss
        self._maybe_print()

    def finished(self, key: str) -> None:
        with self.lock:
            self.runs.pop(key, None)
            self.done += 1

    def _maybe_print(self) -> None:
        with self.lock:
            now = self.clock()
            if now - self.last < self.every_s:
                return
            self.last = now
            lines = [self.line(run, now) for run in self.runs.values()]
        for line in lines:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def line(self, run: _RunState, now: float) -> str:
        """One run's progress line."""
        elapsed = now - run.started
        done = (run.epoch + (run.step / run.steps if run.steps else 0.0)) / run.epochs
        eta = _clock_text(elapsed * (1 - done) / done) if done > 0 else "?"
        loss = "" if math.isnan(run.loss) else f", loss {run.loss:.4f}"
        return (
            f"[{time.strftime('%H:%M:%S')}] {self.done}/{self.total} runs done | {run.name}: epoch {run.epoch + 1}/"
            f"{run.epochs}, step {run.step}/{run.steps}{loss}, elapsed {_clock_text(elapsed)}, ETA {eta}"
        )


def _clock_text(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def summary_table(outcomes: list[RunOutcome]) -> Table:
    table = Table(title="studybench summary")
    for col, justify in [
        ("run", "left"),
        ("mIoU", "right"),
        ("pixel acc", "right"),
        ("wall s", "right"),
        ("peak MB", "right"),
        ("status", "left"),
    ]:
        table.add_column(col, justify=justify)
    for o in outcomes:
        m = o.metrics
        status = f"{o.status}: {o.error}" if o.status in ("FAILED", "KILLED") and o.error else o.status
        if o.attempts > 1:
            status += f" (attempt {o.attempts})"
        table.add_row(
            o.spec.name,
            _fmt(m.get(METRIC_MIOU), 4),
            _fmt(m.get("pixel_acc"), 4),
            _fmt(m.get(METRIC_WALL), 1),
            _fmt(m.get(METRIC_PEAK_MEM), 0),
            status,
        )
    return table


def _fmt(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"
