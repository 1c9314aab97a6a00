"""What the commands do, as plain functions tests can call; ``cli`` only parses and prints.

``status`` and ``report`` work on a *study view*: the study definition and the exact grid
(run keys, names, groups, axes) that it covers. The view comes from the manifest that
``run`` recorded in the store; only for a study file that was never run as it is now does it
come from expanding the file (then nothing is recorded: reading never writes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from studybench.store import StudyReader, StudyWriter
from studybench.store.layout import TAG_PROFILE
from studybench.store.liveness import STATES, run_state
from studybench.store.manifest import build_manifest, file_sha256, manifest_study
from studybench.study.config import Study, StudyError, load_study
from studybench.study.grid import expand, select


class SelectionError(StudyError):
    """``--only`` matches no run."""


def load_runs(study_path: Path, profile: str | None, only: str | None = None, check_data: bool = True):
    """Load, validate and expand a study file: ``(study, all specs, selected specs)``; raises ``StudyError``."""
    study = load_study(study_path)
    specs = expand(study, profile, source=str(study_path), check_data=check_data)
    chosen = select(specs, only)
    if not chosen:
        raise SelectionError(f"--only {only!r} matches no run of {study_path}")
    return study, specs, chosen


def record_manifest(store: StudyWriter, study: Study, specs: list, profile: str | None, study_path: Path) -> None:
    """Record the full grid ``run`` was asked for (before any run starts: a crash keeps it)."""
    store.record_manifest(build_manifest(study, specs, profile, Path(study_path).resolve()))


@dataclass
class StudyView:
    """A study as status and report see it: its definition and the exact grid it covers."""

    study: Study
    profile: str | None
    manifest: dict[str, Any]
    recorded: bool  # read from the store (True) or expanded from the study file (False)

    @property
    def keys(self) -> list[str]:
        return [r["key"] for r in self.manifest["runs"]]


def open_view(
    uri: str, study_path: Path | None = None, study_name: str | None = None, profile: str | None = None
) -> tuple[StudyView, StudyReader]:
    """The view of a study file or of a study name (manifest only); raises ``StoreMissing``/``StudyError``."""
    if study_path is not None:
        study = load_study(study_path)
        reader = StudyReader(uri, study.study)
        manifest = reader.find_manifest(profile, file_sha256(study_path))
        if manifest is not None:
            return StudyView(manifest_study(manifest), profile, manifest, True), reader
        specs = expand(study, profile, source=str(study_path), check_data=False)
        manifest = build_manifest(study, specs, profile, Path(study_path).resolve())
        return StudyView(study, profile, manifest, False), reader
    if not study_name:
        raise StudyError("name a study file, or a study with --study NAME")
    reader = StudyReader(uri, study_name)
    manifest = reader.find_manifest(profile)
    if manifest is None:
        profiles = sorted({r.data.tags.get(TAG_PROFILE, "") or "(none)" for r in reader.manifests()})
        known = f"; recorded profiles: {', '.join(profiles)}" if profiles else "; no `run` of it recorded a manifest"
        raise StudyError(f"study {study_name!r} has no recorded manifest for profile {profile or '(none)'!r}{known}")
    return StudyView(manifest_study(manifest), profile, manifest, True), reader


class RunRef(NamedTuple):
    """What the checkpoint store needs of a run (a manifest entry has no ``RunSpec``)."""

    study: str
    key: str
    name: str


@dataclass
class StatusRow:
    name: str
    key: str
    state: str  # done / failed / running / pending
    note: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


def study_status(view: StudyView, reader: StudyReader, checkpoints: Any | None = None) -> list[StatusRow]:
    """One row per run of the view's grid, from the newest MLflow run of its key."""
    latest, finished = reader.newest_runs()
    rows = []
    for entry in view.manifest["runs"]:
        key = entry["key"]
        state = run_state(finished.get(key) or latest.get(key))
        note = state.note
        if checkpoints is not None and state.state in ("failed", "pending"):
            resume = checkpoints.resume_note(RunRef(view.study.study, key, entry["name"]))
            note = f"{note}; {resume}".strip("; ") if resume else note
        metrics = dict(state.run.data.metrics) if state.run is not None else {}
        # a run is what its own tags say (the manifest, writable by anyone, only lists the grid's keys)
        name = (state.run.info.run_name if state.run is not None else None) or entry["name"]
        rows.append(StatusRow(name, key, state.state, note, metrics))
    return rows


def count_states(rows: list[StatusRow]) -> dict[str, int]:
    return {s: sum(r.state == s for r in rows) for s in STATES}


def make_report(view: StudyView, reader: StudyReader, out_dir: Path, log_to_mlflow: bool = True):
    """Build the report of exactly the view's grid (see ``report.build_report``)."""
    from studybench.report import build_report

    return build_report(view, reader, out_dir, log_to_mlflow=log_to_mlflow)
