"""The study file: pydantic schema and YAML loading with errors that name file, key and fix.

A study is one flat YAML file (no includes, no inheritance): ``base`` is shared by every
run, ``grid`` axes are crossed, ``ablations`` vary one factor at a time around a named
method, ``profiles`` (e.g. ``smoke``) scale a study down. Sections (``data``, ``model``,
``loss``, ``scheme``, ``train``) are validated with the same typed models the trainer uses
(``spec.RunConfig``), so a wrong key or type is reported here, before anything runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from studybench.registry import did_you_mean
from studybench.study.spec import SOURCES, RunConfig
from studybench.study.tuning import TuneCfg

SECTIONS = tuple(RunConfig.model_fields)  # data, model, loss, scheme, train

#: Names that become folders, files and MLflow names (study, method, ablation, profile, dataset entry):
#: letters, digits and ``_ . + = -``, starting with a letter or digit (so never ``..`` or a path).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$"
MAX_NAME = 64
#: Study files larger than this are refused unread (a study is a few kilobytes).
MAX_FILE_BYTES = 1_000_000
#: YAML values after expanding anchors/aliases; beyond this a file is an alias bomb, not a study.
MAX_YAML_NODES = 100_000
#: Characters of all scalars after expanding aliases: a string aliased a thousand times is a
#: 400 MB parameter, written into every run; a real study holds far less than its file size.
MAX_YAML_CHARS = 1_000_000
#: Problems listed in one validation error; the rest are counted (30,000 unknown keys made 9 MB).
MAX_LISTED_ERRORS = 20
#: A seed as numpy and torch accept it; ``true`` is not the integer 1 here.
Seed = Annotated[int, Strict(), Field(ge=0, le=2**32 - 1)]


class SeedsBySource(BaseModel):
    """``seeds: {init: [0, 1, 2], data: [0]}``: each source's seeds; the runs are their Cartesian product.

    A source left out keeps seed 0 (``{init: [0, 1, 2]}`` varies the initial weights alone, with
    data order, augmentation and the method's draws on seed 0). Bouthillier et al. 2021 vary one
    source at a time to see how much of a result's spread each one causes.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    init: list[Seed] | None = Field(default=None, min_length=1)  # initial weights (init/<role> streams)
    data: list[Seed] | None = Field(default=None, min_length=1)  # training order (and loader workers)
    aug: list[Seed] | None = Field(default=None, min_length=1)  # each sample's augmentation
    method: list[Seed] | None = Field(default=None, min_length=1)  # the method's own draws (dropout, ...)

    @field_validator(*SOURCES)
    @classmethod
    def _unique(cls, seeds: list[int] | None) -> list[int] | None:
        return None if seeds is None else unique_seeds(seeds)

    @model_validator(mode="after")
    def _some_source(self) -> SeedsBySource:
        if all(getattr(self, name) is None for name in SOURCES):
            raise ValueError(f"give the seeds of at least one source: {', '.join(SOURCES)} (e.g. {{init: [0, 1, 2]}})")
        return self

    def runs(self) -> list[dict[str, int]]:
        """Every combination of the sources' seeds (``spec.SOURCES`` order), a left-out source on 0."""
        import itertools

        lists = [getattr(self, name) or [0] for name in SOURCES]
        return [dict(zip(SOURCES, combo)) for combo in itertools.product(*lists)]

    def varied(self) -> list[str]:
        """The sources given more than one seed."""
        return [name for name in SOURCES if len(getattr(self, name) or []) > 1]


#: Tags of the ``seeds`` union (a list, or seeds by source); ``format_validation`` leaves them out of keys.
_SEED_TAGS = ("seed list", "seeds by source")
#: ``seeds:`` as written: one list (every source from the same seed) or seeds by source.
Seeds = Annotated[
    Annotated[list[Seed], Field(min_length=1), Tag(_SEED_TAGS[0])] | Annotated[SeedsBySource, Tag(_SEED_TAGS[1])],
    Discriminator(lambda v: _SEED_TAGS[1] if isinstance(v, (dict, SeedsBySource)) else _SEED_TAGS[0]),
]


def seed_runs(seeds: list[int] | SeedsBySource) -> list[int] | list[dict[str, int]]:
    """The seeds a study's runs take: plain seeds, or one mapping of source -> seed per run."""
    return seeds.runs() if isinstance(seeds, SeedsBySource) else list(seeds)


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

    seeds: Seeds | None = None  # a list or seeds by source, as the study's
    dataset: str | list[str] | None = None  # replaces the dataset axis
    iterations_scale: float | None = Field(default=None, gt=0)  # train.iterations x this (keeps ratios between methods)
    data: dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    loss: dict[str, Any] | None = None
    scheme: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    #: A tune: section that replaces the study's under this profile (``Study.under``): a paper study's
    #: ``tuned`` profile switches equal-budget tuning on without changing its untuned runs.
    tune: TuneCfg | None = None

    def sections(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SECTIONS if getattr(self, k) is not None}

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int] | SeedsBySource | None) -> list[int] | SeedsBySource | None:
        return seeds if seeds is None or isinstance(seeds, SeedsBySource) else unique_seeds(seeds)


