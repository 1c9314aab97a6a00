"""Terminal output of ``studybench run``: progress bars and the closing summary table."""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from studybench.executors import RunOutcome
from studybench.spec import RunSpec


class RunDisplay:
    """Overall bar (runs) + one epoch bar (steps) per running run; ``progress_for`` gives a run's ``train.Progress``.

    Thread-safe (rich's progress has its own lock), so a parallel executor can feed it from
    a thread that relays its workers' events.
    """

    def __init__(self, total_runs: int, console: Console | None = None, enabled: bool = True) -> None:
        self.console = console or Console()
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
            self.runs[spec.key] = _RunBar(self.progress, spec.name)
        return self.runs[spec.key]

    def run_done(self, outcome: RunOutcome) -> None:
        self.finished.add(outcome.spec.key)
        bar = self.runs.pop(outcome.spec.key, None)
        if bar is not None:
            bar.close()
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
    """The epoch bar of one run; implements ``train.Progress``."""

    def __init__(self, progress: Progress, name: str, closed: bool = False) -> None:
        self.progress, self.name = progress, name
        self.task: int | None = None
        self.closed = closed

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        if self.closed:
            return
        desc = f"  {self.name} epoch {epoch + 1}/{epochs}"
        if self.task is None:
            self.task = self.progress.add_task(desc, total=steps, info="")
        else:
            self.progress.reset(self.task, total=steps, description=desc, info="")

    def step_done(self, loss: float, steps: int = 1) -> None:
        if self.task is not None:
            info = f"loss {loss:.4f}" if loss == loss else None  # NaN: a batched count without a loss
            self.progress.update(self.task, advance=steps, **({"info": info} if info else {}))

    def epoch_done(self, epoch: int, metrics: dict[str, float]) -> None:
        miou = metrics.get("val/miou")
        if miou is not None and self.task is not None:
            self.progress.update(self.task, info=f"val mIoU {miou:.3f}")

    def close(self) -> None:
        self.closed = True
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None


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
            _fmt(m.get("miou"), 4),
            _fmt(m.get("pixel_acc"), 4),
            _fmt(m.get("wall_s"), 1),
            _fmt(m.get("peak_mem_mb"), 0),
            status,
        )
    return table


def _fmt(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"
