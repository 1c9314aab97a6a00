"""Reading real datasets from disk: the shared base class and the file-level checks.

Why one place: every on-disk format needs the same promises, and they are easy to get
subtly wrong one loader at a time. A missing or partial download is reported by
``verify`` before training as a ``DataUnavailableError`` that says what layout was
expected, what was found and where to get the data; a corrupt file or an unknown label
value raises ``DataFileError`` naming the file (and the value), never a bare PIL or index
error from inside a DataLoader worker; a split whose size differs from the official one
is warned about and recorded in ``dataset.notes``. Datasets that set ``short_split_is_error``
(VOC) refuse a standard split with *fewer* images than the official one (``DatasetSizeError``,
naming the expected count) unless ``allow_subset`` is set: a silently smaller training set
(a wrong list, a partial download) changes what a study measures. ``overlap_error`` words the
refusal of a training list that holds evaluation images.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from studybench import IGNORE_INDEX
from studybench.data.base import DataUnavailableError, JointTransform, SegDataset

#: A sample on disk: (image file, mask file).
Sample = tuple[Path, Path]


class DataFileError(ValueError):
    """A dataset file is unreadable or holds values outside the dataset's label set."""


class DatasetSizeWarning(UserWarning):
    """A split has a different number of images than the official release (partial download?)."""


class DatasetSizeError(DataUnavailableError):
    """A standard split has fewer images than the official release, and no subset was asked for."""


class SplitOverlapError(ValueError):
    """A training list names images of the evaluation split (test-set leakage)."""


def overlap_error(what: str, leaked: Iterable[str], shown: int = 10) -> SplitOverlapError:
    """The refusal of a training list that holds evaluation images: the first ``shown`` ids and the count.

    Why a hard error: an evaluation image trained on inflates every score of the study, and
    nothing downstream can detect it.
    """
    ids = sorted(set(leaked))
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return SplitOverlapError(
        f"{what}: {len(ids)} image(s) of the evaluation split are in the training list "
        f"({', '.join(ids[:shown])}{more}); remove them from the list"
    )


class FileSegDataset(SegDataset):
    """A dataset of image/mask files; subclasses implement ``find_samples``.

    Class variables a subclass sets: ``name`` (the YAML name), ``layout`` (the expected
    tree, shown when data is missing), ``source`` (where to download it), ``official_sizes``
    (split -> image count in the official release) and ``label_map`` (raw mask value ->
    class id, see ``label_lut``).
    """

    name: ClassVar[str] = ""
    layout: ClassVar[str] = ""
    source: ClassVar[str] = ""
    official_sizes: ClassVar[dict[str, int]] = {}
    label_map: ClassVar[np.ndarray | None] = None
    #: a standard split with fewer images than ``official_sizes`` is an error (not a warning)
    short_split_is_error: ClassVar[bool] = False
    #: set (from a dataset option) when a subset is intended: tiny test trees, a custom list
    allow_subset: bool = False

    def __init__(self, root: Path | str | None, split: str, transform: JointTransform | None = None) -> None:
        super().__init__(None if root is None else Path(root).expanduser(), split, transform)
        if self.root is None:
            raise self.unavailable("no data root was given")
        self.samples: list[Sample] = self.find_samples()
        if not self.samples:
            raise self.unavailable(f"found 0 images for split {split!r}")
        self.notes: list[str] = []
        self.check_size()

    def check_size(self) -> None:
        """Compare the split's size with the official one: refuse a shortfall (if strict), else warn and note."""
        expected, found = self.official_sizes.get(self.split), len(self.samples)
        if expected is None or expected == found:
            return
        if found < expected and self.short_split_is_error and not self.allow_subset:
            raise DatasetSizeError(
                f"{self.name} split {self.split!r} under {self.root}: found {found} images, the official release "
                f"has {expected} ({expected - found} missing: a partial download or a wrong list?). "
                "To use a subset on purpose, set data.options.allow_subset: true"
            )
        note = (
            f"{self.name} split {self.split!r}: found {found} images, the official release has "
            f"{expected} (partial download or a custom list?)"
        )
        warnings.warn(note, DatasetSizeWarning, stacklevel=3)
        self.notes.append(note)

    # -- what a subclass provides -------------------------------------------------------
    def find_samples(self) -> list[Sample]:
        """The split's (image, mask) files in a stable order; raise ``self.unavailable`` if missing."""
        raise NotImplementedError

    def read_label(self, path: Path) -> np.ndarray:
        """Class ids ``[H, W]`` (int64, 255 = ignore) of one mask file."""
        assert self.label_map is not None, f"{type(self).__name__} sets no label_map"
        return apply_label_map(read_index_png(path), self.label_map, path)

    # -- the contract -------------------------------------------------------------------
    @classmethod
    def verify(cls, root: Path | None, split: str, **options: Any) -> None:
        """Index the split (every listed file must exist) and read its first sample."""
        dataset = cls(root=root, split=split, **options)
        dataset.load(0)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.samples[index]
        image = read_image(image_path)
        mask = self.read_label(mask_path)
        if tuple(image.shape[1:]) != mask.shape:
            raise DataFileError(
                f"{self.name}: image {image_path} is {tuple(image.shape[1:])} (H, W) but its mask "
                f"{mask_path} is {mask.shape}"
            )
        return image, torch.from_numpy(mask)

    def unavailable(self, found: str) -> DataUnavailableError:
        """The error for missing data: what was found, the expected layout, where to get it."""
        return DataUnavailableError(
            f"{self.name} ({self.split}) is not available under {self.root}: {found}.\n"
            f"Expected layout:\n{self.layout.rstrip()}\n"
            f"Get it: {self.source}\n"
            "Point data.root (or $STUDYBENCH_DATA/<dataset>) at it; see docs/datasets.md."
        )

    def require_files(self, samples: Sequence[Sample]) -> list[Sample]:
        """``samples`` unchanged if every file exists, else ``unavailable`` naming the missing ones."""
        missing = [p for pair in samples for p in pair if not p.is_file()]
        if missing:
            by_folder = Counter(p.parent for p in missing).most_common(3)
            where = "; ".join(f"{n} in {folder}" for folder, n in by_folder)
            raise self.unavailable(f"{len(missing)} listed file(s) are missing ({where}), e.g. {missing[0]}")
        return list(samples)


