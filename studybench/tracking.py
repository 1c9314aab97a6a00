"""The only module that writes to MLflow: one experiment per study, one run per RunSpec.

Runs are written through ``MlflowClient`` with explicit run ids (no global "active run"),
so the same code works in a worker process or on a Ray node. Every run is tagged with its
run key (hash of the resolved spec): a rerun of a study skips keys that are FINISHED.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
import traceback
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from studybench import __version__
from studybench.spec import RunSpec

TAG_STUDY = "studybench.study"
TAG_KEY = "studybench.run_key"
TAG_ERROR = "studybench.error"
_MAX_PARAM_LEN = 6000


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or ``sqlite:///<cwd>/results/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path.cwd() / 'results' / 'mlflow.db').resolve()}"


def _quiet_mlflow() -> None:
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

    def finished_keys(self) -> set[str]:
        finished = set()
        for run in self.runs():
            if run.info.status == "FINISHED" and TAG_KEY in run.data.tags:
                finished.add(run.data.tags[TAG_KEY])
        return finished

    # ----------------------------------------------------------------- writing
    def start_run(self, spec: RunSpec) -> RunLogger:
        exp_id = self.experiment_id(create=True)
        tags = {
            TAG_STUDY: spec.study,
            TAG_KEY: spec.key,
            "studybench.method": spec.method,
            "studybench.dataset": spec.dataset,
            "studybench.arch": spec.arch,
            "studybench.seed": str(spec.seed),
            "studybench.groups": ",".join(spec.groups),
            "studybench.version": __version__,
            "studybench.git_commit": git_commit(),
        }
        run = self.client.create_run(exp_id, run_name=spec.name, tags=tags)
        logger = RunLogger(self.client, run.info.run_id)
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

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

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
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, error: BaseException, status: str = "FAILED") -> None:
        """Record the traceback as an artifact and the first line as a tag, then end the run."""
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        try:
            self.log_text(text, "error.txt")
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            self.set_tags({TAG_ERROR: f"{type(error).__name__}: {first}"[:500]})
        finally:
            self.client.set_terminated(self.run_id, status)


def _param_str(value: Any) -> str:
    text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
    if text.endswith("\n..."):
        text = text[:-4].strip()
    return text[:_MAX_PARAM_LEN]


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the studybench checkout (or of the current directory), else 'unknown'."""
    for where in (Path(__file__).resolve().parent, Path.cwd()):
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0:
            return out.stdout.strip()
    return "unknown"