class Resources(_Strict):
    """What one run asks of an executor: Ray's resource request, or a Slurm job's (the Slurm-only fields)."""

    cpus: float = Field(default=1, gt=0)
    gpus: float = Field(default=0, ge=0)
    partition: str | None = None  # Slurm partition (default: the cluster's default partition)
    time_min: int | None = Field(default=None, gt=0)  # Slurm time limit per job; a job that hits it is requeued
    mem_gb: float | None = Field(default=None, gt=0)  # Slurm memory per job (default: the cluster's default)


class Study(_Strict):
    study: str = Field(pattern=NAME_PATTERN, max_length=MAX_NAME)
    description: str = ""
    seeds: Seeds = Field(default_factory=lambda: [0])  # a list, or seeds by source ({init: [...], data: [...]})
    baseline: str | None = None  # method the report compares every other method against
    min_effect: float = Field(default=0.5, gt=0, lt=100)  # smallest effect of interest, mIoU points (report verdicts)
    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] | None = None
    ablations: dict[str, Ablation] = Field(default_factory=dict)
    profiles: dict[str, Profile] = Field(default_factory=dict)
    reference: list[dict[str, Any]] = Field(default_factory=list)  # paper numbers shown beside ours
    resources: Resources = Field(default_factory=Resources)
    tune: TuneCfg | None = None  # equal tuning budget per method (study.tuning, study.phases)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int] | SeedsBySource) -> list[int] | SeedsBySource:
        return seeds if isinstance(seeds, SeedsBySource) else unique_seeds(seeds)

    @field_validator("ablations", "profiles")
    @classmethod
    def _safe_names(cls, named: dict[str, Any]) -> dict[str, Any]:
        for name in named:
            check_name(name)
        return named

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

    def under(self, profile: str | None) -> Study:
        """This study as ``profile`` runs it: with the profile's ``tune:`` section when it has one.

        Why here and not in the runs: whether a study is tuned decides which phases run, what the
        manifest lists and what the report shows, so every caller must see the same ``tune``.
        """
        chosen = self.profiles.get(profile) if profile else None
        if chosen is None or chosen.tune is None:
            return self
        return self.model_copy(update={"tune": chosen.tune})


def unique_seeds(seeds: list[int]) -> list[int]:
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be unique, got {brief(seeds)}")
    return seeds


def check_name(name: Any, what: str = "name") -> str:
    """``ValueError`` unless ``name`` is safe as a file name and an MLflow name (see ``NAME_PATTERN``)."""
    import re

    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name) or len(name) > MAX_NAME:
        raise ValueError(
            f"{what} {brief(name, 80)} is not allowed: use at most {MAX_NAME} letters, digits and _ . + = - "
            "(starting with a letter or digit); names become folders, files and MLflow names"
        )
    return name


def brief(value: Any, limit: int = 200) -> str:
    """``repr(value)`` cut to ``limit`` characters: error messages stay readable whatever the input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} characters)"


def cut(text: str, limit: int = 500) -> str:
    """An error text cut to ``limit`` characters (it may quote a value of any size)."""
    return text if len(text) <= limit else f"{text[: limit - 30]}... ({len(text)} characters)"


def load_study(path: str | Path) -> Study:
    """Read and validate ``path``; raise ``StudyError`` naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: study file not found")
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: a study must be a YAML mapping with at least 'study:', got {type(raw).__name__}")
    try:
        return Study.model_validate(raw)
    except ValidationError as err:
        raise StudyError(format_validation(err, str(path), Study)) from None


