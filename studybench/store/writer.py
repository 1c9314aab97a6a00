"""Writing a study to the store: the store itself, experiments, training runs, records.

Runs are written through ``MlflowClient`` with explicit run ids (no global "active run"),
so the same code works in a worker process or on a Ray node. A new local store is created
by ``creation.ensure_store`` (whole or not at all, from a checked cached empty store).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
import traceback
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from studybench import __version__
from studybench.errors import first_line, warn
from studybench.store.base import local_path
from studybench.store.creation import empty_store_template, ensure_store  # noqa: F401 - imported from here by callers
from studybench.store.layout import (
    ARTIFACT_ERROR,
    ARTIFACT_MANIFEST,
    ARTIFACT_REPORT_DIR,
    ARTIFACT_SPEC,
    EXPERIMENT_KIND_TRAINING,
    KIND_MANIFEST,
    KIND_REPORT,
    KIND_TUNE_PARENT,
    PARAM_AXIS_PREFIX,
    PARAM_CHOSEN_PREFIX,
    TAG_ARCH,
    TAG_ATTEMPT,
    TAG_DATASET,
    TAG_DEVICE,
    TAG_ERROR,
    TAG_EXPERIMENT_KIND,
    TAG_FOLD,
    TAG_GIT_COMMIT,
    TAG_GROUPS,
    TAG_HEARTBEAT,
    TAG_HOST,
    TAG_KEY,
    TAG_KIND,
    TAG_LAST_USED,
    TAG_MANIFEST_HASH,
    TAG_METHOD,
    TAG_PARENT_RUN,
    TAG_PHASE,
    TAG_PID,
    TAG_PROFILE,
    TAG_RETRY,
    TAG_SAMPLER,
    TAG_SEED,
    TAG_STUDY,
    TAG_STUDY_FILE_HASH,
    TAG_TORCH,
    TAG_TRIAL,
    TAG_TUNE_SPLIT,
    TAG_VERSION,
    records_experiment,
)
from studybench.store.liveness import HEARTBEAT_S, STALE_AFTER_S, run_is_alive
from studybench.store.manifest import manifest_hash
from studybench.store.reader import StudyReader
from studybench.study.spec import RunSpec

_MAX_PARAM_LEN = 6000
#: Params of one run, in characters and in number. Params feed the UI's columns and search; the
#: whole resolved spec is the run's spec.yaml. Unbounded, a study of aliased strings wrote 480 MB.
_MAX_PARAMS_CHARS = 200_000
_MAX_PARAMS = 1000
_CUT_PARAM = "(cut: too long to log as a param; the run's spec.yaml holds it)"


class StudyWriter(StudyReader):
    """Writes the MLflow experiment of one study (creating the store and experiment when needed)."""

    def __init__(self, uri: str, study: str) -> None:
        ensure_store(uri)
        super().__init__(uri, study, must_exist=False)
        self._parents: dict[str, str] | None = None  # fold -> tune-parent run id (tune_parents)
        self._samplers: dict[str, str] = {}  # fold -> its trials' sampler, from the parent's tag

    # ----------------------------------------------------------------- experiments
    def ensure_experiment(self, name: str | None = None) -> str:
        """The experiment's id, created (as a model-training experiment) if needed, race-free."""
        name = name or self.study
        exp_id = self.experiment_id(name)
        if exp_id is not None:
            return exp_id
        restored = self._restore_deleted(name)
        if restored is not None:
            return restored
        tags = {TAG_STUDY: self.study, TAG_EXPERIMENT_KIND: EXPERIMENT_KIND_TRAINING}
        try:
            return self.client.create_experiment(name, artifact_location=self._artifact_location(name), tags=tags)
        except Exception:  # another process created it a moment ago
            exp_id = self.experiment_id(name)
            if exp_id is None:
                raise
            return exp_id

    def _restore_deleted(self, name: str) -> str | None:
        """Restore the experiment ``name`` if it was deleted (MLflow keeps it: a new one cannot take its name)."""
        exp = self.client.get_experiment_by_name(name)
        if exp is None or exp.lifecycle_stage != "deleted":
            return None
        self.client.restore_experiment(exp.experiment_id)
        warn(
            f"the experiment {name!r} was deleted (MLflow keeps deleted experiments, and their names); it is "
            "restored with its runs. To start the study afresh, delete it for good (`mlflow gc "
            f"--backend-store-uri {self.uri} --experiment-ids {exp.experiment_id}`) or use another store"
        )
        return exp.experiment_id

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
            **identity_tags(spec),
            TAG_VERSION: __version__,
            TAG_GIT_COMMIT: git_commit(),
            **environment_tags(),
            **self._phase_tags(spec),
        }
        run = self.client.create_run(exp_id, run_name=spec.name, tags=tags)
        logger = RunLogger(self.client, run.info.run_id, heartbeat_s=HEARTBEAT_S)
        logger.log_params(run_params(spec))
        logger.log_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), ARTIFACT_SPEC)
        return logger

    def _phase_tags(self, spec: RunSpec) -> dict[str, str]:
        """A tuned study's run: its phase; a trial also its index, sampler, fold and parent run (if made)."""
        if spec.phase is None:
            return {}
        tags = {TAG_PHASE: spec.phase}
        if spec.trial is not None:
            parent = self.tune_parents().get(spec.fold)
            sampler = self._samplers.get(spec.fold, "sobol")
            tags.update({TAG_TRIAL: str(spec.trial), TAG_SAMPLER: sampler, TAG_FOLD: spec.fold})
            if parent is not None:
                tags[TAG_PARENT_RUN] = parent
        return tags

    def tune_parents(self) -> dict[str, str]:
        """fold -> the run id of its parent run (``KIND_TUNE_PARENT``), read once per writer."""
        if self._parents is None:
            found = self.runs(filter_string=f"tags.`{TAG_KIND}` = '{KIND_TUNE_PARENT}'")
            self._parents = {r.data.tags.get(TAG_FOLD): r.info.run_id for r in found}
            self._samplers = {r.data.tags.get(TAG_FOLD): r.data.tags.get(TAG_SAMPLER, "sobol") for r in found}
        return self._parents

    def ensure_tune_parent(self, fold: str, name: str, split_digest: str = "", sampler: str = "sobol") -> str:
        """The parent run that folds one (method, cell)'s trials in the runs table (made once per fold).

        Tagged ``KIND_TUNE_PARENT`` and never with a phase, so no report or status counts it as a run;
        ``split_digest`` (the SHA-256 of the tuning split's image ids) says which images tuning scored on;
        ``sampler`` how its trials are drawn (its trials' tag, read from here by every worker's writer).
        """
        if fold not in self.tune_parents():
            tags = {TAG_KIND: KIND_TUNE_PARENT, TAG_FOLD: fold, TAG_STUDY: self.study, TAG_TUNE_SPLIT: split_digest}
            run = self.client.create_run(self.ensure_experiment(), run_name=name, tags={**tags, TAG_SAMPLER: sampler})
            self.client.set_terminated(run.info.run_id, "FINISHED")
            self._parents[fold] = run.info.run_id
        elif self._samplers.get(fold) != sampler:  # the study changed its sampler since the parent was made
            self.client.set_tag(self._parents[fold], TAG_SAMPLER, sampler)
        self._samplers[fold] = sampler
        return self._parents[fold]

    def record_choice(self, fold: str, chosen: dict[str, Any], trial: int) -> None:
        """The chosen setting of a fold, on its parent run (params ``chosen.<knob>`` and the trial index)."""
        from mlflow.entities import Param, RunTag

        parent = self.tune_parents().get(fold)
        if parent is not None:
            self.client.log_batch(
                parent,
                params=[Param(f"{PARAM_CHOSEN_PREFIX}{k}", str(v)) for k, v in chosen.items()],
                tags=[RunTag(TAG_TRIAL, str(trial))],
            )

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
            [exp_id], filter_string=f"tags.`{TAG_MANIFEST_HASH}` = '{digest}'", max_results=10
        )
        run_id = next((r.info.run_id for r in found if self._holds(r.info.run_id, manifest)), None)
        if run_id is None:
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

    def _holds(self, run_id: str, manifest: dict[str, Any]) -> bool:
        """Whether record ``run_id`` holds ``manifest`` (anyone can write a store: a hash tag proves nothing)."""
        try:
            return self.read_json(run_id, ARTIFACT_MANIFEST) == json.loads(json.dumps(manifest))
        except Exception:  # noqa: BLE001 - missing, unreadable or not JSON: not this manifest
            return False

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


