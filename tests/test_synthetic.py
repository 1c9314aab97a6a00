"""The built-in synthetic dataset: deterministic, imbalanced, every class drawn."""

from __future__ import annotations

import torch

from studybench.data import build_dataset
from studybench.data.synthetic import SyntheticSegmentation
from studybench.study.spec import DataCfg


def test_deterministic_and_split_dependent():
    a = SyntheticSegmentation(split="train", image_size=32, train_images=4)
    b = SyntheticSegmentation(split="train", image_size=32, train_images=4)
    v = SyntheticSegmentation(split="val", image_size=32, val_images=4)
    for i in range(4):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
    assert not torch.equal(a[0][1], v[0][1])
    other = SyntheticSegmentation(split="train", image_size=32, train_images=4, data_seed=1)
    assert not torch.equal(a[0][0], other[0][0])


def test_shapes_ranges_and_class_imbalance():
    ds = build_dataset(DataCfg(options={"num_classes": 5, "image_size": 64, "train_images": 40}), "train", train=True)
    counts = torch.zeros(5)
    for image, mask in (ds[i] for i in range(len(ds))):
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert mask.shape == (64, 64) and mask.dtype == torch.int64
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        counts += torch.bincount(mask.flatten(), minlength=5)
    share = counts / counts.sum()
    assert (share > 0).all()  # every class appears
    assert share[0] > 0.5  # background dominates
    assert share[1:].min() < 0.05  # rare classes (thin lines / small objects)
    assert ds.class_names[0] == "background" and len(ds.palette) == 5


def test_more_classes_reuse_shapes():
    ds = SyntheticSegmentation(split="val", num_classes=9, image_size=32, val_images=2)
    assert len(ds.class_names) == 9 and len(set(ds.class_names)) == 9
    assert int(ds[0][1].max()) < 9


def test_detail_widens_the_rare_classes_and_defaults_to_the_old_pixels():
    base = SyntheticSegmentation(split="val", image_size=64, val_images=6)
    same = SyntheticSegmentation(split="val", image_size=64, val_images=6, detail=1.0)
    wide = SyntheticSegmentation(split="val", image_size=64, val_images=6, detail=1.5)
    count = lambda ds, c: sum(int((ds[i][1] == c).sum()) for i in range(6))  # noqa: E731
    assert all(torch.equal(base[i][1], same[i][1]) for i in range(6))
    for cls in (2, 3):  # small discs and thin lines: more pixels, still rare
        assert count(wide, cls) > 1.5 * count(base, cls)
        assert count(wide, cls) < 0.1 * 6 * 64 * 64
