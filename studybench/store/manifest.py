"""The study manifest: the expanded grid a ``run`` was asked for, recorded in the store.

``report`` and ``status`` work from a manifest and the runs alone (never the registries),
so a report can be rebuilt years later, with a newer studybench, without the study file:
the manifest holds the study definition (baseline, ablations, paper values, description),
the method order and, for every run of the grid, its key, readable name, groups and axes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from studybench import __version__

MANIFEST_SCHEMA = 1


def build_manifest(study: Any, specs: list[Any], profile: str | None, study_file: Path | None) -> dict[str, Any]:
    """The manifest of ``study`` (a ``config.Study``) expanded to ``specs`` under ``profile``."""
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
        "runs": [_entry(s) for s in specs],
    }


def _entry(spec: Any) -> dict[str, Any]:
    """One run of the grid; a tuned study's runs also say their phase (and a trial its index)."""
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
