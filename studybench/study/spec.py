"""Typed, frozen configuration of one run (``RunSpec``) and its sections.

This module is what the trainer consumes; it knows nothing of YAML files, grids or
profiles (those live in ``config`` and ``grid``). Sections reject unknown keys, except
``loss`` and ``scheme`` whose extra keys are the parameters of the named component and are
checked against that component's registry signature instead.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationInfo, field_validator, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CarveCfg(Section):
    """A tuning split carved from the training split (``data.carve``; see ``data.carve``).

    The run trains on the rest of the training split; ``score_on: carved`` (a tuning trial)
    evaluates on the carved images and never opens the reported split, ``val`` on the reported
    split as usual. ``salt`` picks which images (by salted hash): one salt, one carve.
    """

    fraction: float | None = Field(default=None, gt=0, lt=1)
    by: str | None = None  # a grouping the dataset defines (e.g. Cityscapes 'city')
    count: StrictInt | None = Field(default=None, ge=1)  # groups carved out
    salt: StrictInt = Field(default=0, ge=0)
    score_on: Literal["carved", "val"] = "carved"

    @model_validator(mode="after")
    def _one_way(self) -> CarveCfg:
        if (self.fraction is None) == (self.by is None):
            raise ValueError("give either fraction: F (0 < F < 1) or by: GROUP with count: N")
        if (self.by is None) != (self.count is None):
            raise ValueError("by: GROUP needs count: N (how many groups to carve out)")
        return self


class DataCfg(Section):
    """Dataset and the joint image/mask transforms applied to it."""

    dataset: str = "synthetic"
    root: str | None = None  # default: $STUDYBENCH_DATA/<dataset> or ./data/<dataset>
    options: dict[str, Any] = Field(default_factory=dict)  # the dataset's own parameters
    train_split: str = "train"
    val_split: str = "val"
    resize: int | list[int] | None = None  # int: shorter side; [h, w]: fixed size
    scale: list[float] | None = None  # random scale range [lo, hi] (training only)
    crop: int | list[int] | None = None  # random crop in training (padded with 255 if needed)
    flip: bool = False  # random horizontal flip (training only)
    normalize: Literal["none", "imagenet"] = "none"
    eval_on: Literal["full", "crop"] = "full"  # evaluate on full images or on centre crops
    num_workers: StrictInt | None = Field(default=None, ge=0)  # loader processes; null = from the CPU count
    carve: CarveCfg | None = None  # train without a carved tuning split (set by tuning, see study.tuning)

    @field_validator("resize", "crop", mode="before")
    @classmethod
    def _positive_size(cls, value: Any, info: ValidationInfo) -> Any:
        """Checked here, not when the first run builds its transforms: ``true``, ``0`` and ``31.5`` are no sizes."""
        if value is None:
            return None
        pair = isinstance(value, (list, tuple))
        sides = list(value) if pair else [value]
        if (pair and len(sides) != 2) or not all(_is_int(v) and v >= 1 for v in sides):
            raise ValueError(f"data.{info.field_name} must be a positive int or [height, width], got {value!r}")
        return sides if pair else value

    @field_validator("scale", mode="before")
    @classmethod
    def _scale_range(cls, value: Any) -> Any:
        """A finite, ordered, positive range: ``[2.0, 0.5]`` or ``[0.5, .inf]`` would fail (or hang) in training."""
        if value is None:
            return None
        pair = list(value) if isinstance(value, (list, tuple)) else []
        numbers = [v for v in pair if (_is_int(v) or isinstance(v, float)) and math.isfinite(v)]
        if len(numbers) != 2 or len(pair) != 2 or not 0 < numbers[0] <= numbers[1]:
            raise ValueError(f"data.scale must be [lo, hi] with 0 < lo <= hi, got {value!r}")
        return pair

    @model_validator(mode="after")
    def _crop_to_evaluate_on(self) -> DataCfg:
        if self.eval_on == "crop" and self.crop is None:
            raise ValueError("data.eval_on: 'crop' evaluates on centre crops of data.crop, but data.crop is not set")
        return self


def _is_int(value: Any) -> bool:
    """An integer that is not a boolean (YAML's ``true`` is a bool, and bool is an int in Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


class ModelCfg(Section):
    """Any segmentation-models-pytorch architecture by name."""

    arch: str = "unet"
    encoder: str = "resnet18"
    weights: str | None = None  # e.g. "imagenet"; null works offline
    options: dict[str, Any] = Field(default_factory=dict)  # extra smp.create_model kwargs


class _Named(BaseModel):
    """A registry name plus that component's parameters as extra keys."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LossCfg(_Named):
    name: str = "ce"


class SchemeCfg(_Named):
    name: str = "supervised"


class TrainCfg(Section):
    epochs: StrictInt = Field(default=10, ge=1)
    iterations: StrictInt | None = Field(default=None, ge=1)  # if set: stop after this many steps
    batch_size: StrictInt = Field(default=8, ge=1)
    val_batch_size: StrictInt | None = Field(default=None, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(default=1e-3, gt=0, allow_inf_nan=False)
    momentum: float = Field(default=0.9, ge=0, allow_inf_nan=False)
    weight_decay: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    schedule: Literal["constant", "poly"] = "constant"
    poly_power: float = Field(default=0.9, gt=0, allow_inf_nan=False)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: StrictInt | None = Field(default=None, ge=1)  # torch intra-op threads; null = torch default
    amp: bool = False  # CUDA autocast (ignored on CPU); losses are computed in float32 either way
    deterministic: bool = False  # every PyTorch reproducibility switch (see rng.deterministic_mode)
    checkpoint: bool = True  # save a checkpoint at the end of every epoch (resume after a crash)
    log_every: StrictInt = Field(default=50, ge=1)  # steps between reads of the running loss (host syncs)
    eval_every: StrictInt = Field(default=1, ge=1)  # epochs between evaluations (the last epoch always)
    channels_last: bool = False  # NHWC images and weights (faster convolutions on tensor cores)
    compile: bool = False  # torch.compile the networks' training forward
    tf32: Literal["none", "conv", "all"] = "conv"  # TF32 on CUDA for convolutions (PyTorch's default), all, none


class RunConfig(Section):
    """Everything that determines what a run computes."""

    data: DataCfg = Field(default_factory=DataCfg)
    model: ModelCfg = Field(default_factory=ModelCfg)
    loss: LossCfg = Field(default_factory=LossCfg)
    scheme: SchemeCfg = Field(default_factory=SchemeCfg)
    train: TrainCfg = Field(default_factory=TrainCfg)


#: The random streams a seed drives, by source (``engine.rng``): initial weights (``init/<role>``), the
#: training order (``order``; also the loader workers' seeds), each sample's augmentation (``augment``)
#: and the method's own draws on the global generators (``method``: dropout, center loss's subset).
#: A study may give each its own seeds (``seeds: {init: [...], data: [...]}``, Bouthillier et al. 2021).
SOURCES = ("init", "data", "aug", "method")
#: Letters of the sources in a run name (``i1.d0.a0.m0``).
SOURCE_LETTERS = {"init": "i", "data": "d", "aug": "a", "method": "m"}
#: Per-source seed ids live above every plain seed (a ``Seed`` is at most 2**32 - 1), so they never meet one.
_SOURCE_ID_FLOOR = 2**32


def seed_id(sources: dict[str, int]) -> int:
    """The seed a run of per-source ``sources`` is paired and tagged by: one id per seed tuple.

    Every source on one seed ``s`` is the run of plain seed ``s`` (the same streams, the same
    computation), so its id is ``s``; any other tuple gets a stable 63-bit hash at or above
    ``2**32``, which no plain seed reaches. Methods are paired by this id, i.e. by the full tuple.
    """
    values = {sources[name] for name in SOURCES}
    if len(values) == 1:
        return int(values.pop())
    text = json.dumps([int(sources[name]) for name in SOURCES])
    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1
    return _SOURCE_ID_FLOOR + digest % (2**63 - _SOURCE_ID_FLOOR)


def source_label(sources: dict[str, int]) -> str:
    """``i1.d0.a0.m0``: a run's seeds by source, as its name shows them."""
    return ".".join(f"{SOURCE_LETTERS[name]}{sources[name]}" for name in SOURCES)


#: Between the parts of a run name (``ce · unet · s0``).
NAME_SEPARATOR = " · "
#: Axis values every run name shows anyway (method and arch lead it), never repeated as ``key=value``.
NAMED_ALWAYS = (("method",), ("model.arch",), ("model", "arch"))

#: Dotted keys that change how a run executes but not what it computes; left out of the run key.
RUNTIME_KEYS = (
    "data.root",
    "data.num_workers",
    "train.device",
    "train.threads",
    "train.checkpoint",
    "train.log_every",
)


class RunSpec(Section):
    """One fully resolved run of a study: what to compute, its seed and its place in the grid."""

    study: str
    method: str
    seed: int
    config: RunConfig
    #: The seed of each source (``SOURCES``) when the study gives seeds by source; ``None``: every
    #: stream from ``seed``. With sources, ``seed`` is ``seed_id(sources)``: an identity, never a stream key.
    sources: dict[str, int] | None = None
    #: Stable run key, the hash of the canonical computation (``keys.run_key``): computed once, by
    #: ``keys.keyed_spec`` (which ``grid.expand`` uses), never re-derived from the registries per access.
    key: str
    axes: dict[str, Any] = Field(default_factory=dict)  # grid/ablation values that name this run
    groups: tuple[str, ...] = ("main",)  # "main" (the grid) and/or the names of its ablations
    #: The axis values that tell this study's runs apart (set by ``grid.expand``), as paths into
    #: ``axes``: only these are worth a place in the run name, which MLflow's runs table cuts.
    named_by: tuple[tuple[str, ...], ...] = ()
    #: A tuned study's phase: ``tune`` (trial ``trial`` of its fold, scored on the carved split) or
    #: ``final`` (a seed of the chosen setting); ``None`` for a study without ``tune:``.
    phase: Literal["tune", "final"] | None = None
    trial: int | None = None

    @field_validator("axes")
    @classmethod
    def _plain(cls, value: dict[str, Any]) -> dict[str, Any]:
        json.dumps(value)  # axes become params and tags: they must be plain data
        return value

    @field_validator("sources")
    @classmethod
    def _every_source(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is not None and set(value) != set(SOURCES):
            raise ValueError(f"sources must give a seed for each of {SOURCES}, got {sorted(value)}")
        return value

    @property
    def stream_seeds(self) -> dict[str, int]:
        """The seed each source's streams derive from (``SOURCES``): what the trainer reads, never ``seed``."""
        return dict(self.sources) if self.sources is not None else dict.fromkeys(SOURCES, self.seed)

    @property
    def dataset(self) -> str:
        return self.config.data.dataset

    @property
    def arch(self) -> str:
        return self.config.model.arch

    @property
    def fold(self) -> str:
        """The (method, cell) this run belongs to, as 16 hex digits: its axes without the seed, hashed.

        A tuned study's trials of one fold are compared with each other and fold under one parent run.
        """
        text = json.dumps(self.axes, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        """Short readable run name, e.g. ``ce+dice · unet · s0`` or ``rmi · deeplabv3 · radius=3 · s1``."""
        name = run_name(self.method, self.arch, self.seed, self.axes, self.named_by)
        if self.sources is not None:  # the tuple reads better than its id
            name = name.rpartition(NAME_SEPARATOR)[0] + NAME_SEPARATOR + source_label(self.sources)
        if self.trial is None:
            return name
        head, _, seed = name.rpartition(NAME_SEPARATOR)
        return NAME_SEPARATOR.join([head, f"t{self.trial}", seed])

    def with_threads(self, threads: int) -> RunSpec:
        """This run with at most ``threads`` torch threads (a runtime flag: the key is unchanged)."""
        current = self.config.train.threads
        train = self.config.train.model_copy(update={"threads": min(current or threads, threads)})
        return self.model_copy(update={"config": self.config.model_copy(update={"train": train})})

    def params(self) -> dict[str, Any]:
        """Flat params for tracking: the resolved config plus the run's identity."""
        flat = flatten(self.config.model_dump(mode="json"))
        flat.update({"study": self.study, "method": self.method, "seed": self.seed})
        if self.sources is not None:
            from studybench.store.layout import PARAM_SEED_PREFIX  # here: store imports this module

            flat.update({f"{PARAM_SEED_PREFIX}{name}": self.sources[name] for name in SOURCES})
        return flat


def run_name(method: str, arch: str, seed: int, axes: dict[str, Any], named_by: tuple[tuple[str, ...], ...]) -> str:
    """Method, arch, the ``named_by`` values of ``axes``, seed, joined by ``NAME_SEPARATOR``.

    What tells runs apart comes first, so that a name cut by MLflow's runs table still shows
    it. Names are for people only: the key identifies a run, and no file is named after one.
    """
    leaves = axis_leaves(axes)
    labels = [_label(path) for path in named_by]
    parts = [method, arch]
    for path, label in zip(named_by, labels):
        if path in leaves and path not in NAMED_ALWAYS:
            shown = ".".join(path) if labels.count(label) > 1 else label  # two "radius": say whose
            parts.append(_short(leaves[path]) if path == ("dataset",) else f"{shown}={_short(leaves[path])}")
    return NAME_SEPARATOR.join([*parts, f"s{seed}"])


def axis_leaves(axes: dict[str, Any]) -> dict[tuple[str, ...], Any]:
    """Every value of a run's axes by its path; a mapping value (``model: {arch: fpn, ...}``) by its leaves."""
    out: dict[tuple[str, ...], Any] = {}

    def walk(path: tuple[str, ...], value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk((*path, str(key)), inner)
        else:
            out[path] = value

    for key, value in axes.items():
        walk((key,), value)
    return out


def _label(path: tuple[str, ...]) -> str:
    """What a value is called in a run name: ``loss.radius`` -> ``radius``, ``(loss, name)`` -> ``loss``."""
    if len(path) > 1 and path[-1] == "name":
        return path[-2].rsplit(".", 1)[-1]
    return path[-1].rsplit(".", 1)[-1]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``; lists and empty dicts stay leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _short(value: Any) -> str:
    """A value as it appears in a run name: lists without spaces (``[234,234]``)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_short(v) for v in value) + "]"
    return str(value)
