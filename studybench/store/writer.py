"""Writing a study to the store: the store itself, experiments, training runs, records.

Runs are written through ``MlflowClient`` with explicit run ids (no global "active run"),
so the same code works in a worker process or on a Ray node.

A new SQLite store is created whole or not at all: it is made in a temporary file under a
lock and renamed into place, so two processes starting at once never race on MLflow's schema
migration, and a kill at any moment of the creation leaves no half-made store (the next
``run`` simply creates it again). It is made by copying an empty store that the first
creation on a machine builds and caches (``empty_store_template``).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import closing, contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from studybench import __version__
from studybench.errors import first_line
from studybench.store import StoreError, local_path, quiet_mlflow
from studybench.store.layout import (
    ARTIFACT_ERROR,
    ARTIFACT_MANIFEST,
    ARTIFACT_REPORT_DIR,
    ARTIFACT_SPEC,
    EXPERIMENT_KIND_TRAINING,
    KIND_MANIFEST,
    KIND_REPORT,
    PARAM_AXIS_PREFIX,
    TAG_ARCH,
    TAG_ATTEMPT,
    TAG_DATASET,
    TAG_DEVICE,
    TAG_ERROR,
    TAG_EXPERIMENT_KIND,
    TAG_GIT_COMMIT,
    TAG_GROUPS,
    TAG_HEARTBEAT,
    TAG_HOST,
    TAG_KEY,
    TAG_KIND,
    TAG_LAST_USED,
    TAG_MANIFEST_HASH,
    TAG_METHOD,
    TAG_PID,
    TAG_PROFILE,
    TAG_RETRY,
    TAG_SEED,
    TAG_STUDY,
    TAG_STUDY_FILE_HASH,
    TAG_TORCH,
    TAG_VERSION,
    records_experiment,
)
from studybench.store.liveness import HEARTBEAT_S, STALE_AFTER_S, run_is_alive
from studybench.store.manifest import manifest_hash
from studybench.store.reader import StudyReader
from studybench.study.spec import RunSpec

_MAX_PARAM_LEN = 6000


def ensure_store(uri: str) -> None:
    """Create the local store at ``uri`` if it does not exist (atomically); check it is writable."""
    path = local_path(uri)
    if path is None:
        return  # a tracking server owns its store
    path = path.resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(f"cannot create the store folder {path.parent}: {err.strerror}") from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise StoreError(f"the MLflow store {path} is not writable: fix its permissions or pass --tracking-uri")
    if path.exists() or not uri.startswith("sqlite:///"):
        return
    _create_once(path, lambda temp: _copy_empty_store(temp, path.parent))


def _create_once(path: Path, make: Callable[[Path], None]) -> None:
    """Create ``path`` by ``make(temporary path)`` and a rename, under a lock, unless another process did first."""
    with _locked(path.with_name(path.name + ".lock")):
        if path.exists():
            return  # another process created it while we waited
        for stale in path.parent.glob(path.name + ".creating-*"):
            stale.unlink(missing_ok=True)  # left by a process killed while creating (we hold the lock)
        temp = path.with_name(f"{path.name}.creating-{os.getpid()}")
        make(temp)
        os.replace(temp, path)


def _copy_empty_store(temp: Path, folder: Path) -> None:
    template = empty_store_template()
    if template is None:
        _build_schema(temp)
        return
    shutil.copyfile(template, temp)
    _place_default_experiment(temp, folder)


def empty_store_template() -> Path | None:
    """An empty SQLite store of the installed MLflow, built once per machine; None if it cannot be cached.

    MLflow builds a new store's schema by running its ~60 migrations, 2-4 s of CPU that every
    new store paid (every study folder, every test); copying a finished one takes milliseconds.
    The file is keyed by MLflow's version, so an upgrade builds a new one.
    """
    import mlflow

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "studybench"
    template = cache / f"empty-store-mlflow-{mlflow.__version__}.db"
    if not template.is_file():
        try:
            cache.mkdir(parents=True, exist_ok=True)
            _create_once(template, _build_schema)
        except OSError:
            return None  # no writable cache (a read-only home): each store builds its own schema
    return template


def _build_schema(path: Path) -> None:
    quiet_mlflow()
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments(max_results=1)


def _place_default_experiment(store: Path, folder: Path) -> None:
    """Point MLflow's "Default" experiment of a copied store at the store's own folder.

    MLflow puts it under the working directory of whoever built the schema; studybench never
    uses it, but someone logging there by hand should find the files beside the store.
    """
    location = (folder / "artifacts" / "Default").as_uri()
    with closing(sqlite3.connect(store)) as db, db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (location,))


@contextmanager
def _locked(lock_path: Path):
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class StudyWriter(StudyReader):
    """Writes the MLflow experiment of one study (creating the store and experiment when needed)."""

    def __init__(self, uri: str, study: str) -> None:
        ensure_store(uri)
        super().__init__(uri, study, must_exist=False)

    # ----------------------------------------------------------------- experiments
    def ensure_experiment(self, name: str | None = None) -> str:
        """The experiment's id, created (as a model-training experiment) if needed, race-free."""
        name = name or self.study
        exp_id = self.experiment_id(name)
        if exp_id is not None:
            return exp_id
        tags = {TAG_STUDY: self.study, TAG_EXPERIMENT_KIND: EXPERIMENT_KIND_TRAINING}
        try:
            return self.client.create_experiment(name, artifact_location=self._artifact_location(name), tags=tags)
        except Exception:  # another process created it a moment ago
            exp_id = self.experiment_id(name)
            if exp_id is None:
                raise
            return exp_id

    def _artifact_location(self, name: str) -> str | None:
        path = local_path(self.uri)
        if path is None:
            return None  # a tracking server decides
        folder = name.replace(" ", "_").replace("(", "").replace(")", "")
        return (path.resolve().parent / "artifacts" / folder).as_uri()

    # ----------------------------------------------------------------- training runs
    def start_run(self, spec: RunSpec, attempt: int = 1) -> RunLogger:
        exp_id = self.ensure_experiment()
        tags = {
            TAG_HOST: socket.gethostname(),
            TAG_PID: str(os.getpid()),
            TAG_HEARTBEAT: str(int(time.time())),
            TAG_ATTEMPT: str(attempt),
            TAG_STUDY: spec.study,
            TAG_KEY: spec.key,
            TAG_METHOD: spec.method,
            TAG_DATASET: spec.dataset,
            TAG_ARCH: spec.arch,
            TAG_SEED: str(spec.seed),
            TAG_GROUPS: ",".join(spec.groups),
            TAG_VERSION: __version__,
            TAG_GIT_COMMIT: git_commit(),
            **environment_tags(),
        }
        run = self.client.create_run(exp_id, run_name=spec.name, tags=tags)
        logger = RunLogger(self.client, run.info.run_id, heartbeat_s=HEARTBEAT_S)
        logger.log_params({**spec.params(), **{f"{PARAM_AXIS_PREFIX}{k}": v for k, v in spec.axes.items()}})
        logger.log_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), ARTIFACT_SPEC)
        return logger

    def reap_dead_runs(self, stale_after_s: float = STALE_AFTER_S) -> list[Any]:
        """Mark KILLED the runs left RUNNING by a process that died; return them.

        A run on this host is dead when its process is gone; a run on another host when its
        heartbeat is older than ``stale_after_s``. Live runs are left alone (not run twice).
        """
        dead = []
        for run in self.runs(filter_string="attributes.status = 'RUNNING'"):
            if not run_is_alive(run, stale_after_s):
                where = f"pid {run.data.tags.get(TAG_PID, '?')} on {run.data.tags.get(TAG_HOST, '?')}"
                self.client.set_tag(run.info.run_id, TAG_ERROR, f"runner died ({where}); a rerun resumes it")
                self.client.set_terminated(run.info.run_id, "KILLED")
                dead.append(run)
        return dead

    # ----------------------------------------------------------------- records
    def record_manifest(self, manifest: dict[str, Any]) -> str:
        """Store ``manifest`` (once per distinct content) and mark it as the latest of its profile."""
        exp_id = self.ensure_experiment(records_experiment(self.study))
        digest = manifest_hash(manifest)
        found = self.client.search_runs(
            [exp_id], filter_string=f"tags.`{TAG_MANIFEST_HASH}` = '{digest}'", max_results=1
        )
        if found:
            run_id = found[0].info.run_id
        else:
            tags = {
                TAG_KIND: KIND_MANIFEST,
                TAG_STUDY: self.study,
                TAG_PROFILE: manifest.get("profile") or "",
                TAG_MANIFEST_HASH: digest,
                TAG_STUDY_FILE_HASH: manifest.get("study_file_sha256") or "",
            }
            name = f"manifest {manifest.get('profile') or 'default'} {digest[:8]}"
            run_id = self.client.create_run(exp_id, run_name=name, tags=tags).info.run_id
            self.client.log_text(run_id, json.dumps(manifest, indent=1, sort_keys=True), ARTIFACT_MANIFEST)
            self.client.set_terminated(run_id, "FINISHED")
        _shared_write(lambda: self.client.set_tag(run_id, TAG_LAST_USED, f"{time.time():.3f}"))
        return run_id

    def log_report(self, out_dir: Path, profile: str | None) -> str:
        """Log a report folder as the provenance record of ``profile``'s report (reused by later builds)."""
        exp_id = self.ensure_experiment(records_experiment(self.study))
        query = f"tags.`{TAG_KIND}` = '{KIND_REPORT}' and tags.`{TAG_PROFILE}` = '{profile or ''}'"
        found = self.client.search_runs([exp_id], filter_string=query, max_results=1)
        if found:
            run_id = found[0].info.run_id
        else:
            tags = {TAG_KIND: KIND_REPORT, TAG_STUDY: self.study, TAG_PROFILE: profile or ""}
            run_id = self.client.create_run(exp_id, run_name=f"report {profile or 'default'}", tags=tags).info.run_id
        self.client.log_artifacts(run_id, str(out_dir), ARTIFACT_REPORT_DIR)
        self.client.set_terminated(run_id, "FINISHED")
        return run_id


