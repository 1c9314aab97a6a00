"""Run RunSpecs in this process, one after another, each tracked as one MLflow run.

``run_tracked`` is the unit every executor uses: start the MLflow run, train, record the
result, and turn any exception into a FAILED run with its traceback (the other runs go
on). Ctrl-C marks the current run KILLED and stops the study.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from studybench.spec import RunSpec
from studybench.tracking import StudyTracker
from studybench.train import Progress, execute


@dataclass
class RunOutcome:
    spec: RunSpec
    status: str  # FINISHED | FAILED | KILLED | SKIPPED
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def run_tracked(spec: RunSpec, tracker: StudyTracker, progress: Progress | None = None) -> RunOutcome:
    logger = tracker.start_run(spec)
    try:
        result = execute(spec, logger, progress)
    except KeyboardInterrupt as err:
        logger.fail(err, status="KILLED")
        raise
    except Exception as err:  # noqa: BLE001 - any failure of one run is recorded, the study goes on
        logger.fail(err)
        first = (str(err).strip().splitlines() or [""])[0]
        return RunOutcome(spec, "FAILED", error=f"{type(err).__name__}: {first}")
    logger.finish()
    return RunOutcome(spec, "FINISHED", metrics=result.metrics)


class LocalExecutor:
    """Sequential execution in this process."""

    def __init__(self, tracker: StudyTracker) -> None:
        self.tracker = tracker

    def run(self, specs: list[RunSpec], display) -> list[RunOutcome]:
        outcomes = []
        for spec in specs:
            display.run_started(spec)
            outcome = run_tracked(spec, self.tracker, display)
            display.run_done(outcome)
            outcomes.append(outcome)
        return outcomes
