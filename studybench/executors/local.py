"""Run RunSpecs in this process, one after another, each tracked as one MLflow run.

``run_tracked`` is the unit every executor uses (in this process, in a worker process, in
a Ray task): start the MLflow run, train (continuing from the run's checkpoint if one is
there), record the result, and turn any exception into a FAILED run with its traceback so
the other runs go on. A transient failure (out of memory, a CUDA or connection error) is
retried up to ``retries`` times, each attempt a new MLflow run that resumes from the last
checkpoint; a deterministic one (bad config, NaN loss) is not, and the run says why.
Ctrl-C marks the current run KILLED and stops the study; its checkpoint stays for the rerun.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from studybench.engine.checkpoint import Checkpoints
from studybench.engine.train import Progress, execute
from studybench.errors import first_line
from studybench.store import StudyWriter
from studybench.store.claims import ClaimError, claim, claims_folders
from studybench.store.full import disk_full, full_message
from studybench.study.spec import RunSpec

#: Substrings of RuntimeError messages that mark a failure of the machine, not of the run.
TRANSIENT_MESSAGES = ("out of memory", "CUDA error", "NCCL", "cuDNN error", "CUBLAS_STATUS", "ECC error")


@dataclass
class RunOutcome:
    spec: RunSpec
    status: str  # FINISHED | FAILED | KILLED | SKIPPED | RUNNING (elsewhere)
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    attempts: int = 1


def is_transient(error: BaseException) -> bool:
    """Whether a retry may succeed: resource exhaustion or a flaky device/connection, not a bug or bad input."""
    import torch

    if isinstance(error, (torch.OutOfMemoryError, MemoryError, ConnectionError, TimeoutError)):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error) for m in TRANSIENT_MESSAGES)


def run_tracked(
    spec: RunSpec,
    store: StudyWriter,
    progress: Progress | None = None,
    checkpoints: Checkpoints | None = None,
    retries: int = 0,
) -> RunOutcome:
    """Claim ``spec``, then train it as tracked MLflow runs; skipped if another process has it or did it."""
    folders = claims_folders(store.uri, spec.study, checkpoints.root if checkpoints else None)
    try:
        with claim(folders, spec.key) as mine:
            if not mine:
                return RunOutcome(spec, "RUNNING", error="running in another process; left to it")
            done = store.finished_run(spec.key)
            if done is not None:  # finished by another process since this study was planned
                return RunOutcome(spec, "SKIPPED", metrics=dict(done.data.metrics))
            return _attempts(spec, store, progress, checkpoints, retries)
    except ClaimError as err:  # a claim that is a link, a folder, a FIFO, or a read-only claims folder
        return RunOutcome(spec, "FAILED", error=str(err))


def _attempts(
    spec: RunSpec, store: StudyWriter, progress: Progress | None, checkpoints: Checkpoints | None, retries: int
) -> RunOutcome:
    """Train ``spec`` (claimed by this process), retrying transient failures up to ``retries`` times.

    A store that cannot be written (a full disk) fails this run with a message naming it; the
    study goes on with its other runs, which fail or finish on their own.
    """
    for attempt in range(1, retries + 2):
        try:
            logger = store.start_run(spec, attempt=attempt)
        except Exception as err:  # noqa: BLE001 - e.g. a full disk under the store
            return RunOutcome(spec, "FAILED", error=f"could not start the run in the store: {store_error(err, store)}")
        try:
            result = execute(spec, logger, progress, checkpoints)
            logger.finish()
        except KeyboardInterrupt as err:
            logger.fail(err, status="KILLED")
            raise
        except Exception as err:  # noqa: BLE001 - any failure of one run is recorded, the study goes on
            kind = f"{type(err).__name__}"
            if not is_transient(err):
                note = f"deterministic error ({kind}): not retried"
            elif attempt <= retries:
                note = f"transient error ({kind}): retried as attempt {attempt + 1} of {retries + 1}"
            else:
                note = f"transient error ({kind}): no retries left (--retries {retries})"
            unrecorded = _record_failure(logger, err, note, store)
            if is_transient(err) and attempt <= retries:
                continue
            said = store_error(err, store)  # a full disk fails both: say it once
            error = f"{kind}: {said}{'' if said in unrecorded else unrecorded}"
            return RunOutcome(spec, "FAILED", error=error, attempts=attempt)
        if checkpoints:
            checkpoints.remove(spec)
        return RunOutcome(spec, "FINISHED", metrics=result.metrics, attempts=attempt)
    raise AssertionError("unreachable: the last attempt returns")


def _record_failure(logger, err: BaseException, note: str, store: StudyWriter) -> str:
    """Mark the run FAILED with its traceback; '' if done, else why the store could not take it."""
    try:
        logger.fail(err, retry_note=note)
        return ""
    except Exception as problem:  # noqa: BLE001 - the next `run` reaps the run (its process is gone by then)
        return f" (the store could not record the failure: {store_error(problem, store)})"


def store_error(err: BaseException, store: StudyWriter) -> str:
    """The first line of ``err``; a full store disk is said as such, with the path and the free space."""
    text = first_line(err)
    if "no space left on" in text:  # said already, naming its folder (a checkpoint's)
        return text
    return full_message(store.uri) if disk_full(err) else text


class LocalExecutor:
    """Sequential execution in this process."""

    def __init__(self, store: StudyWriter, checkpoints: Checkpoints | None = None, retries: int = 0) -> None:
        self.store = store
        self.checkpoints = checkpoints
        self.retries = retries

    def run(self, specs: list[RunSpec], display) -> list[RunOutcome]:
        outcomes = []
        for spec in specs:
            display.run_started(spec)
            outcome = run_tracked(spec, self.store, display.progress_for(spec), self.checkpoints, self.retries)
            display.run_done(outcome)
            outcomes.append(outcome)
        return outcomes
