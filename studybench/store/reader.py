"""Reading a study from the store: its runs, the newest run per key, its manifests.

Never creates anything: a missing local store raises ``StoreMissing`` (see
``store.require_existing``), a missing experiment reads as "no runs".
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studybench.store.base import quiet_mlflow, require_existing
from studybench.store.layout import (
    KIND_MANIFEST,
    TAG_KEY,
    TAG_KIND,
    TAG_PROFILE,
    TAG_STUDY_FILE_HASH,
    records_experiment,
)
from studybench.store.manifest import last_used, read_manifest


@dataclass(frozen=True)
class Snapshot:
    """The study's runs as one read saw them: what a report's scope and tables both use."""

    runs: list[Any]  # every run of the experiment, newest first
    latest: dict[str, Any] = field(default_factory=dict)  # run key -> its newest run
    finished: dict[str, Any] = field(default_factory=dict)  # run key -> its newest FINISHED run
    by_id: dict[str, Any] = field(default_factory=dict)  # MLflow run id -> run

    @classmethod
    def of(cls, runs: list[Any]) -> Snapshot:
        snapshot = cls(runs)
        for run in runs:  # newest first
            snapshot.by_id[run.info.run_id] = run
            key = run.data.tags.get(TAG_KEY)
            if key:
                snapshot.latest.setdefault(key, run)
                if run.info.status == "FINISHED":
                    snapshot.finished.setdefault(key, run)
        return snapshot

    def by_key(self, finished_only: bool) -> dict[str, Any]:
        return self.finished if finished_only else self.latest


class StudyReader:
    """Reads the MLflow experiment of one study (and its records experiment)."""

    def __init__(self, uri: str, study: str, must_exist: bool = True) -> None:
        if must_exist:
            require_existing(uri)
        quiet_mlflow()
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.study = study
        self.client = MlflowClient(tracking_uri=uri)
        self._snapshot: Snapshot | None = None  # the last one read (``run`` answers from it)

    # ----------------------------------------------------------------- runs
    def experiment_id(self, name: str | None = None) -> str | None:
        exp = self.client.get_experiment_by_name(name or self.study)
        return None if exp is None or exp.lifecycle_stage == "deleted" else exp.experiment_id

    def runs(self, experiment: str | None = None, filter_string: str = "") -> list[Any]:
        """All MLflow runs of the study's experiment (or ``experiment``), any status, newest first."""
        exp_id = self.experiment_id(experiment)
        if exp_id is None:
            return []
        out, token = [], None
        while True:
            page = self.client.search_runs(
                [exp_id],
                filter_string=filter_string,
                max_results=1000,
                page_token=token,
                order_by=["attributes.start_time DESC"],
            )
            out.extend(page)
            token = page.token
            if not token:
                return out

    def latest_by_key(self, finished_only: bool = False) -> dict[str, Any]:
        """Run key -> its newest MLflow run (with ``finished_only``: its newest FINISHED run).

        With ``finished_only`` a later duplicate that is still running, failed or was killed
        neither hides a finished result nor enters a report.
        """
        return self.newest_runs()[1 if finished_only else 0]

    def newest_runs(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(newest run per key, newest FINISHED run per key)`` from one pass over the runs."""
        snapshot = self.snapshot()
        return snapshot.latest, snapshot.finished

    def snapshot(self) -> Snapshot:
        """One read of every run of the study (a few paged searches, whatever the number of keys)."""
        self._snapshot = Snapshot.of(self.runs())
        return self._snapshot

    def run(self, run_id: str) -> Any:
        """A run as the last ``snapshot`` saw it (one request when no snapshot holds it)."""
        found = self._snapshot.by_id.get(run_id) if self._snapshot else None
        return found if found is not None else self.client.get_run(run_id)

    def finished_run(self, key: str) -> Any | None:
        """The newest FINISHED run of ``key``, or None."""
        found = self.runs(filter_string=f"tags.`{TAG_KEY}` = '{key}' and attributes.status = 'FINISHED'")
        return found[0] if found else None

    # ----------------------------------------------------------------- manifests
    def manifests(self, profile: str | None = None) -> list[Any]:
        """Manifest records of the study (optionally of one profile), most recently used first."""
        query = f"tags.`{TAG_KIND}` = '{KIND_MANIFEST}'"
        if profile is not None:
            query += f" and tags.`{TAG_PROFILE}` = '{profile}'"
        found = self.runs(records_experiment(self.study), query)
        return sorted(found, key=last_used, reverse=True)

    def find_manifest(self, profile: str | None, study_file_sha256: str | None = None) -> dict[str, Any] | None:
        """The newest usable manifest of ``profile`` ("" = none), of this study file's content if given.

        An unusable one is skipped with a warning (``manifest.read_manifest``).
        """
        for record in self.manifests(profile or ""):
            if study_file_sha256 is None or record.data.tags.get(TAG_STUDY_FILE_HASH) == study_file_sha256:
                manifest = read_manifest(self, record)
                if manifest is not None:
                    return manifest
        return None

    def read_json(self, run_id: str, artifact: str) -> Any:
        return json.loads(self.read_bytes(run_id, artifact))

    def read_bytes(self, run_id: str, artifact: str) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            return Path(self.client.download_artifacts(run_id, artifact, tmp)).read_bytes()
