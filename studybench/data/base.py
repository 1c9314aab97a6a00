"""The contract every dataset follows.

A dataset is a ``torch.utils.data.Dataset`` of ``(image, mask)`` pairs: ``image`` float32
``[3, H, W]`` (in [0, 1] before normalisation), ``mask`` int64 ``[H, W]`` with class ids in
``[0, num_classes)`` and 255 for "ignore". It is constructed as
``Cls(root=..., split=..., transform=..., **options)`` where ``options`` are the dataset's
own keyword parameters from the study (``data.options``), checked against the signature.
``verify`` runs before any training so that missing data is reported up front.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset

#: A joint transform: (image [3,H,W] float, mask [H,W] int64) -> (image, mask).
JointTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


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

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.load(index)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask
