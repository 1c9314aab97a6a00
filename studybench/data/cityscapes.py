"""Cityscapes (fine annotations) with the 19 official training classes.

Files are found by torchvision's ``Cityscapes`` (city folders, ``_leftImg8bit`` /
``_gtFine_labelIds`` suffixes) and sorted, since it lists folders in file-system order.
Masks are the ``*_gtFine_labelIds.png`` files, mapped through the official labelId -> trainId
table (torchvision's copy of cityscapesScripts' ``labels.py``): the 19 evaluated classes become
0..18 and everything else (void, ``ignoreInEval`` classes such as parking or caravan) 255.
The test split's public labels are empty, so only train and val are offered.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from torchvision.datasets import Cityscapes as _TVCityscapes

from studybench import IGNORE_INDEX
from studybench.data.base import JointTransform
from studybench.data.files import FileSegDataset, Sample, count_files, label_lut

_TRAIN_CLASSES = sorted((c for c in _TVCityscapes.classes if 0 <= c.train_id < IGNORE_INDEX), key=lambda c: c.train_id)
assert [c.train_id for c in _TRAIN_CLASSES] == list(range(19)), "unexpected torchvision Cityscapes label table"

CITYSCAPES_CLASSES = tuple(c.name for c in _TRAIN_CLASSES)
CITYSCAPES_PALETTE = tuple(tuple(c.color) for c in _TRAIN_CLASSES)
#: labelId (0..33) -> trainId (0..18, else 255); license plate (id -1) never occurs in labelIds files.
LABEL_TO_TRAIN = {
    c.id: c.train_id if 0 <= c.train_id < IGNORE_INDEX else IGNORE_INDEX for c in _TVCityscapes.classes if c.id >= 0
}


class Cityscapes(FileSegDataset):
    """Cityscapes gtFine: 19 classes; train 2975, val 500 images (2048 x 1024)."""

    name = "cityscapes"
    class_names = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE
    splits = ("train", "val")
    official_sizes: ClassVar[dict[str, int]] = {"train": 2975, "val": 500}
    label_map = label_lut(LABEL_TO_TRAIN)
    source = (
        "Cityscapes gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip from cityscapes-dataset.com "
        "(https://www.cityscapes-dataset.com/downloads/) after registering; unzip both into root"
    )
    layout = """\
  <root>/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  <root>/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png   (labelIds 0..33; the
      _color, _instanceIds and _polygons.json files beside them are not used)"""

    #: Grouping for a tuning split ``by: city`` (frames of one city are correlated: a tuning split takes whole cities).
    group_name = "city"

    @staticmethod
    def group_of(sample_id: str) -> str:
        return sample_id.split("_", 1)[0]

    def __init__(
        self, root: Path | str | None = None, split: str = "train", transform: JointTransform | None = None
    ) -> None:
        super().__init__(root, split, transform)

    def find_samples(self) -> list[Sample]:
        images_dir = self.root / "leftImg8bit" / self.split
        labels_dir = self.root / "gtFine" / self.split
        found = count_files(images_dir, "*/*_leftImg8bit.png")
        if found == 0:
            raise self.unavailable(f"found 0 images in {images_dir}")
        if not labels_dir.is_dir():
            raise self.unavailable(f"found {found} images in {images_dir} but no folder {labels_dir}")
        stray = [p for p in images_dir.iterdir() if not p.is_dir()]
        if stray:
            raise self.unavailable(f"{images_dir} should hold only city folders, found the file {stray[0]}")
        tv = _TVCityscapes(str(self.root), split=self.split, mode="fine", target_type="semantic")
        pairs = ((Path(img), Path(targets[0])) for img, targets in zip(tv.images, tv.targets))
        return self.require_files(sorted(p for p in pairs if p[0].name.endswith("_leftImg8bit.png")))