def identity_tags(spec: RunSpec) -> dict[str, str]:
    """What a run is, as tags: study, key, method, dataset, arch, seed and groups (what readers select on)."""
    return {
        TAG_STUDY: spec.study,
        TAG_KEY: spec.key,
        TAG_METHOD: spec.method,
        TAG_DATASET: spec.dataset,
        TAG_ARCH: spec.arch,
        TAG_SEED: str(spec.seed),
        TAG_GROUPS: ",".join(spec.groups),
    }


def run_params(spec: RunSpec) -> dict[str, Any]:
    """A run's params: its resolved config (dotted keys) and the grid values that named it (``axis.*``)."""
    return {**spec.params(), **{f"{PARAM_AXIS_PREFIX}{k}": v for k, v in spec.axes.items()}}


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

        items = [Param(k, v) for k, v in bounded_params(params)]
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


def bounded_params(params: dict[str, Any]) -> list[tuple[str, str]]:
    """The first ``_MAX_PARAMS`` params as text; values past ``_MAX_PARAMS_CHARS`` in all are replaced by a note."""
    out, left = [], _MAX_PARAMS_CHARS
    for key, value in sorted(params.items())[:_MAX_PARAMS]:
        text = _param_str(value)
        if len(text) > left:
            text = _CUT_PARAM
        left -= len(text)
        out.append((key, text))
    return out


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