def _read_yaml(path: Path) -> Any:
    """The YAML document in ``path``, refused early if it is too large, not UTF-8, or an alias bomb.

    Why: a few hundred bytes of nested anchors expand to gigabytes, and printing such a value
    in an error took minutes; the node graph is measured before anything is expanded.
    """
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise StudyError(f"{path}: {size} bytes; a study file may have at most {MAX_FILE_BYTES}")
        data = path.read_bytes()
    except OSError as err:
        raise StudyError(f"{path}: cannot read the study file: {err.strerror or err}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise StudyError(
            f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); save the file as UTF-8"
        ) from None
    _refuse_control_characters(text, path)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded(node, path)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise StudyError(f"{path}: not valid YAML: {cut(str(err))}") from None
    except RecursionError:  # PyYAML's composer recurses once per level, before our depth check can run
        raise StudyError(f"{path}: {_TOO_DEEP}") from None
    finally:
        loader.dispose()


def _refuse_control_characters(text: str, path: Path) -> None:
    """A NUL or other control character: name its line and column (PyYAML raises before we could catch it)."""
    found = yaml.reader.Reader.NON_PRINTABLE.search(text)
    if found is not None:
        pos = found.start()
        line, column = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
        raise StudyError(
            f"{path}: line {line}, column {column}: control character U+{ord(text[pos]):04X} is not allowed "
            "in a study file; delete it (an editor that shows invisible characters finds it)"
        )


_TOO_DEEP = "the YAML nests deeper than 200 levels ([[[... or indentation); a study needs a few levels"


def _check_expanded(node: yaml.Node, path: Path) -> None:
    """Refuse an alias bomb: too many values or characters once every alias is expanded."""
    try:
        nodes, chars = _expanded_size(node, {}, 0)
    except StudyError as err:
        raise StudyError(f"{path}: {err}") from None
    if nodes > MAX_YAML_NODES or chars > MAX_YAML_CHARS:
        raise StudyError(
            f"{path}: the YAML expands to more than {MAX_YAML_NODES} values or {MAX_YAML_CHARS} characters "
            "through anchors and aliases (&name / *name); a study needs far fewer: write the values out or "
            "nest fewer aliases"
        )


def _expanded_size(node: yaml.Node, memo: dict[int, tuple[int, int]], depth: int) -> tuple[int, int]:
    """``(values, characters)`` in ``node`` once every alias is expanded, counted over the node graph."""
    if id(node) in memo:
        return memo[id(node)]
    if depth > 200:
        raise StudyError(_TOO_DEEP)
    too_big = (MAX_YAML_NODES + 1, MAX_YAML_CHARS + 1)
    memo[id(node)] = too_big  # a node reached from inside itself (recursive alias) is too big
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    nodes, chars = 1, len(node.value) if isinstance(node, yaml.ScalarNode) else 0
    for child in children:
        more = _expanded_size(child, memo, depth + 1)
        nodes, chars = nodes + more[0], chars + more[1]
    memo[id(node)] = (min(nodes, too_big[0]), min(chars, too_big[1]))
    return memo[id(node)]


def format_validation(err: ValidationError, where: str, model: type[BaseModel] | None = None, prefix: str = "") -> str:
    """One line per problem: ``file: dotted.key: message (got value)``; unknown keys list allowed ones."""
    lines = []
    for item in err.errors():
        where_in = tuple(p for p in item["loc"] if p not in _SEED_TAGS)  # seeds.init, not seeds.seeds by source.init
        loc = prefix + ".".join(str(p) for p in where_in)
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, where_in[:-1]) if model else []
            hint = did_you_mean(where_in[-1], allowed)
            msg = f"unknown key {str(where_in[-1])!r}{hint}" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        elif "input" in item and not isinstance(item["input"], dict):
            msg += f" (got {brief(item['input'])})"
        lines.append(f"{where}: {loc}: {msg}")
    if len(lines) > MAX_LISTED_ERRORS:
        rest = len(lines) - MAX_LISTED_ERRORS
        lines[MAX_LISTED_ERRORS:] = [f"{where}: ... and {rest} more problems like these (fix the ones above first)"]
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
