"""Loader throughput: images/s of each on-disk format's loader alone (no model), per pipeline.

Writes a temporary tree of ``--images`` images per format at a realistic size, in the real
layout (the writers of tests/fixtures_data.py), and times a DataLoader (batch 8, num_workers
0 and 2) over it with three pipelines: ``none`` (decode + label mapping only), ``goncalves``
(resize 234, random crop 224) and ``deeplab`` (random scale 0.5-1.5, flip, crop 321, ImageNet
normalisation). In each of ``--epochs`` rounds every configuration gets a fresh loader, one
warm-up epoch (worker start-up, page cache) and one timed epoch (persistent workers); the
table gives the median and the range of images/s over the rounds. All configurations are
timed in the same process, interleaved round by round, so rows are comparable with each
other even on a busy machine; absolute numbers depend on the machine and its load.

    .venv/bin/python benchmarks/bench_loaders.py [--images 32] [--epochs 3] [--cityscapes-full]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures_data import write_camvid, write_cityscapes, write_folder, write_voc, write_voc_aug  # noqa: E402

from studybench.data import DATASETS  # noqa: E402
from studybench.data.transforms import build_transform  # noqa: E402
from studybench.spec import DataCfg  # noqa: E402

PIPELINES = {
    "none": {},
    "goncalves": {"resize": 234, "crop": 224},
    "deeplab": {"scale": [0.5, 1.5], "flip": True, "crop": 321, "normalize": "imagenet"},
}


def write_trees(base: Path, n: int, cityscapes_hw: tuple[int, int]) -> dict[str, tuple[str, Path, dict, str]]:
    """format label -> (dataset name, root, options, size label); every tree holds ``n`` train images."""
    ids = [f"2010_{k:06d}" for k in range(n)]
    write_voc(base / "voc", {"train": ids}, hw=(375, 500))
    write_voc_aug(base / "sbd", "mat", hw=(375, 500), extra_sbd=n - 6)  # 3 VOC PNG masks + SBD .mat for the rest
    per_city = {"aachen": n // 2, "bremen": n - n // 2}
    write_cityscapes(base / "cityscapes", {"train": per_city}, hw=cityscapes_hw)
    write_camvid(base / "camvid", {"train": n}, hw=(360, 480))
    write_folder(base / "folder", count=n, hw=(375, 500))
    h, w = cityscapes_hw
    return {
        "voc2012 (JPEG + palette PNG)": ("voc2012", base / "voc", {}, "500x375"),
        "voc2012-aug (SBD .mat)": ("voc2012-aug", base / "sbd", {"masks": "mat"}, "500x375"),
        "cityscapes (PNG + labelIds)": ("cityscapes", base / "cityscapes", {}, f"{w}x{h}"),
        "camvid (PNG + id PNG)": ("camvid", base / "camvid", {}, "480x360"),
        "folder (JPEG + id PNG)": (
            "folder",
            base / "folder",
            {"classes": ["a", "b", "c"], "val_fraction": 0.0},
            "500x375",
        ),
        "synthetic 64": ("synthetic", None, {"image_size": 64, "train_images": n}, "64x64"),
        "synthetic 512": ("synthetic", None, {"image_size": 512, "train_images": n}, "512x512"),
    }


def loader(name: str, root: Path | None, options: dict, pipeline: str, workers: int) -> DataLoader:
    transform = build_transform(DataCfg(**PIPELINES[pipeline]), train=True)
    dataset = DATASETS.get(name)(root=root, split="train", transform=transform, **options)
    return DataLoader(dataset, batch_size=8, num_workers=workers, persistent_workers=workers > 0)


def epoch_rate(dl: DataLoader) -> float:
    start, seen = time.perf_counter(), 0
    for images, _ in dl:
        seen += images.shape[0]
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=32, help="images per format (>= 8)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per configuration")
    parser.add_argument("--cityscapes-full", action="store_true", help="2048x1024 Cityscapes instead of 1024x512")
    args = parser.parse_args()
    if args.images < 8:
        raise SystemExit(f"--images must be >= 8, got {args.images}")
    torch.set_num_threads(1)  # the main process gets one thread, like each DataLoader worker
    torch.manual_seed(0)
    warnings.simplefilter("ignore")  # the trees are smaller than the official splits, on purpose
    with tempfile.TemporaryDirectory(prefix="bench_loaders_") as tmp:
        t0 = time.perf_counter()
        trees = write_trees(Path(tmp), args.images, (1024, 2048) if args.cityscapes_full else (512, 1024))
        print(
            f"wrote {len(trees) - 2} trees of {args.images} images in {time.perf_counter() - t0:.1f}s", file=sys.stderr
        )
        configs = [(fmt, p, w) for fmt in trees for p in PIPELINES for w in (0, 2)]
        rates: dict[tuple, list[float]] = {c: [] for c in configs}
        for _ in range(args.epochs):  # interleaved rounds: changes in machine load hit every row alike
            for fmt, pipeline, workers in configs:
                name, root, options, _ = trees[fmt]
                dl = loader(name, root, options, pipeline, workers)
                epoch_rate(dl)  # warm-up: worker start-up, page cache, first-call allocations
                rates[fmt, pipeline, workers].append(epoch_rate(dl))
                del dl  # at most two workers alive at a time

    print(
        f"Loader throughput (images/s, batch 8, {args.images} images per format, median of {args.epochs} epochs [min-max])"
    )
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
        "shared with other engineers' jobs while measured, so absolute numbers are noisy.\n"
    )
    print("| format | size (WxH) | pipeline | workers 0 | workers 2 |")
    print("|---|---|---|---:|---:|")
    for fmt in trees:
        for pipeline in PIPELINES:
            cells = []
            for workers in (0, 2):
                r = rates[fmt, pipeline, workers]
                cells.append(f"{statistics.median(r):.0f} [{min(r):.0f}-{max(r):.0f}]")
            print(f"| {fmt} | {trees[fmt][3]} | {pipeline} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
