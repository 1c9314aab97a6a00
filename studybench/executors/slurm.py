"""Run RunSpecs as Slurm jobs through submitit: one job per run, a job array for a grid.

Each run is one job with the study's request (``resources: {cpus, gpus, mem_gb, time_min,
partition}``); the job trains through ``run_tracked`` like every other executor, so claims,
retries and epoch checkpoints behave the same. A job that Slurm preempts or that reaches its
time limit gets ``USR2`` shortly before (``--signal``); submitit then calls the job's
``checkpoint()`` and requeues it. Nothing needs saving at that moment: the run's state is
already on disk after every epoch, so the requeued job simply starts the run again and
``train.execute`` continues from the last epoch checkpoint (exact resume, see checkpoint.py).

The driver (``studybench run``) submits, records the job ids in ``<folder>/jobs.json`` (the
folder also holds submitit's logs and pickles), and waits for the jobs: a job that ends
without a result (``scancel``, node failure, out of memory) is reported as KILLED and a
rerun resumes it from its checkpoint. ``studybench status`` lists the study's queued and
running jobs by id from ``squeue``.

Jobs log to the tracking URI they are given. A SQLite store is never written by several
jobs: the driver serves it on 127.0.0.1 (``server.tracking_server``), which reaches jobs on
this node only; a real cluster needs an MLflow server every node reaches (docs/scale-out.md).
The log folder and the checkpoint folder must be on a filesystem shared with the nodes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studybench.study.config import Resources

if TYPE_CHECKING:  # not at import: a job unpickles this module first and must handle signals at once
    from studybench.engine.checkpoint import Checkpoints
    from studybench.executors.local import RunOutcome
    from studybench.study.spec import RunSpec

INSTALL_HINT = "--executor slurm needs submitit, which is an optional extra: pip install 'studybench[slurm]'"
#: How often one run may be requeued after a time limit or preemption before it counts as failed.
MAX_REQUEUES = 5
#: Slurm job states after which a job never runs again (anything else may still produce a result).
ENDED = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT",
}  # fmt: skip
#: Seconds a job may be missing from squeue (or ended) before its missing result counts as lost.
RESULT_GRACE_S = 10.0
JOBS_FILE = "jobs.json"


class SlurmNotInstalled(RuntimeError):
    pass


def import_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise SlurmNotInstalled(INSTALL_HINT) from None
    return submitit


def slurm_folder(checkpoint_root: Path, study: str) -> Path:
    """Where a study's Slurm logs and job records go: ``slurm/<study>/`` beside the checkpoint folder.

    Beside the checkpoints because both must be on a filesystem the nodes share, and
    ``status`` finds them from the same ``--checkpoint-dir``.
    """
    return Path(checkpoint_root).resolve().parent / "slurm" / study


def job_name(study: str) -> str:
    return f"studybench-{study}"


def job_parameters(resources: Resources, study: str) -> dict[str, Any]:
    """submitit ``SlurmExecutor`` parameters for one run's job from the study's ``resources``."""
    params: dict[str, Any] = {
        "job_name": job_name(study),
        "cpus_per_task": max(1, int(resources.cpus)),
        "ntasks_per_node": 1,
        "stderr_to_stdout": True,
    }
    if resources.gpus:
        params["gpus_per_node"] = int(resources.gpus)
    if resources.partition:
        params["partition"] = resources.partition
    if resources.mem_gb:
        params["mem"] = f"{int(resources.mem_gb * 1024)}M"
    if resources.time_min:
        params["time"] = resources.time_min
        # USR2 must come with time to spare before the limit (slurmctld checks every ~30 s and signals
        # up to that much early), but not before a short job has started: 15 s for 1 min, 90 s from 6 min
        params["signal_delay_s"] = min(90, max(15, resources.time_min * 60 // 4))
    return params


class RunJob:
    """The callable one Slurm job runs; its ``checkpoint`` makes submitit requeue it on USR2.

    ``checkpoint`` returns the same call: the run's own epoch checkpoints carry its state,
    so a requeued job resumes by training the run again (``execute`` finds the checkpoint).
    Its arguments are light to unpickle (the checkpoint folder as text): submitit installs
    its USR2 handler only after unpickling them, and a 1-minute job may be signalled early.
    """

    def __init__(self, signal_delay_s: float | None = None) -> None:
        self.signal_delay_s = signal_delay_s

    def __call__(self, spec: RunSpec, uri: str, study: str, checkpoint_root: str | None, retries: int) -> RunOutcome:
        if self.signal_delay_s:
            arm_time_limit_signal(self.signal_delay_s)
        from studybench.engine.checkpoint import Checkpoints
        from studybench.executors.local import run_tracked
        from studybench.store import StudyWriter

        store = StudyWriter(uri, study)
        # the previous incarnation of a requeued job left its run RUNNING: mark it KILLED before resuming
        store.reap_dead_runs()
        checkpoints = Checkpoints(Path(checkpoint_root)) if checkpoint_root else None
        return run_tracked(spec, store, None, checkpoints, retries)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def arm_time_limit_signal(delay_s: float) -> threading.Timer | None:
    """Send ourselves USR2 ``delay_s * 2/3`` before this job's end time; None if the end is unknown.

    Slurm (22.05) did not always send ``--signal`` again to a requeued job in our runs; such a
    job would be killed at its next time limit instead of requeued. This timer gives
    every incarnation its own warning, a little after the latest moment Slurm's own would come
    (so in the first incarnation Slurm's comes first and the job is gone when the timer fires).
    """
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        out = subprocess.run(["squeue", "--noheader", f"--jobs={job}", "--format=%e"], capture_output=True, text=True)
        end = datetime.fromisoformat(out.stdout.strip()).timestamp()  # local time, as squeue prints it
    except (OSError, ValueError):
        return None
    timer = threading.Timer(max(0.0, end - delay_s * 2 / 3 - time.time()), os.kill, (os.getpid(), signal.SIGUSR2))
    timer.daemon = True
    timer.start()
    return timer


@dataclass
class _Pending:
    spec: RunSpec
    job: Any
    missing_since: float | None = None  # when the job was first seen ended or gone without a result


class SlurmExecutor:
    """Submit every run as a Slurm job (a job array for several); wait and collect the outcomes."""

    def __init__(
        self,
        uri: str,
        study: str,
        resources: Resources,
        folder: Path,
        checkpoints: Checkpoints | None = None,
        retries: int = 0,
        poll_s: float = 2.0,
    ) -> None:
        self.uri, self.study, self.resources = uri, study, resources
        self.folder, self.checkpoints, self.retries = Path(folder), checkpoints, retries
        self.poll_s = poll_s

    def submit(self, specs: list[RunSpec]) -> list[_Pending]:
        """Submit ``specs`` as one job array; record ``run key -> job id`` in the jobs file."""
        submitit = import_submitit()
        self.folder.mkdir(parents=True, exist_ok=True)
        executor = submitit.SlurmExecutor(folder=str(self.folder / "%j"), max_num_timeout=MAX_REQUEUES)
        executor.update_parameters(**job_parameters(self.resources, self.study))
        threads = max(1, int(self.resources.cpus))
        root = str(self.checkpoints.root) if self.checkpoints else None
        job = RunJob(executor.parameters.get("signal_delay_s") if self.resources.time_min else None)
        with executor.batch():
            jobs = [
                executor.submit(job, s.with_threads(threads), self.uri, self.study, root, self.retries) for s in specs
            ]
        record_jobs(self.folder, {s.key: (j.job_id, s.name) for s, j in zip(specs, jobs)})
        return [_Pending(s, j) for s, j in zip(specs, jobs)]

    def run(self, specs: list[RunSpec], display) -> list[RunOutcome]:
        pending = self.submit(specs)
        outcomes: list[RunOutcome] = []
        try:
            while pending:
                states = squeue_states(self.study)
                for item in list(pending):
                    outcome = self._outcome(item, states.get(item.job.job_id))
                    if outcome is not None:
                        pending.remove(item)
                        display.run_done(outcome)
                        outcomes.append(outcome)
                if pending:
                    time.sleep(self.poll_s)
        except KeyboardInterrupt:  # the jobs cannot log without this driver's server: stop them, keep checkpoints
            scancel([item.job.job_id for item in pending])
            raise
        return outcomes

    def _outcome(self, item: _Pending, state: str | None) -> RunOutcome | None:
        """The run's outcome once its job is over; None while it is queued or running."""
        from studybench.errors import first_line
        from studybench.executors.local import RunOutcome

        if item.job.paths.result_pickle.exists():
            try:
                return item.job.result()
            except Exception as err:  # noqa: BLE001 - the job itself failed (import error, requeue limit, ...)
                return RunOutcome(item.spec, "FAILED", error=f"Slurm job {item.job.job_id}: {first_line(err)}")
        if state is not None and state not in ENDED:
            item.missing_since = None
            return None
        now = time.monotonic()
        if item.missing_since is None:  # the result file may lag behind on a shared filesystem
            item.missing_since = now
        if now - item.missing_since < RESULT_GRACE_S:
            return None
        how = f"ended {state}" if state else "left the queue"
        return RunOutcome(
            item.spec,
            "KILLED",
            error=f"Slurm job {item.job.job_id} {how} without a result (log: {item.job.paths.stdout}); "
            "a rerun resumes it from its checkpoint",
        )


def squeue_states(study: str) -> dict[str, str]:
    """``job id -> state`` of the study's jobs Slurm still lists (array tasks one by one, e.g. ``12_3``)."""
    cmd = ["squeue", "--noheader", "--array", f"--name={job_name(study)}", "--format=%i|%T"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}  # slurmctld busy or unreachable: treated as "no news", the grace period covers a blip
    states = {}
    for line in out.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id:
            states[job_id] = state
    return states


def scancel(job_ids: list[str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=60)


def record_jobs(folder: Path, jobs: dict[str, tuple[str, str]]) -> None:
    """Add ``run key -> (job id, run name)`` to the folder's jobs file (newest submission wins)."""
    path = Path(folder) / JOBS_FILE
    known = read_jobs(folder)
    known.update({key: {"job_id": job_id, "name": name} for key, (job_id, name) in jobs.items()})
    tmp = path.with_name(f"{JOBS_FILE}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(known, indent=1))
    os.replace(tmp, path)


def read_jobs(folder: Path) -> dict[str, dict[str, str]]:
    try:
        return json.loads((Path(folder) / JOBS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def queued_jobs(folder: Path, study: str) -> list[tuple[str, str, str]]:
    """``(job id, state, run name)`` of the study's jobs that Slurm lists as not ended, for ``status``."""
    jobs = read_jobs(folder)
    if not jobs:
        return []
    names = {entry["job_id"]: entry["name"] for entry in jobs.values()}
    states = squeue_states(study)
    return [(job_id, state, names.get(job_id, "?")) for job_id, state in sorted(states.items()) if state not in ENDED]
