"""The only module that writes to MLflow: one experiment per study, one run per RunSpec.

Runs are written through ``MlflowClient`` with explicit run ids (no global "active run"),
so the same code works in a worker process or on a Ray node. Every run is tagged with its
run key (hash of the resolved spec): a rerun of a study skips keys that are FINISHED.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import tempfile
import threading
import time
import traceback
from functools import lru_cache
from pathlib import Path
from typing import Any

import psutil
import yaml

from studybench import __version__
from studybench.spec import RunSpec

TAG_STUDY = "studybench.study"
TAG_KEY = "studybench.run_key"
TAG_ERROR = "studybench.error"
TAG_HOST = "studybench.host"
TAG_PID = "studybench.pid"
TAG_HEARTBEAT = "studybench.heartbeat"  # unix time, refreshed while the run is alive
TAG_ATTEMPT = "studybench.attempt"
TAG_RETRY = "studybench.retry"  # why a failed run was (not) retried
#: Seconds between heartbeats, and the age after which a RUNNING run on another host counts as dead.
HEARTBEAT_S = 60.0
STALE_AFTER_S = 15 * 60.0
_MAX_PARAM_LEN = 6000


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or ``sqlite:///<cwd>/results/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path.cwd() / 'results' / 'mlflow.db').resolve()}"


def _quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run at" per run
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _client(uri: str):
    _quiet_mlflow()
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


class StudyTracker:
    """Reads and writes the MLflow experiment of one study."""

    def __init__(self, uri: str, study: str) -> None:
        self.uri = uri
        self.study = study
        self.client = _client(uri)

    # ----------------------------------------------------------------- reading
    def experiment_id(self, create: bool = False) -> str | None:
        exp = self.client.get_experiment_by_name(self.study)
        if exp is not None:
            return exp.experiment_id
        if not create:
            return None
        return self.client.create_experiment(
            self.study, artifact_location=self._artifact_location(), tags={TAG_STUDY: self.study}
        )

    def runs(self) -> list[Any]:
        """All MLflow runs of the study (any status), newest first."""
        exp_id = self.experiment_id()
        if exp_id is None:
            return []
        out, token = [], None
        while True:
            page = self.client.search_runs(
                [exp_id], max_results=1000, page_token=token, order_by=["attributes.start_time DESC"]
            )
            out.extend(page)
            token = page.token
            if not token:
                return out

    def latest_by_key(self) -> dict[str, Any]:
        """The newest MLflow run of each run key."""
        latest: dict[str, Any] = {}
        for run in self.runs():
            key = run.data.tags.get(TAG_KEY)
            if key and key not in latest:
                latest[key] = run
        return latest

    def reap_dead_runs(self, stale_after_s: float = STALE_AFTER_S) -> list[Any]:
        """Mark KILLED the runs left RUNNING by a process that died; return them.

        A run on this host is dead when its process is gone; a run on another host when its
        heartbeat is older than ``stale_after_s``. Live runs are left alone (not run twice).
        """
        dead = []
        for run in self.runs():
            if run.info.status == "RUNNING" and not run_is_alive(run, stale_after_s):
                where = f"pid {run.data.tags.get(TAG_PID, '?')} on {run.data.tags.get(TAG_HOST, '?')}"
                self.client.set_tag(run.info.run_id, TAG_ERROR, f"runner died ({where}); a rerun resumes it")
                self.client.set_terminated(run.info.run_id, "KILLED")
                dead.append(run)
        return dead

    def finished_keys(self) -> set[str]:
        finished = set()
        for run in self.runs():
            if run.info.status == "FINISHED" and TAG_KEY in run.data.tags:
                finished.add(run.data.tags[TAG_KEY])
        return finished

    # ----------------------------------------------------------------- writing
    def start_run(self, spec: RunSpec, attempt: int = 1) -> RunLogger:
        exp_id = self.experiment_id(create=True)
        tags = {
            TAG_HOST: socket.gethostname(),
            TAG_PID: str(os.getpid()),
            TAG_HEARTBEAT: str(int(time.time())),
            TAG_ATTEMPT: str(attempt),
            TAG_STUDY: spec.study,
            TAG_KEY: spec.key,
            "studybench.method": spec.method,
            "studybench.dataset": spec.dataset,
            "studybench.arch": spec.arch,
            "studybench.seed": str(spec.seed),
            "studybench.groups": ",".join(spec.groups),
            "studybench.version": __version__,
            "studybench.git_commit": git_commit(),
            **environment_tags(),
        }
        run = self.client.create_run(exp_id, run_name=spec.name, tags=tags)
        logger = RunLogger(self.client, run.info.run_id, heartbeat_s=HEARTBEAT_S)
        logger.log_params({**spec.params(), **{f"axis.{k}": v for k, v in spec.axes.items()}})
        logger.log_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), "spec.yaml")
        return logger

    def _artifact_location(self) -> str | None:
        if self.uri.startswith("sqlite:///"):
            db = Path(self.uri.removeprefix("sqlite:///"))
            return (db.parent / "artifacts" / self.study).resolve().as_uri()
        return None  # a tracking server decides


class RunLogger:
    """Writes one MLflow run; implements ``train.Recorder``."""

    def __init__(self, client: Any, run_id: str, heartbeat_s: float | None = None) -> None:
        self.client = client
        self.run_id = run_id
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        if heartbeat_s:
            self._beat = threading.Thread(target=self._heartbeat, args=(heartbeat_s,), daemon=True)
            self._beat.start()

    def _heartbeat(self, every_s: float) -> None:
        """Refresh the heartbeat tag, so that other hosts can tell a live run from a dead one."""
        while not self._stop.wait(every_s):
            try:
                self.client.set_tag(self.run_id, TAG_HEARTBEAT, str(int(time.time())))
            except Exception:  # noqa: BLE001 - a missed beat is harmless; the run must go on
                pass

    def _end(self, status: str) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        self.client.set_terminated(self.run_id, status)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_str(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_bytes(data)
            folder = str(Path(artifact_file).parent)
            self.client.log_artifact(self.run_id, str(path), None if folder == "." else folder)

    def finish(self) -> None:
        self._end("FINISHED")

    def fail(self, error: BaseException, status: str = "FAILED", retry_note: str | None = None) -> None:
        """Record the traceback as an artifact and the first line as a tag, then end the run."""
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        try:
            self.log_text(text, "error.txt")
            bare = "interrupted (Ctrl-C); a rerun resumes it" if isinstance(error, KeyboardInterrupt) else ""
            first = (str(error).strip().splitlines() or [bare])[0]
            tags = {TAG_ERROR: f"{type(error).__name__}: {first}"[:500]}
            if retry_note:
                tags[TAG_RETRY] = retry_note
            self.set_tags(tags)
        finally:
            self._end(status)


def run_is_alive(run: Any, stale_after_s: float = STALE_AFTER_S) -> bool:
    """Whether the process of a RUNNING MLflow run still runs (or, on another host, still beats)."""
    tags = run.data.tags
    if tags.get(TAG_HOST) == socket.gethostname() and tags.get(TAG_PID, "").isdigit():
        try:
            process = psutil.Process(int(tags[TAG_PID]))
            # a recycled pid belongs to a process started after the run
            started_before = process.create_time() * 1000 <= run.info.start_time + 1000
            return started_before and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
    beat = tags.get(TAG_HEARTBEAT)
    last = float(beat) if beat and beat.replace(".", "", 1).isdigit() else run.info.start_time / 1000
    return time.time() - last < stale_after_s


def _param_str(value: Any) -> str:
    text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
    if text.endswith("\n..."):
        text = text[:-4].strip()
    return text[:_MAX_PARAM_LEN]


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the studybench checkout (or of the current directory), else 'unknown'.

    ``-dirty`` is appended when tracked files differ from the commit: the numbers then come
    from code that no commit holds, and a reader of the report should know.
    """
    for where in (Path(__file__).resolve().parent, Path.cwd()):
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
            if out.returncode != 0:
                continue
            changes = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=where,
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        return out.stdout.strip() + ("-dirty" if changes.stdout.strip() else "")
    return "unknown"


@lru_cache(maxsize=1)
def environment_tags() -> dict[str, str]:
    """What the costs were measured on: torch version and the device (GPU name or CPU model, cores)."""
    import platform

    import torch

    if torch.cuda.is_available():
        device = f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    else:
        device = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as info:
                device = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        device = f"{device} ({os.cpu_count()} CPUs)"
    return {"studybench.torch": torch.__version__, "studybench.device": device}
