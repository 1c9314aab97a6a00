"""The tuning split: images carved out of the training data, never from the reported split.

Why by hash: which image lands in the tuning split must not depend on the order files are
listed in, on the machine, or on the other images present; a salted SHA-256 of each id does
that, so two launches (or a dataset with one extra image) carve the same tuning images.
Why by group: frames of one Cityscapes city (or one CamVid sequence) are correlated; tuning
on some frames of a city and training on its neighbours leaks, so a grouped dataset is
carved by whole groups.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from studybench.data.base import SampleKey, SegDataset
from studybench.data.files import overlap_error
from studybench.study.spec import CarveCfg


class Carve(NamedTuple):
    """The two parts of a training split: ``fit`` (trained on while tuning) and ``tune`` (scored on)."""

    fit: list[str]
    tune: list[str]

    @property
    def digest(self) -> str:
        """SHA-256 (16 hex digits) of the sorted tuning ids: recorded so a report can say which split was used."""
        return ids_digest(self.tune)


def ids_digest(ids: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def _rank(salt: int, name: str) -> str:
    return hashlib.sha256(f"{salt}:{name}".encode()).hexdigest()


def carve_fraction(ids: Sequence[str], fraction: float, salt: int = 0) -> Carve:
    """``fraction`` of the ids (rounded half up; at least 1, at most n - 1) by salted hash order into ``tune``."""
    if not 0 < fraction < 1:
        raise ValueError(f"the tuning fraction must lie strictly between 0 and 1, got {fraction}")
    unique = sorted(set(ids))
    if len(unique) < 2:
        raise ValueError(f"cannot carve a tuning split from {len(unique)} training image(s): need 2 or more")
    count = fraction_size(len(unique), fraction)
    chosen = set(sorted(unique, key=lambda i: _rank(salt, i))[:count])
    return Carve(fit=[i for i in unique if i not in chosen], tune=[i for i in unique if i in chosen])


def carve_groups(ids: Sequence[str], group_of: Callable[[str], str], count: int, salt: int = 0) -> Carve:
    """``count`` whole groups (by salted hash order of the group names) into ``tune``."""
    groups = sorted({group_of(i) for i in ids})
    if not 1 <= count < len(groups):
        raise ValueError(
            f"cannot carve {count} group(s) for tuning out of {len(groups)} ({', '.join(groups[:8])}"
            f"{', ...' if len(groups) > 8 else ''}): leave at least one for training"
        )
    chosen = set(sorted(groups, key=lambda g: _rank(salt, g))[:count])
    unique = sorted(set(ids))
    return Carve(
        fit=[i for i in unique if group_of(i) not in chosen], tune=[i for i in unique if group_of(i) in chosen]
    )


def check_disjoint(tuning_or_training: Iterable[str], reported: Iterable[str], what: str) -> None:
    """``SplitOverlapError`` if an id that tuning or training reads is also in the reported split."""
    leaked = sorted(set(tuning_or_training) & set(reported))
    if leaked:
        raise overlap_error(what, leaked)


def fraction_size(n: int, fraction: float) -> int:
    """How many of ``n`` images ``carve_fraction`` puts in the tuning split."""
    return min(max(1, math.floor(fraction * n + 0.5)), n - 1)


class CarvedDataset(SegDataset):
    """The images ``indices`` of ``base`` (a built split), with ``base``'s classes and transforms."""

    def __init__(self, base: SegDataset, indices: Sequence[int]) -> None:
        self.base, self.indices = base, list(indices)
        self.class_names, self.palette = base.class_names, base.palette
        self.root, self.split, self.transform = base.root, f"{base.split} (carved)", base.transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | SampleKey) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(key, SampleKey):
            return self.base[SampleKey(self.indices[key.index], key.seed)]
        return self.base[self.indices[key]]


def sample_ids(dataset: SegDataset) -> list[str]:
    """A stable id per image of ``dataset``: the image file's stem, else the index (generated data)."""
    samples = getattr(dataset, "samples", None)
    if samples is not None:
        return [Path(image).stem for image, _ in samples]
    return [str(i) for i in range(len(dataset))]


def carve_of(dataset: SegDataset, cfg: CarveCfg) -> Carve:
    """The carve ``cfg`` asks of ``dataset`` (its training split)."""
    ids = sample_ids(dataset)
    if cfg.fraction is not None:
        return carve_fraction(ids, cfg.fraction, cfg.salt)
    group_of = getattr(type(dataset), "group_of", None)
    if cfg.by != getattr(type(dataset), "group_name", None) or group_of is None:
        known = getattr(type(dataset), "group_name", None)
        raise ValueError(
            f"tune.split: by: {cfg.by!r}: this dataset groups its images by {known!r}"
            if known
            else f"tune.split: by: {cfg.by!r}: this dataset has no groups; carve by fraction: F instead"
        )
    return carve_groups(ids, group_of, cfg.count, cfg.salt)


def carved_part(dataset: SegDataset, cfg: CarveCfg, part: str) -> CarvedDataset:
    """``part`` (``fit`` or ``tune``) of ``dataset``'s carve, by position (ids may repeat across folders)."""
    chosen = set(getattr(carve_of(dataset, cfg), part))
    return CarvedDataset(dataset, [i for i, name in enumerate(sample_ids(dataset)) if name in chosen])


def tuning_split_digest(data: Any) -> str:
    """The digest of the images a trial of ``data`` (a ``DataCfg`` with ``carve``) scores on (file listing only)."""
    from studybench.data import DATASETS, resolve_root

    cls = DATASETS.get(data.dataset)
    base = cls(root=resolve_root(data), split=data.train_split, **DATASETS.typed(data.dataset, data.options))
    return carve_of(base, data.carve).digest
