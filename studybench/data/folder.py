"""A user's own dataset: ``images/`` and ``masks/`` with matching file stems.

Masks are either single-channel PNGs of class ids (grayscale, or palette PNGs read by
index as VOC does) or, when ``palette`` is given, colour PNGs mapped colour -> class id.
Splits come from ``splits/<split>.txt`` lists when that folder exists, else from a
deterministic ``val_fraction`` (a permutation of the sorted stems seeded by ``split_seed``,
so the split depends only on the file names, never on the training seed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from studybench import IGNORE_INDEX
from studybench.data.base import JointTransform
from studybench.data.files import (
    DataFileError,
    FileSegDataset,
    Sample,
    apply_label_map,
    label_lut,
    palette_to_ids,
    read_index_png,
    read_list,
    read_rgb_mask,
)
from studybench.data.voc import voc_colour
from studybench.names import check_class_names

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class FolderDataset(FileSegDataset):
    """Images and masks from a folder of your own.

    Args:
        classes: class names; class id i is ``classes[i]`` (at most 255 classes, 255 = ignore).
        palette: one [r, g, b] per class; if given, masks are colour images mapped through it
            (and figures use these colours; else the VOC colour map).
        ignore_color: with ``palette``, the [r, g, b] of unlabelled pixels (mapped to 255).
        val_fraction: share of images held out as ``val`` when there are no split lists.
        split_seed: seed of that deterministic hold-out.
    """

    name = "folder"
    splits = ("train", "val", "test")
    source = "your own data: put the images in <root>/images and the masks in <root>/masks"
    layout = """\
  <root>/images/<stem>.{jpg,jpeg,png,bmp,tif,tiff}
  <root>/masks/<stem>.png        class ids (grayscale or palette PNG; 255 = ignore) or, with options.palette,
                                 colour PNGs
  <root>/splits/{train,val,test}.txt   optional: one stem per line (else options.val_fraction holds out val)"""

    def __init__(
        self,
        root: Path | str | None = None,
        split: str = "train",
        transform: JointTransform | None = None,
        *,
        classes: list[str],
        palette: list[list[int]] | None = None,
        ignore_color: list[int] | None = None,
        val_fraction: float = 0.2,
        split_seed: int = 0,
    ) -> None:
        if not classes or len(classes) >= IGNORE_INDEX or len(set(classes)) != len(classes):
            raise ValueError(f"folder: classes must be 1 to 254 distinct names, got {classes!r}")
        check_class_names(classes, "folder: classes")
        if palette is not None:
            if len(palette) != len(classes) or not all(_is_colour(c) for c in palette):
                raise ValueError(
                    f"folder: palette must hold one [r, g, b] (0..255) per class ({len(classes)}), got {palette!r}"
                )
            if len({tuple(c) for c in palette}) != len(palette):
                raise ValueError(f"folder: palette colours must be distinct, got {palette!r}")
        if ignore_color is not None and (palette is None or not _is_colour(ignore_color) or ignore_color in palette):
            raise ValueError(
                f"folder: ignore_color must be an [r, g, b] not in the palette (and needs palette), got {ignore_color!r}"
            )
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"folder: val_fraction must be in [0, 1), got {val_fraction}")
        self.class_names = tuple(classes)
        self.colour_masks = palette is not None
        # without a palette, figures use the VOC colour map
        self.palette = (
            tuple(tuple(c) for c in palette) if palette else tuple(voc_colour(i) for i in range(len(classes)))
        )
        self.ignore_color = tuple(ignore_color) if ignore_color is not None else None
        self.label_map = label_lut({i: i for i in range(len(classes))})
        self.val_fraction, self.split_seed = val_fraction, split_seed
        super().__init__(root, split, transform)

    def find_samples(self) -> list[Sample]:
        images_dir, masks_dir = self.root / "images", self.root / "masks"
        images = (
            sorted(p for p in images_dir.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if images_dir.is_dir() else []
        )
        if not images:
            raise self.unavailable(f"found 0 images in {images_dir}")
        by_stem: dict[str, Path] = {}
        for path in images:
            if path.stem in by_stem:
                raise DataFileError(f"folder: two images share the stem {path.stem!r}: {by_stem[path.stem]} and {path}")
            by_stem[path.stem] = path
        stems = self._split_stems(sorted(by_stem))
        unknown = [s for s in stems if s not in by_stem]
        if unknown:
            raise self.unavailable(
                f"splits/{self.split}.txt names {len(unknown)} stem(s) with no image in {images_dir}, e.g. {unknown[0]!r}"
            )
        return self.require_files([(by_stem[s], masks_dir / f"{s}.png") for s in stems])

    def read_label(self, path: Path) -> np.ndarray:
        if not self.colour_masks:
            raw = read_index_png(path, hint="; for colour masks give options.palette")
            return apply_label_map(raw, self.label_map, path)
        return palette_to_ids(read_rgb_mask(path), self.palette, path, self.ignore_color)

    def _split_stems(self, stems: list[str]) -> list[str]:
        lists = self.root / "splits"
        if lists.is_dir():
            listing = lists / f"{self.split}.txt"
            if not listing.is_file():
                raise self.unavailable(f"{lists} exists but has no {self.split}.txt")
            return read_list(listing)
        if self.split == "test":
            raise self.unavailable("split 'test' needs a list splits/test.txt")
        order = np.random.default_rng(self.split_seed).permutation(len(stems))
        n_val = round(len(stems) * self.val_fraction)
        if self.val_fraction > 0 and len(stems) > 1:
            n_val = min(max(n_val, 1), len(stems) - 1)  # both splits non-empty
        held_out = {stems[i] for i in order[:n_val]}
        return [s for s in stems if (s in held_out) == (self.split == "val")]


def _is_colour(value: object) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(v, int) and 0 <= v <= 255 for v in value)
    )
