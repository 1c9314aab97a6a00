"""Data loader throughput: images/s of each dataset format's loader alone (no model).

A temporary tree per on-disk format is written in the real layout by the writers the tests use
too (``studybench.data.fixtures``), so every format's decode
and label mapping runs on files like the real ones; the built-in ``synthetic`` dataset needs no
files. Each configuration gets a fresh ``DataLoader``, an untimed warm-up epoch (worker
start-up, page cache) and timed epochs, interleaved round by round.
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch.utils.data import DataLoader

from studybench.data import DATASETS
from studybench.data.transforms import build_transform
from studybench.study.spec import DataCfg

PIPELINES = {
    "none": {},
    "goncalves": {"resize": 234, "crop": 224},
    "deeplab": {"scale": [0.5, 1.5], "flip": True, "crop": 321, "normalize": "imagenet"},
}


def fixture_writers() -> ModuleType:
    """The module of on-disk format writers (``studybench.data.fixtures``)."""
    from studybench.data import fixtures

    return fixtures


def write_trees(
    base: Path, n: int, cityscapes_hw: tuple[int, int], writers: ModuleType | None
) -> dict[str, tuple[str, Path | None, dict, str]]:
    """format label -> (dataset name, root, options, size label); every tree holds ``n`` train images."""
    trees: dict[str, tuple[str, Path | None, dict, str]] = {}
    if writers is not None:
        ids = [f"2010_{k:06d}" for k in range(n)]
        writers.write_voc(base / "voc", {"train": ids}, hw=(375, 500))
        writers.write_voc_aug(base / "sbd", "mat", hw=(375, 500), extra_sbd=n - 6)  # 3 VOC PNGs + SBD .mat
        writers.write_cityscapes(
            base / "cityscapes", {"train": {"aachen": n // 2, "bremen": n - n // 2}}, hw=cityscapes_hw
        )
        writers.write_camvid(base / "camvid", {"train": n}, hw=(360, 480))
        writers.write_folder(base / "folder", count=n, hw=(375, 500))
        h, w = cityscapes_hw
        folder_options = {"classes": ["a", "b", "c"], "val_fraction": 0.0}
        subset = {"allow_subset": True}  # n images, far fewer than VOC's official splits
        trees.update(
            {
                "voc2012 (JPEG + palette PNG)": ("voc2012", base / "voc", subset, "500x375"),
                "voc2012-aug (SBD .mat)": ("voc2012-aug", base / "sbd", {"masks": "mat", **subset}, "500x375"),
                "cityscapes (PNG + labelIds)": ("cityscapes", base / "cityscapes", {}, f"{w}x{h}"),
                "camvid (PNG + id PNG)": ("camvid", base / "camvid", {}, "480x360"),
                "folder (JPEG + id PNG)": ("folder", base / "folder", folder_options, "500x375"),
            }
        )
    trees["synthetic 64"] = ("synthetic", None, {"image_size": 64, "train_images": n}, "64x64")
    trees["synthetic 512"] = ("synthetic", None, {"image_size": 512, "train_images": n}, "512x512")
    return trees


def loader(name: str, root: Path | None, options: dict, pipeline: str, workers: int, batch: int = 8) -> DataLoader:
    transform = build_transform(DataCfg(**PIPELINES[pipeline]), train=True)
    dataset = DATASETS.get(name)(root=root, split="train", transform=transform, **options)
    return DataLoader(dataset, batch_size=batch, num_workers=workers, persistent_workers=workers > 0)


def epoch_rate(dl: DataLoader) -> float:
    """Images per second over one epoch of ``dl``."""
    start, seen = time.perf_counter(), 0
    for images, _ in dl:
        seen += images.shape[0]
    return seen / (time.perf_counter() - start)


def measure_loaders(
    base: Path,
    images: int,
    rounds: int,
    pipelines: tuple[str, ...] = ("goncalves",),
    workers: tuple[int, ...] = (0,),
    cityscapes_hw: tuple[int, int] = (512, 1024),
    done=None,
) -> list[dict]:
    """Rows ``{format, size, pipeline, workers, images_s (median), min, max}`` over ``rounds``."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the trees are smaller than the official splits, on purpose
        trees = write_trees(base, images, cityscapes_hw, fixture_writers())
        configs = [(fmt, p, w) for fmt in trees for p in pipelines for w in workers]
        rates: dict[tuple, list[float]] = {c: [] for c in configs}
        for _ in range(rounds):
            for fmt, pipeline, nw in configs:
                name, root, options, _ = trees[fmt]
                dl = loader(name, root, options, pipeline, nw)
                epoch_rate(dl)  # warm-up
                rates[fmt, pipeline, nw].append(epoch_rate(dl))
                del dl
                if done:
                    done()
    return [
        {
            "format": fmt,
            "size": trees[fmt][3],
            "pipeline": pipeline,
            "workers": nw,
            "images_s": statistics.median(r),
            "min": min(r),
            "max": max(r),
        }
        for (fmt, pipeline, nw), r in rates.items()
    ]
