"""The run display: one epoch bar per running run, late worker events after a run ends are dropped."""

from __future__ import annotations

import io

from helpers import REPO
from rich.console import Console

from studybench.config import load_study
from studybench.console import RunDisplay, summary_table
from studybench.executors import RunOutcome
from studybench.grid import expand


def test_parallel_runs_get_their_own_bars_and_late_events_make_no_bar():
    first, second = expand(load_study(REPO / "studies" / "quickstart.yaml"), "smoke", check_data=False)[:2]
    out = io.StringIO()
    with RunDisplay(2, Console(file=out, width=120), enabled=True) as display:
        for spec in (first, second):
            display.run_started(spec)
            display.progress_for(spec).epoch_started(0, 1, 2)
        assert len(display.progress.tasks) == 3  # overall + one per running run
        display.progress_for(first).step_done(0.5)
        display.run_done(RunOutcome(first, "FINISHED", metrics={"miou": 0.25}))
        late = display.progress_for(first)  # an event relayed after the run's result
        late.epoch_started(1, 2, 2)
        late.step_done(0.4)
        assert len(display.progress.tasks) == 2 and first.key not in display.runs
        display.run_done(RunOutcome(second, "KILLED", error="interrupted"))
    assert "done" in out.getvalue() and "KILLED" in out.getvalue()


def test_summary_shows_errors_and_attempts():
    spec = expand(load_study(REPO / "studies" / "quickstart.yaml"), "smoke", check_data=False)[0]
    out = io.StringIO()
    table = summary_table(
        [RunOutcome(spec, "FINISHED", metrics={"miou": 0.5}, attempts=2), RunOutcome(spec, "FAILED", error="OOM")]
    )
    Console(file=out, width=200).print(table)
    assert "FINISHED (attempt 2)" in out.getvalue() and "FAILED: OOM" in out.getvalue()
