"""The built-in synthetic dataset: deterministic, offline, and hard in the ways that matter.

Every image is generated from ``(data_seed, split, index)`` alone, so the data never
depends on the training seed and two machines produce identical pixels. Each image has a
textured background plus: large blobs, small objects, thin lines and rings (class 1..4,
cycled when more classes are asked for). Blobs and rings share a colour family, so telling
them apart needs shape (region-level) context; lines and small objects are rare, giving the
class imbalance that region- and boundary-aware losses are meant to help with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from studybench.data.base import JointTransform, SegDataset

_SHAPES = ("blob", "small", "line", "ring")
# mean colour per shape kind; blob and ring are deliberately close
_COLOURS = {
    "blob": (0.75, 0.35, 0.30),
    "small": (0.30, 0.70, 0.35),
    "line": (0.30, 0.40, 0.80),
    "ring": (0.70, 0.40, 0.35),
}
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
#: Display colour per class (figures only; the pixels above and the run key never use it). Blob and ring
#: pixels look alike on purpose, so their colours in figures must not: the Okabe-Ito colours (distinct
#: for colour-blind readers too), then four more; every pair is > 60 apart in RGB. Cycled beyond 12 classes.
_PALETTE = (
    (0, 0, 0),  # background
    (213, 94, 0),  # blob: vermillion
    (0, 158, 115),  # small: bluish green
    (0, 114, 178),  # line: blue
    (240, 228, 66),  # ring: yellow
    (230, 159, 0),
    (86, 180, 233),
    (204, 121, 167),
    (120, 120, 120),
    (110, 50, 150),
    (150, 220, 120),
    (130, 60, 40),
)


class SyntheticSegmentation(SegDataset):
    """Procedural scenes with ``num_classes`` classes (0 = background).

    Args:
        num_classes: 2 or more; classes beyond 5 reuse the shapes with shifted colours.
        image_size: side of the square images.
        train_images / val_images: split sizes.
        data_seed: seed of the pixels (kept fixed across a study's training seeds).
        noise: standard deviation of the per-pixel colour noise.
        detail: width of the lines and radius of the small discs, relative to the default (1.0); above 1
            the rare classes stay rare but become learnable in a short CPU run (the quick start uses 1.5).
    """

    splits = ("train", "val", "test")

    def __init__(
        self,
        root: Path | None = None,
        split: str = "train",
        transform: JointTransform | None = None,
        num_classes: int = 5,
        image_size: int = 64,
        train_images: int = 128,
        val_images: int = 32,
        data_seed: int = 0,
        noise: float = 0.12,
        detail: float = 1.0,
    ) -> None:
        super().__init__(root, split, transform)
        if num_classes < 2:
            raise ValueError(f"synthetic: num_classes must be >= 2, got {num_classes}")
        if image_size < 16:
            raise ValueError(f"synthetic: image_size must be >= 16, got {image_size}")
        self.class_names = ("background",) + tuple(
            f"{_SHAPES[(c - 1) % len(_SHAPES)]}{'' if c <= len(_SHAPES) else (c - 1) // len(_SHAPES)}"
            for c in range(1, num_classes)
        )
        self.palette = tuple(_palette_colour(c) for c in range(num_classes))
        self.image_size = image_size
        self.data_seed = data_seed
        self.noise = noise
        if not 0.25 <= detail <= 4.0:
            raise ValueError(f"synthetic: detail must be within [0.25, 4], got {detail}")
        self.detail = detail
        self.count = train_images if split == "train" else val_images

    def __len__(self) -> int:
        return self.count

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        rng = np.random.default_rng([self.data_seed, _SPLIT_IDS[self.split], index])
        image, mask = _render(rng, self.image_size, self.num_classes, self.noise, self.detail)
        return torch.from_numpy(image), torch.from_numpy(mask)


def _render(
    rng: np.random.Generator, size: int, num_classes: int, noise: float, detail: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # textured background: two random gratings plus a colour tint
    image = np.empty((3, size, size), dtype=np.float32)
    for ch in range(3):
        fx, fy = rng.uniform(0.05, 0.4, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        image[ch] = 0.45 + 0.12 * np.sin(fx * xx + fy * yy + phase) + rng.uniform(-0.08, 0.08)
    mask = np.zeros((size, size), dtype=np.int64)
    scale = size / 64.0
    for cls in range(1, num_classes):
        kind = _SHAPES[(cls - 1) % len(_SHAPES)]
        shift = 0.12 * ((cls - 1) // len(_SHAPES))
        colour = np.clip(np.array(_COLOURS[kind]) + shift, 0, 1)
        for _ in range(_count(kind, rng)):
            region = _shape(kind, rng, xx, yy, size, scale, detail)
            mask[region] = cls
            jitter = rng.uniform(-0.08, 0.08, size=3)
            for ch in range(3):
                image[ch][region] = colour[ch] + jitter[ch]
    image += rng.normal(0.0, noise, size=image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0), mask


def _count(kind: str, rng: np.random.Generator) -> int:
    return {
        "blob": rng.integers(1, 3),
        "small": rng.integers(2, 6),
        "line": rng.integers(1, 3),
        "ring": rng.integers(0, 2) + 1,
    }[kind]


def _shape(kind: str, rng: np.random.Generator, xx, yy, size: int, scale: float, detail: float = 1.0) -> np.ndarray:
    cx, cy = rng.uniform(0.1 * size, 0.9 * size, size=2)
    if kind == "blob":  # a large rotated ellipse
        a, b = rng.uniform(7, 16, size=2) * scale
        t = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if kind == "small":  # a small disc
        r = rng.uniform(1.5, 3.0) * scale * detail
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if kind == "line":  # a thin straight line across much of the image
        t = rng.uniform(0, np.pi)
        dist = np.abs((xx - cx) * np.sin(t) - (yy - cy) * np.cos(t))
        along = np.abs((xx - cx) * np.cos(t) + (yy - cy) * np.sin(t))
        return (dist <= 0.8 * scale * detail) & (along <= rng.uniform(0.25, 0.45) * size)
    # ring: an annulus of the same colour family as blobs
    r = rng.uniform(6, 12) * scale
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    return np.abs(d - r) <= 1.3 * scale


def _palette_colour(cls: int) -> tuple[int, int, int]:
    return _PALETTE[cls % len(_PALETTE)]
