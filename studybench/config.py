"""The study file: pydantic schema and YAML loading with errors that name file, key and fix.

A study is one flat YAML file (no includes, no inheritance): ``base`` is shared by every
run, ``grid`` axes are crossed, ``ablations`` vary one factor at a time around a named
method, ``profiles`` (e.g. ``smoke``) scale a study down. Sections (``data``, ``model``,
``loss``, ``scheme``, ``train``) are validated with the same typed models the trainer uses
(``spec.RunConfig``), so a wrong key or type is reported here, before anything runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from studybench.spec import RunConfig

SECTIONS = tuple(RunConfig.model_fields)  # data, model, loss, scheme, train


class StudyError(ValueError):
    """An invalid study file; the message names the file, the key and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Ablation(_Strict):
    """Vary keys one at a time around the method named ``of`` (all other axes kept)."""

    of: str
    vary: dict[str, list[Any]] = Field(min_length=1)


class Profile(_Strict):
    """Overrides applied to every run (after base and method, before axis values)."""

    seeds: list[int] | None = None
    dataset: str | list[str] | None = None  # replaces the dataset axis
    iterations_scale: float | None = Field(default=None, gt=0)  # train.iterations x this (keeps ratios between methods)
    data: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    loss: dict[str, Any] | None = None
    scheme: dict[str, Any] | None = None
    train: dict[str, Any] | None = None

    def sections(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SECTIONS if getattr(self, k) is not None}


class Resources(_Strict):
    """What one run asks of an executor (Ray resource request)."""

    cpus: float = Field(default=1, gt=0)
    gpus: float = Field(default=0, ge=0)


class Study(_Strict):
    study: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    baseline: str | None = None  # method the report compares every other method against
    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] | None = None
    ablations: dict[str, Ablation] = Field(default_factory=dict)
    profiles: dict[str, Profile] = Field(default_factory=dict)
    reference: list[dict[str, Any]] = Field(default_factory=list)  # paper numbers shown beside ours
    resources: Resources = Field(default_factory=Resources)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be unique, got {seeds}")
        return seeds

    @field_validator("base")
    @classmethod
    def _base_sections(cls, base: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(base) - set(SECTIONS))
        if unknown:
            raise ValueError(f"unknown section(s) {unknown}; allowed: {', '.join(SECTIONS)}")
        return base

    @field_validator("grid")
    @classmethod
    def _grid_axes(cls, grid: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
        if grid is None:
            return None
        if not grid:
            raise ValueError("grid is empty: add an axis (e.g. method: [...]) or remove 'grid' to run 'base' alone")
        for axis, values in grid.items():
            if not values:
                raise ValueError(f"axis {axis!r} has no values")
            if axis not in ("dataset", "method") and axis.split(".", 1)[0] not in SECTIONS:
                raise ValueError(
                    f"unknown axis {axis!r}; axes are 'dataset', 'method' or a dotted key into "
                    f"{', '.join(SECTIONS)} (e.g. loss.radius, model.arch)"
                )
        return grid


def load_study(path: str | Path) -> Study:
    """Read and validate ``path``; raise ``StudyError`` naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: study file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise StudyError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: a study must be a YAML mapping with at least 'study:', got {type(raw).__name__}")
    try:
        return Study.model_validate(raw)
    except ValidationError as err:
        raise StudyError(format_validation(err, str(path), Study)) from None


def format_validation(err: ValidationError, where: str, model: type[BaseModel] | None = None, prefix: str = "") -> str:
    """One line per problem: ``file: dotted.key: message (got value)``; unknown keys list allowed ones."""
    lines = []
    for item in err.errors():
        loc = prefix + ".".join(str(p) for p in item["loc"])
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, item["loc"][:-1]) if model else []
            msg = f"unknown key {str(item['loc'][-1])!r}" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        elif "input" in item and not isinstance(item["input"], dict):
            msg += f" (got {item['input']!r})"
        lines.append(f"{where}: {loc}: {msg}")
    return "\n".join(lines)


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) model that ``loc`` points into."""
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part) if isinstance(part, str) else None
        if field is None:
            if isinstance(part, int):
                continue
            return []
        current = _model_of(field.annotation)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None
