"""Joint image/mask transforms configured by ``DataCfg``.

Each step is a small callable on tensors, ``(image [3,H,W] float, mask [H,W] int64,
generator) -> (image, mask)``, so the geometry of image and mask can never drift apart. Masks
are always resized with nearest neighbour (``nearest-exact``, pixel centres aligned like PIL),
so no label value is ever interpolated; images use antialiased bilinear. Random steps draw
only from the generator they are given: the trainer passes one per sample and epoch
(``rng``'s ``augment`` stream), so a sample's augmentation is the same for every method and
any number of loader workers. Without one (``None``) they fall back to torch's global RNG.

Training order: resize -> random scale -> pad + random crop -> flip -> normalise. Padded
mask pixels are 255; padded image pixels are 0 *in the network's input space*: with
``normalize: imagenet`` they are the mean colour (as in DeepLab, which pads with the mean),
without it black. Normalising last touches only the cropped pixels.

Evaluation: resize, normalise, applied to the image only: the mask keeps its native
resolution, and the trainer upsamples the logits to it before the argmax (as the official
Cityscapes/VOC evaluators and mmsegmentation score). ``eval_on: crop`` is a documented
deviation: the mask is resized and centre-cropped with the image and scored at that reduced
resolution (the run is tagged so the report can say so).

Expressible pipelines, e.g.
  Gonçalves et al.: ``{resize: 234, crop: 224}`` (no normalisation, eval on full or centre crops);
  DeepLab: ``{scale: [0.5, 1.5], flip: true, crop: 321, normalize: imagenet}`` (or crop 513).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from studybench import IGNORE_INDEX
from studybench.data.base import JointTransform
from studybench.study.spec import DataCfg

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Pair = tuple[torch.Tensor, torch.Tensor]
Colour = tuple[float, float, float]
BLACK: Colour = (0.0, 0.0, 0.0)


class Step(Protocol):
    """One step of a pipeline; random steps draw from ``generator`` (``None``: torch's global RNG)."""

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None) -> Pair: ...


def _uniform(generator: torch.Generator | None) -> float:
    """One draw from U[0, 1)."""
    return float(torch.rand((), generator=generator))


def _randint(high: int, generator: torch.Generator | None) -> int:
    """One draw from {0, ..., high - 1}."""
    return int(torch.randint(0, high, (), generator=generator))


