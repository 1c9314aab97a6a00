"""The study manifest: the expanded grid a ``run`` was asked for, recorded in the store.

``report`` and ``status`` work from a manifest and the runs alone (never the registries),
so a report can be rebuilt years later, with a newer studybench, without the study file:
the manifest holds the study definition (baseline, ablations, paper values, description),
the method order and, for every run of the grid, its key, readable name, groups and axes.

A manifest is read back from a store anyone can write to, so it is checked before use
(``read_manifest``): an unusable one (not JSON, not the shape below, an invalid study
definition, a missing artifact) is skipped with a warning naming its record and the fix,
and the next usable one is taken. What a run *is* (its name, method, key) always comes from
the run's own tags; the manifest only says which keys make up the grid.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from studybench import __version__
from studybench.errors import warn
from studybench.store.layout import ARTIFACT_MANIFEST, TAG_LAST_USED

MANIFEST_SCHEMA = 1
#: A manifest entry's field: the SHA-256 (16 hex) of the tuning split's ids its run carves (``TAG_TUNE_SPLIT``).
MANIFEST_TUNE_SPLIT = "tune_split_sha256"
#: A manifest artifact larger than this is not read (a 10,000-run grid is a few MB).
MAX_MANIFEST_BYTES = 64_000_000


def build_manifest(
    study: Any, specs: list[Any], profile: str | None, study_file: Path | None, splits: dict[str, str] | None = None
) -> dict[str, Any]:
    """The manifest of ``study`` (a ``config.Study``) expanded to ``specs`` under ``profile``.

    ``splits`` maps the run key of a run that carves a tuning split out of its training data to
    the SHA-256 (16 hex) of that split's image ids (``phases.tune_split_digests``): which images
    tuning chose on, recorded with the grid as on the fold's parent run.
    """
    splits = splits or {}
    return {
        "schema": MANIFEST_SCHEMA,
        "study": study.study,
        "profile": profile or "",
        "study_file": str(study_file) if study_file else "",
        "study_file_sha256": file_sha256(study_file) if study_file else "",
        "studybench_version": __version__,
        "definition": study.model_dump(mode="json"),
        "baseline": study.baseline,
        "methods": list(dict.fromkeys(s.method for s in specs)),
        "seeds": sorted({s.seed for s in specs}),
        "runs": [_entry(s, splits.get(s.key)) for s in specs],
    }


def _entry(spec: Any, split: str | None = None) -> dict[str, Any]:
    """One run of the grid; a tuned study's runs also say their phase (a trial its index and its tuning split)."""
    entry = {
        "key": spec.key,
        "name": spec.name,
        "method": spec.method,
        "dataset": spec.dataset,
        "arch": spec.arch,
        "seed": spec.seed,
        "groups": list(spec.groups),
        "axes": spec.axes,
    }
    if getattr(spec, "phase", None) is not None:
        entry.update({"phase": spec.phase, "trial": spec.trial, "fold": spec.fold})
    if split:
        entry[MANIFEST_TUNE_SPLIT] = split
    return entry


def manifest_hash(manifest: dict[str, Any]) -> str:
    """Content hash of a manifest: one record per distinct grid."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def manifest_study(manifest: dict[str, Any]) -> Any:
    """The study definition of a manifest, as a ``config.Study`` (the schema, not the registries)."""
    from studybench.study.config import Study

    return Study.model_validate(manifest["definition"])


class _Entry(BaseModel):
    """One run of a manifest's grid: what ``status`` and ``report`` read of it."""

    model_config = ConfigDict(extra="allow", strict=True)
    key: str
    name: str
    method: str
    seed: int
    groups: list[str]
    axes: dict[str, Any]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    definition: dict[str, Any]
    runs: list[_Entry]
    seeds: list[int]
    methods: list[str]


def manifest_problem(data: Any, study: str) -> str | None:
    """Why ``data`` cannot serve as the manifest of ``study``; None if it can."""
    from studybench.study.config import StudyError, cut

    if not isinstance(data, dict):
        return f"not a JSON object (a {type(data).__name__})"
    if data.get("schema") != MANIFEST_SCHEMA:
        return f"schema {cut(repr(data.get('schema')), 40)} is not {MANIFEST_SCHEMA} (written by another studybench?)"
    try:
        _Shape.model_validate(data)
        definition = manifest_study(data)
    except (ValidationError, StudyError) as err:
        return cut(" ".join(str(err).split()), 300)
    if definition.study != study:
        return f"it is the manifest of study {cut(repr(definition.study), 80)}"
    keys = [entry["key"] for entry in data["runs"]]
    if len(set(keys)) != len(keys):
        return "a run key is listed twice"
    return None


def read_manifest(reader: Any, record: Any) -> dict[str, Any] | None:
    """The manifest of ``record`` (a manifest run) if usable; else None, after a warning naming it and the fix."""
    problem = _checked(reader, record.info.run_id)
    if isinstance(problem, dict):
        return problem
    where = reader.client.get_experiment(record.info.experiment_id).name
    warn(
        f"the manifest recorded by run {record.info.run_id} (experiment {where!r}) is unusable: {problem}; "
        "skipped. A new `studybench run STUDY.yaml` records a good one (delete the bad run in `studybench ui` "
        "to silence this)"
    )
    return None


def _checked(reader: Any, run_id: str) -> dict[str, Any] | str:
    """The checked manifest of ``run_id``, or why it cannot be used (the size is read before the file)."""
    try:
        sizes = {item.path: item.file_size for item in reader.client.list_artifacts(run_id)}
        if (sizes.get(ARTIFACT_MANIFEST) or 0) > MAX_MANIFEST_BYTES:
            return f"{sizes[ARTIFACT_MANIFEST]} bytes, more than {MAX_MANIFEST_BYTES}"
        data = reader.read_bytes(run_id, ARTIFACT_MANIFEST)
    except Exception as err:  # noqa: BLE001 - MLflow raises several kinds for a missing or unreadable artifact
        return f"its {ARTIFACT_MANIFEST} artifact cannot be read ({type(err).__name__})"
    try:
        manifest = json.loads(data)
    except ValueError as err:  # not UTF-8, not JSON
        return f"not valid JSON ({err})"
    return manifest_problem(manifest, reader.study) or manifest


def last_used(record: Any) -> float:
    """When a manifest record was last used (its tag; 0 when missing or not a finite number)."""
    try:
        value = float(record.data.tags.get(TAG_LAST_USED, "0"))
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0