def _shared_write(write: Any, attempts: int = 4) -> Any:
    """Do ``write`` on a record other processes may write at the same moment, retrying a conflict.

    MLflow writes a tag as "read, then insert or update": two processes that both read "absent"
    both insert, and the second fails on the unique constraint (SQLite and PostgreSQL alike).
    The write is idempotent and, on a retry, finds the row and updates it.
    """
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            return write()
        except MlflowException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


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
            self.log_text(text, ARTIFACT_ERROR)
            bare = "interrupted (Ctrl-C); a rerun resumes it" if isinstance(error, KeyboardInterrupt) else ""
            tags = {TAG_ERROR: f"{type(error).__name__}: {first_line(error) or bare}"[:500]}
            if retry_note:
                tags[TAG_RETRY] = retry_note
            self.set_tags(tags)
        finally:
            self._end(status)


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
    import subprocess

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
    """What the run was computed and timed on: torch version and the device (GPU name, or CPU model, cores and ISA)."""
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
        capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
        # the vector ISA torch's CPU kernels use (AVX2, AVX512...): one run key gives other float
        # results on another ISA, and this is how a report tells the two machines apart
        device = f"{device} ({os.cpu_count()} CPUs{', ' + capability if capability else ''})"
    return {TAG_TORCH: torch.__version__, TAG_DEVICE: device}