def resize_pair(image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]) -> Pair:
    """Resize to ``size`` (h, w): image antialiased bilinear, mask nearest (labels are never blended)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image, mask
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    small = mask.to(torch.uint8)  # class ids and 255 fit; interpolate has no int64 kernel
    mask = F.interpolate(small[None, None], size=size, mode="nearest-exact")[0, 0].to(torch.int64)
    return image, mask


def pad_pair(image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int], centre: bool, fill: Colour) -> Pair:
    """Pad to at least ``size``: image with the colour ``fill``, mask with 255; at the bottom/right,
    or evenly if ``centre``."""
    (h, w), ph, pw = image.shape[-2:], max(size[0] - image.shape[-2], 0), max(size[1] - image.shape[-1], 0)
    if ph == 0 and pw == 0:
        return image, mask
    top, left = (ph // 2, pw // 2) if centre else (0, 0)
    padded = torch.tensor(fill, dtype=image.dtype).view(3, 1, 1).repeat(1, h + ph, w + pw)
    padded[:, top : top + h, left : left + w] = image
    return padded, F.pad(mask, (left, pw - left, top, ph - top), value=IGNORE_INDEX)


@dataclass(frozen=True)
class Resize:
    """``size`` int: shorter side to ``size`` keeping the aspect ratio; (h, w): exactly that size."""

    size: int | tuple[int, int]

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None) -> Pair:
        h, w = image.shape[-2:]
        if isinstance(self.size, int):
            s = self.size / min(h, w)
            target = (self.size, max(1, round(w * s))) if h <= w else (max(1, round(h * s)), self.size)
        else:
            target = self.size
        return resize_pair(image, mask, target)


@dataclass(frozen=True)
class RandomScale:
    """Scale both sides by one factor drawn uniformly from [lo, hi]."""

    lo: float
    hi: float

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None) -> Pair:
        s = self.lo + (self.hi - self.lo) * _uniform(generator)
        h, w = image.shape[-2:]
        return resize_pair(image, mask, (max(1, round(h * s)), max(1, round(w * s))))


@dataclass(frozen=True)
class RandomCrop:
    """A random (h, w) window; smaller images are first padded at the bottom/right with ``fill``."""

    size: tuple[int, int]
    fill: Colour = BLACK

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None) -> Pair:
        image, mask = pad_pair(image, mask, self.size, centre=False, fill=self.fill)
        (h, w), (ch, cw) = image.shape[-2:], self.size
        top = _randint(h - ch + 1, generator)
        left = _randint(w - cw + 1, generator)
        return image[:, top : top + ch, left : left + cw], mask[top : top + ch, left : left + cw]


@dataclass(frozen=True)
class CenterCrop:
    """The central (h, w) window; smaller images are padded evenly with ``fill`` first."""

    size: tuple[int, int]
    fill: Colour = BLACK

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None) -> Pair:
        image, mask = pad_pair(image, mask, self.size, centre=True, fill=self.fill)
        (h, w), (ch, cw) = image.shape[-2:], self.size
        top, left = (h - ch) // 2, (w - cw) // 2
        return image[:, top : top + ch, left : left + cw], mask[top : top + ch, left : left + cw]


@dataclass(frozen=True)
class RandomHorizontalFlip:
    p: float = 0.5

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None) -> Pair:
        if _uniform(generator) < self.p:
            return image.flip(-1), mask.flip(-1)
        return image, mask


@dataclass(frozen=True)
class Normalize:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None) -> Pair:
        mean = torch.tensor(self.mean, dtype=image.dtype).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=image.dtype).view(3, 1, 1)
        return (image - mean) / std, mask


@dataclass(frozen=True)
class JointCompose:
    """The steps in order, all drawing from the one generator of the sample."""

    steps: tuple[Step, ...]

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None) -> Pair:
        for step in self.steps:
            image, mask = step(image, mask, generator)
        return image, mask


@dataclass(frozen=True)
class InputOnly:
    """Apply ``pipeline`` to the network input and keep the mask as loaded (native resolution).

    Why: evaluation scores predictions against the native label maps; the trainer upsamples
    the logits to the mask's size, so the mask must not be resized or cropped here.
    """

    pipeline: Step

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None) -> Pair:
        return self.pipeline(image, mask, generator)[0], mask


def build_transform(cfg: DataCfg, train: bool) -> JointTransform | None:
    """The training (random) or evaluation (deterministic) pipeline of ``cfg``; None if it does nothing.

    The evaluation pipeline leaves the mask at its native size unless ``eval_on: crop``.
    """
    resize = _size("data.resize", cfg.resize, allow_int=True)
    crop = _size("data.crop", cfg.crop, allow_int=False)
    scale = _scale(cfg.scale)
    if cfg.eval_on == "crop" and crop is None:
        raise ValueError(
            "data.eval_on: 'crop' evaluates on centre crops of data.crop, but data.crop is not set (got None)"
        )
    steps: list[JointTransform] = []
    if resize is not None:
        steps.append(Resize(resize))
    if train and scale is not None:
        steps.append(RandomScale(*scale))
    fill = IMAGENET_MEAN if cfg.normalize == "imagenet" else BLACK  # 0 after normalisation
    if crop is not None and (train or cfg.eval_on == "crop"):
        steps.append(RandomCrop(crop, fill) if train else CenterCrop(crop, fill))
    if train and cfg.flip:
        steps.append(RandomHorizontalFlip())
    if cfg.normalize == "imagenet":
        steps.append(Normalize(IMAGENET_MEAN, IMAGENET_STD))
    if not steps:
        return None
    pipeline = JointCompose(tuple(steps))
    return pipeline if train or cfg.eval_on == "crop" else InputOnly(pipeline)


def _size(name: str, value: int | Sequence[int] | None, allow_int: bool) -> int | tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"{name} must be a positive size, got {value!r}")
        return value if allow_int else (value, value)
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) and v >= 1 for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{name} must be a positive int or [height, width], got {value!r}")


def _scale(value: Sequence[float] | None) -> tuple[float, float] | None:
    if value is None:
        return None
    if len(value) != 2 or not 0 < value[0] <= value[1]:
        raise ValueError(f"data.scale must be [lo, hi] with 0 < lo <= hi, got {value!r}")
    return float(value[0]), float(value[1])
