"""The contract every dataset follows.

A dataset is a ``torch.utils.data.Dataset`` of ``(image, mask)`` pairs: ``image`` float32
``[3, H, W]`` (in [0, 1] before normalisation), ``mask`` int64 ``[H, W]`` with class ids in
``[0, num_classes)`` and 255 for "ignore". It is constructed as
``Cls(root=..., split=..., transform=..., **options)`` where ``options`` are the dataset's
own keyword parameters from the study (``data.options``), checked against the signature.
``verify`` runs before any training so that missing data is reported up front.

An item is fetched by a plain index, or by a ``SampleKey`` (index plus the seed of that
sample's augmentation in this epoch, as the trainer's sampler yields them): the random
transforms then draw from a generator of that seed only, so what a sample looks like
depends on (run seed, epoch, index) and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch.utils.data import Dataset

#: A joint transform: (image [3,H,W] float, mask [H,W] int64, generator or None) -> (image, mask).
JointTransform = Callable[[torch.Tensor, torch.Tensor, torch.Generator | None], tuple[torch.Tensor, torch.Tensor]]


class SampleKey(NamedTuple):
    """Which sample to load and the seed its random transforms draw from."""

    index: int
    seed: int


class DataUnavailableError(FileNotFoundError):
    """The dataset's files are missing or incomplete; the message says what and where to get them."""


class SegDataset(Dataset):
    """Base class: subclasses set ``class_names`` (and ``palette``) and implement ``__len__``
    and ``load(i) -> (image, mask)``; ``__getitem__`` applies the joint transform."""

    class_names: ClassVar[tuple[str, ...]] = ()
    palette: ClassVar[tuple[tuple[int, int, int], ...] | None] = None
    splits: ClassVar[tuple[str, ...]] = ("train", "val")

    def __init__(self, root: Path | None, split: str, transform: JointTransform | None = None) -> None:
        if split not in self.splits:
            raise ValueError(f"{type(self).__name__}: unknown split {split!r}; available: {', '.join(self.splits)}")
        self.root = root
        self.split = split
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def verify(cls, root: Path | None, split: str, **options: Any) -> None:
        """Raise ``DataUnavailableError`` if ``split`` cannot be loaded from ``root``."""

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __getitem__(self, key: int | SampleKey) -> tuple[torch.Tensor, torch.Tensor]:
        index, generator = key, None
        if isinstance(key, SampleKey):
            index, generator = key.index, torch.Generator().manual_seed(key.seed)
        image, mask = self.load(index)
        if self.transform is not None:
            image, mask = self.transform(image, mask, generator)
        return image, mask
