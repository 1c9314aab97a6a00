"""The run display: one epoch bar per running run, late worker events after a run ends are dropped."""

from __future__ import annotations

import io

from helpers import REPO
from rich.console import Console

from studybench.console import RunDisplay, summary_table
from studybench.executors import RunOutcome
from studybench.study.config import load_study
from studybench.study.grid import expand


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


class _Clock:
    """A hand-driven clock for the progress-line interval."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_log_mode_prints_a_line_per_running_run_every_interval_and_no_bars():
    spec = expand(load_study(REPO / "studies" / "quickstart.yaml"), "smoke", check_data=False)[0]
    out, clock = io.StringIO(), _Clock()
    with RunDisplay(3, Console(file=out, width=200), enabled=False, every_s=30, clock=clock) as display:
        display.run_started(spec)
        progress = display.progress_for(spec)
        progress.epoch_started(0, 2, 10)
        clock.now = 10.0
        progress.step_done(0.9)  # 10 s after the start: too early for a line
        assert out.getvalue() == ""
        clock.now = 31.0
        for _ in range(4):
            progress.step_done(0.5, 1)  # the first of these is >= 30 s after the start: one line, then quiet
        lines = out.getvalue().splitlines()
        assert len(lines) == 1, lines
        # 2 of 20 steps in 31 s -> 18 steps to go at 15.5 s each = 279 s
        assert (
            f"0/3 runs done | {spec.name}: epoch 1/2, step 2/10, loss 0.5000, elapsed 0:00:31, ETA 0:04:39" in lines[0]
        )
        clock.now = 62.0
        progress.epoch_started(1, 2, 10)  # half-way (10 of 20 steps) after 62 s: 62 s to go
        assert "epoch 2/2, step 0/10" in out.getvalue() and "ETA 0:01:02" in out.getvalue()
        display.run_done(RunOutcome(spec, "FINISHED", metrics={"miou": 0.5}))
        clock.now = 100.0
        progress.step_done(0.1)  # a late event of a finished run prints nothing
    text = out.getvalue()
    assert "done" in text and "mIoU 0.500" in text and text.count("epoch") == 2
    assert "━" not in text  # no bar characters in a log


def test_progress_interval_from_the_environment(monkeypatch):
    from studybench.console import DEFAULT_EVERY_S, progress_every_s

    monkeypatch.setenv("STUDYBENCH_PROGRESS_EVERY_S", "2.5")
    assert progress_every_s() == 2.5
    for bad in ("soon", "-1"):
        monkeypatch.setenv("STUDYBENCH_PROGRESS_EVERY_S", bad)
        assert progress_every_s() == DEFAULT_EVERY_S == 30.0


def test_run_in_a_log_prints_progress_lines_and_the_summary(tmp_path):
    """``studybench run`` with stdout a pipe (as under nohup or Slurm): progress lines, then the summary table."""
    import os
    import subprocess
    import sys

    from helpers import TINY_STUDY

    study = tmp_path / "tiny.yaml"
    study.write_text(TINY_STUDY)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "STUDYBENCH_PROGRESS_EVERY_S": "0"}
    env.pop("STUDYBENCH_PROGRESS", None)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "studybench.cli", "run", str(study), "--tracking-uri", uri, "--only", "method=ce"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "runs done |" in line]
    assert lines, proc.stdout
    assert any("epoch 2/2" in line and "ETA" in line and "step" in line for line in lines), lines
    assert "studybench summary" in proc.stdout and "FINISHED" in proc.stdout
