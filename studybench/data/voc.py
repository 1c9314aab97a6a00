"""PASCAL VOC 2012 segmentation, and its SBD-augmented training set ("train_aug", 10,582 images).

``voc2012`` reads the official devkit through torchvision's ``VOCSegmentation`` (split lists
and paths); masks are palette PNGs whose *indices* are the class ids, 255 marking the
object boundaries that VOC leaves unlabelled (ignored, never background).

``voc2012-aug`` is the training set of DeepLab, RMI and LAD: SBD train + SBD val + VOC train,
minus VOC val (10,582 images). It is read either from SBD's own ``.mat`` files
(``GTcls.Segmentation``) or from ``SegmentationClassAug`` PNGs: mmsegmentation's layout
(``trainaug.txt``, or ``aug.txt`` + VOC ``train.txt``) or DeepLab's (``train_aug.txt``); its
validation split is VOC 2012 val. Where an image has both a VOC and an SBD mask, the VOC one is
used (it is more precise and marks boundaries), as DeepLab's conversion and mmsegmentation's
config do. Why the checks: a training list that holds VOC val images inflates every score,
and one that silently misses images (mmsegmentation's ``aug.txt`` alone lacks all 1,464 VOC
train images) changes the task; both stop the study when the dataset is verified.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError
from torchvision.datasets import VOCSegmentation

from studybench.data.base import JointTransform
from studybench.data.files import (
    DataFileError,
    FileSegDataset,
    Sample,
    apply_label_map,
    count_files,
    label_lut,
    overlap_error,
    read_index_png,
    read_list,
)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def voc_colour(index: int) -> tuple[int, int, int]:
    """The devkit's colour of palette index ``index``: its bits spread over R, G, B, high bit first."""
    rgb = [0, 0, 0]
    for shift in range(7, -1, -1):
        for channel in range(3):
            rgb[channel] |= ((index >> channel) & 1) << shift
        index >>= 3
    return rgb[0], rgb[1], rgb[2]


VOC_PALETTE = tuple(voc_colour(i) for i in range(len(VOC_CLASSES)))
_VOC_LUT = label_lut({i: i for i in range(len(VOC_CLASSES))})

_VOC_SOURCE = (
    "PASCAL VOC 2012 trainval (VOCtrainval_11-May-2012.tar, 2 GB) from the host.robots.ox.ac.uk VOC page "
    "(http://host.robots.ox.ac.uk/pascal/VOC/voc2012/); extract it so that VOCdevkit/VOC2012 exists"
)
_VOC_LAYOUT = """\
  <root>/VOCdevkit/VOC2012/          (root may also be the VOCdevkit or the VOC2012 folder itself)
      JPEGImages/<id>.jpg
      SegmentationClass/<id>.png     palette PNGs; index = class id 0..20, 255 = boundary (ignored)
      ImageSets/Segmentation/{train,val,trainval}.txt"""