def read_image(path: Path) -> torch.Tensor:
    """RGB float32 ``[3, H, W]`` in [0, 1]; ``DataFileError`` naming the file if it cannot be decoded."""
    try:
        with Image.open(path) as img:
            rgb = np.array(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as err:  # PIL raises these for truncated/garbage files
        raise DataFileError(f"cannot read image {path}: {err}") from None
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)


def read_index_png(path: Path, hint: str = "") -> np.ndarray:
    """The raw indices of a single-channel mask (palette ``P`` or grayscale ``L``), uint8 ``[H, W]``.

    Palette PNGs are read as their indices (never converted to colour), which is how VOC and
    SegmentationClassAug store class ids.
    """
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise DataFileError(
                    f"mask {path} has image mode {img.mode}; expected a single-channel PNG of class ids "
                    f"(mode P or L){hint}"
                )
            return np.array(img, dtype=np.uint8)
    except DataFileError:
        raise
    except (OSError, ValueError, SyntaxError) as err:
        raise DataFileError(f"cannot read mask {path}: {err}") from None


def read_rgb_mask(path: Path) -> np.ndarray:
    """A colour mask as uint8 ``[H, W, 3]`` (palette PNGs are expanded to their colours)."""
    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as err:
        raise DataFileError(f"cannot read mask {path}: {err}") from None


def label_lut(mapping: dict[int, int], keep_ignore: bool = True) -> np.ndarray:
    """A 256-entry lookup table raw value -> class id; values not in ``mapping`` are invalid (-1).

    ``keep_ignore`` maps 255 to 255 (the ignore label) unless ``mapping`` says otherwise.
    """
    lut = np.full(256, -1, dtype=np.int64)
    if keep_ignore:
        lut[IGNORE_INDEX] = IGNORE_INDEX
    for raw, cls in mapping.items():
        lut[raw] = cls
    lut.setflags(write=False)
    return lut


def apply_label_map(raw: np.ndarray, lut: np.ndarray, path: Path) -> np.ndarray:
    """``lut[raw]`` as int64; ``DataFileError`` naming the file and the values the table does not know."""
    labels = lut[raw]
    bad = labels < 0
    if bad.any():
        values = np.unique(raw[bad])
        valid = _ranges(np.flatnonzero(lut >= 0))
        raise DataFileError(
            f"mask {path} contains label value(s) {_listing(values)} outside the dataset's label set "
            f"(valid raw values: {valid})"
        )
    return labels


def palette_to_ids(
    rgb: np.ndarray, palette: Sequence[Sequence[int]], path: Path, ignore: Sequence[int] | None
) -> np.ndarray:
    """Map an RGB mask ``[H, W, 3]`` to class ids through ``palette`` (class i = colour i).

    A pixel of colour ``ignore`` becomes 255; any other colour not in the palette raises
    ``DataFileError`` naming the file and the colour.
    """
    keys = _rgb_keys(rgb)
    colours = [*palette, *([ignore] if ignore is not None else [])]
    ids = [*range(len(palette)), *([IGNORE_INDEX] if ignore is not None else [])]
    table = _rgb_keys(np.asarray(colours, dtype=np.int64).reshape(-1, 1, 3)).ravel()
    order = np.argsort(table)
    sorted_keys, sorted_ids = table[order], np.asarray(ids, dtype=np.int64)[order]
    pos = np.clip(np.searchsorted(sorted_keys, keys), 0, len(sorted_keys) - 1)
    found = sorted_keys[pos] == keys
    if not found.all():
        unknown = np.unique(keys[~found])
        shown = ", ".join(str((int(k >> 16) & 255, int(k >> 8) & 255, int(k) & 255)) for k in unknown[:5])
        raise DataFileError(f"mask {path} contains colour(s) not in the palette: {shown}")
    return sorted_ids[pos]


def read_list(path: Path) -> list[str]:
    """Image ids of a split list: the file stem of each line's first token, blank lines skipped.

    Accepts plain ids (``2007_000032``) and DeepLab-style pairs
    (``/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png``).
    """
    ids = []
    for line in path.read_text().splitlines():
        token = line.split()[0] if line.strip() else ""
        if token:
            is_path = "/" in token or token.lower().endswith(_IMAGE_SUFFIXES)
            ids.append(Path(token).stem if is_path else token)
    return ids


_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".mat")


def count_files(folder: Path, pattern: str) -> int:
    return sum(1 for _ in folder.glob(pattern)) if folder.is_dir() else 0


def _rgb_keys(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _listing(values: Iterable[int], limit: int = 8) -> str:
    values = [int(v) for v in values]
    return ", ".join(map(str, values[:limit])) + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _ranges(values: np.ndarray) -> str:
    """``[0,1,2,3,255]`` -> ``0-3, 255``."""
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(f"{start}" if start == v else f"{start}-{v}")
            start = None
    return ", ".join(parts)