class VOC2012(FileSegDataset):
    """PASCAL VOC 2012 segmentation: 21 classes; train 1464, val 1449, trainval 2913 images.

    Args:
        allow_subset: accept a split with fewer images than the official release (tiny test
            trees, a deliberate subset); without it a shortfall is a ``DatasetSizeError``.
    """

    name = "voc2012"
    class_names = VOC_CLASSES
    palette = VOC_PALETTE
    splits = ("train", "val", "trainval")
    official_sizes: ClassVar[dict[str, int]] = {"train": 1464, "val": 1449, "trainval": 2913}
    short_split_is_error = True
    label_map = _VOC_LUT
    layout = _VOC_LAYOUT
    source = _VOC_SOURCE

    def __init__(
        self,
        root: Path | str | None = None,
        split: str = "train",
        transform: JointTransform | None = None,
        allow_subset: bool = False,
    ) -> None:
        self.allow_subset = allow_subset
        super().__init__(root, split, transform)

    def find_samples(self) -> list[Sample]:
        return self.voc_split(self.split)

    def voc_dir(self) -> Path:
        """The ``VOC2012`` folder, from ``root`` = its grandparent, parent (VOCdevkit) or itself."""
        for candidate in (self.root / "VOCdevkit" / "VOC2012", self.root / "VOC2012", self.root):
            if (candidate / "JPEGImages").is_dir() or (candidate / "ImageSets").is_dir():
                if candidate.parent.name != "VOCdevkit":
                    raise self.unavailable(
                        f"found VOC files in {candidate}, but not inside a folder named VOCdevkit as in the "
                        "official archive"
                    )
                return candidate
        raise self.unavailable(
            f"found no VOCdevkit/VOC2012 folder with JPEGImages/ (root exists: {self.root.is_dir()})"
        )

    def voc_split(self, split: str) -> list[Sample]:
        voc = self.voc_dir()
        listing = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file():
            raise self.unavailable(
                f"the split list {listing} is missing (found {count_files(voc / 'JPEGImages', '*.jpg')} images in "
                f"{voc / 'JPEGImages'}, {count_files(voc / 'SegmentationClass', '*.png')} masks in "
                f"{voc / 'SegmentationClass'})"
            )
        tv = VOCSegmentation(str(voc.parent.parent), year="2012", image_set=split, download=False)
        pairs = [(Path(i), Path(m)) for i, m in zip(tv.images, tv.masks)]
        return self.require_files([p for p in pairs if p[0].name != ".jpg"])  # blank list lines

    def voc_list(self, voc: Path, split: str, needed_for: str) -> list[str]:
        """The ids of VOC's own ``ImageSets/Segmentation/<split>.txt``; ``unavailable`` if it is missing."""
        path = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not path.is_file():
            raise self.unavailable(f"the VOC list {path} is missing (needed {needed_for})")
        return read_list(path)


class VOC2012Aug(VOC2012):
    """VOC 2012 with SBD's extra masks: train = train_aug (10,582 images), val = VOC 2012 val (1449).

    The training ids are VOC train ∪ SBD train ∪ SBD val − VOC val, however they are given: derived
    from SBD's and VOC's lists (``mat``), mmsegmentation's ``trainaug.txt`` or DeepLab's
    ``train_aug.txt`` (``png``), or mmsegmentation's ``aug.txt`` (which leaves VOC train out, as its
    config adds ``train.txt`` separately) joined with VOC train. They are sorted, so every layout
    gives the same samples in the same order. A list that names a VOC val image is refused
    (``SplitOverlapError``), and fewer than 10,582 images is a ``DatasetSizeError`` unless
    ``allow_subset`` or ``list_file`` says a subset is meant.

    Args:
        masks: ``"png"`` reads ``VOC2012/SegmentationClassAug`` with a train_aug list; ``"mat"``
            reads SBD's ``cls/*.mat`` (and VOC's own PNGs); ``"auto"`` takes ``png`` when the
            SegmentationClassAug folder exists, else ``mat``.
        sbd_root: SBD's ``dataset`` folder (holding ``cls/``, ``train.txt``, ``val.txt``), absolute
            or relative to ``root``; default: found under the folder that holds VOCdevkit.
        list_file: the training list (ids, or DeepLab-style ``/JPEGImages/x.jpg /SegmentationClassAug/x.png``
            lines), absolute or relative to ``root``; a subset is accepted, VOC val ids are not.
            Default: searched (png) or derived from the SBD and VOC lists (mat).
        prefer_voc: where an image has a VOC mask (``SegmentationClass``) and an SBD one
            (``.mat`` or ``SegmentationClassAug``), use VOC's (as DeepLab and mmsegmentation do).
        allow_subset: accept fewer images than the official split sizes (tiny trees, subsets).
    """

    name = "voc2012-aug"
    splits = ("train", "val")
    official_sizes: ClassVar[dict[str, int]] = {"train": 10582, "val": 1449}
    source = (
        _VOC_SOURCE + "; plus SBD (benchmark.tgz, 1.4 GB) from the Semantic Boundaries Dataset page "
        "(http://home.bharathh.info/pubs/codes/SBD/download.html), or the SegmentationClassAug PNGs made by "
        "mmsegmentation's tools/dataset_converters/voc_aug.py or distributed with DeepLab"
    )
    layout = (
        _VOC_LAYOUT
        + """
  and either (masks: png)
      VOCdevkit/VOC2012/SegmentationClassAug/<id>.png      class ids 0..20 (255 = ignore), grayscale or palette
      VOCdevkit/VOC2012/ImageSets/Segmentation/trainaug.txt   (mmsegmentation's voc_aug.py; or train_aug.txt,
                           ImageSets/SegmentationAug/train_aug.txt, <root>/train_aug.txt, or aug.txt + train.txt)
  or (masks: mat)
      <root>/benchmark_RELEASE/dataset/   (or <root>/VOCdevkit/VOCaug/dataset, or options.sbd_root)
          cls/<id>.mat                    struct GTcls with field Segmentation (class ids)
          train.txt, val.txt
  VOC's ImageSets/Segmentation/val.txt is always needed: no val image may be in the training list."""
    )

    def __init__(
        self,
        root: Path | str | None = None,
        split: str = "train",
        transform: JointTransform | None = None,
        masks: Literal["auto", "png", "mat"] = "auto",
        sbd_root: str | None = None,
        list_file: str | None = None,
        prefer_voc: bool = True,
        allow_subset: bool = False,
    ) -> None:
        if masks not in ("auto", "png", "mat"):
            raise ValueError(f"voc2012-aug: masks must be one of auto, png, mat, got {masks!r}")
        self.masks, self.sbd_root, self.list_file, self.prefer_voc = masks, sbd_root, list_file, prefer_voc
        self.train_list = ""  # where the training ids came from (for messages)
        subset = allow_subset or (list_file is not None and split == "train")  # a given list may be a subset
        super().__init__(root, split, transform, allow_subset=subset)

    def find_samples(self) -> list[Sample]:
        if self.split == "val":
            return self.voc_split("val")
        voc = self.voc_dir()
        sbd = self._sbd_dir(voc)
        mode = self._mask_mode(voc, sbd)
        ids = self._train_ids(voc, sbd, mode)
        return self.require_files([(voc / "JPEGImages" / f"{i}.jpg", self._mask_path(voc, sbd, i, mode)) for i in ids])

    def read_label(self, path: Path) -> np.ndarray:
        raw = read_sbd_mat(path) if path.suffix == ".mat" else read_index_png(path)
        return apply_label_map(raw, self.label_map, path)

    def _mask_mode(self, voc: Path, sbd: Path | None) -> Literal["png", "mat"]:
        """``png`` or ``mat`` from ``options.masks`` and what is on disk; ``unavailable`` if that is missing."""
        aug, looked = voc / "SegmentationClassAug", ", ".join(str(p) for p in self._sbd_candidates(voc))
        if self.masks == "png" or (self.masks == "auto" and aug.is_dir()):
            if not aug.is_dir():
                raise self.unavailable(f"found no folder {aug}")
            return "png"
        if sbd is None:
            what = f"neither {aug} nor an" if self.masks == "auto" else "no"
            raise self.unavailable(f"found {what} SBD folder with cls/*.mat (looked in {looked})")
        return "mat"

    def _train_ids(self, voc: Path, sbd: Path | None, mode: str) -> list[str]:
        """The training ids, sorted; ``SplitOverlapError`` if a given list names a VOC val image.

        Lists built here from SBD's lists drop VOC val by definition (SBD val overlaps it); a list
        read from disk or ``list_file`` is taken as given, so a VOC val id in it is refused, not dropped.
        """
        val = set(self.voc_list(voc, "val", "to check that no VOC val image is in the training list"))
        given = self._given_list()
        if given is not None:
            ids, self.train_list = read_list(given), f"options.list_file {given}"
        elif mode == "png":
            ids, self.train_list = self._png_list(voc)
        else:
            assert sbd is not None
            lists = [sbd / "train.txt", sbd / "val.txt"]
            absent = [str(p) for p in lists if not p.is_file()]
            if absent:
                raise self.unavailable(f"the SBD list(s) {', '.join(absent)} are missing (needed to build train_aug)")
            voc_train = self.voc_list(voc, "train", "to build train_aug")
            union = {*read_list(lists[0]), *read_list(lists[1]), *voc_train}
            ids, self.train_list = sorted(union - val), f"SBD train + val + VOC train - VOC val ({sbd})"
        leaked = set(ids) & val
        if leaked:
            raise overlap_error(f"{self.name} training list from {self.train_list}", leaked)
        return sorted(set(ids))

    def _png_list(self, voc: Path) -> tuple[list[str], str]:
        """The train_aug ids of a SegmentationClassAug layout, and where they came from.

        mmsegmentation's converter writes ``trainaug.txt`` (all 10,582) and ``aug.txt`` (the 9,118
        SBD images outside VOC train and val: its config adds ``train.txt`` to it); DeepLab's
        distribution has ``train_aug.txt``. ``aug.txt`` alone is never the training list.
        """
        sets = voc / "ImageSets"
        full = [
            sets / "Segmentation" / "trainaug.txt",
            sets / "Segmentation" / "train_aug.txt",
            sets / "SegmentationAug" / "train_aug.txt",
            voc.parent.parent / "train_aug.txt",
        ]
        listing = next((p for p in full if p.is_file()), None)
        if listing is not None:
            return read_list(listing), str(listing)
        aug = sets / "Segmentation" / "aug.txt"
        if aug.is_file():
            voc_train = self.voc_list(voc, "train", "with aug.txt, which leaves VOC train out")
            return read_list(aug) + voc_train, f"{aug} + VOC train.txt"
        found = count_files(voc / "SegmentationClassAug", "*.png")
        raise self.unavailable(
            f"found {found} masks in {voc / 'SegmentationClassAug'} but no train_aug list "
            f"(looked for {', '.join(str(p) for p in [*full, aug])}; or set options.list_file)"
        )

    def _mask_path(self, voc: Path, sbd: Path | None, image_id: str, mode: str) -> Path:
        """VOC's mask or SBD's (``.mat`` or SegmentationClassAug PNG), whichever ``prefer_voc`` puts first and exists.

        mmsegmentation's SegmentationClassAug holds SBD's masks only, so the VOC-train images SBD
        lacks have their mask in SegmentationClass alone; a missing file is reported as the SBD one.
        """
        voc_png = voc / "SegmentationClass" / f"{image_id}.png"
        if mode == "png":
            sbd_mask = voc / "SegmentationClassAug" / f"{image_id}.png"
        else:
            assert sbd is not None
            sbd_mask = sbd / "cls" / f"{image_id}.mat"
        order = (voc_png, sbd_mask) if self.prefer_voc else (sbd_mask, voc_png)
        return next((p for p in order if p.is_file()), sbd_mask)

    def _given_list(self) -> Path | None:
        if self.list_file is None:
            return None
        path = self.root / Path(self.list_file).expanduser()  # an absolute list_file replaces root
        if not path.is_file():
            raise self.unavailable(f"options.list_file {path} does not exist")
        return path

    def _sbd_candidates(self, voc: Path) -> list[Path]:
        if self.sbd_root is not None:
            given = self.root / Path(self.sbd_root).expanduser()
            return [given, given / "dataset", given / "benchmark_RELEASE" / "dataset"]
        bases = dict.fromkeys([voc.parent.parent, self.root])  # folder holding VOCdevkit, then root
        return [p for b in bases for p in (b / "benchmark_RELEASE" / "dataset", b / "VOCdevkit" / "VOCaug" / "dataset")]

    def _sbd_dir(self, voc: Path) -> Path | None:
        return next((p for p in self._sbd_candidates(voc) if (p / "cls").is_dir()), None)


def read_sbd_mat(path: Path) -> np.ndarray:
    """Class ids (uint8 ``[H, W]``) of an SBD ``cls/*.mat`` file: ``GTcls.Segmentation``."""
    try:
        mat = scipy.io.loadmat(path, variable_names=["GTcls"], squeeze_me=True, struct_as_record=False)
        seg = np.asarray(mat["GTcls"].Segmentation)
    except (OSError, ValueError, KeyError, AttributeError, TypeError, MatReadError) as err:
        raise DataFileError(
            f"cannot read SBD mask {path} (expected a struct GTcls with field Segmentation): {err!r}"
        ) from None
    if seg.ndim != 2 or not (np.issubdtype(seg.dtype, np.integer) or np.issubdtype(seg.dtype, np.floating)):
        raise DataFileError(
            f"SBD mask {path}: GTcls.Segmentation is not a 2-D array of class ids ({seg.dtype}, {seg.shape})"
        )
    out_of_range = (seg < 0) | (seg > 255) | (seg != np.round(seg))
    if out_of_range.any():
        raise DataFileError(
            f"mask {path} contains label value(s) {np.unique(seg[out_of_range])[:8].tolist()} outside 0..255"
        )
    return seg.astype(np.uint8)
