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

from studybench.bench import load

loaders = load("loaders")
PIPELINES, epoch_rate, fixture_writers, loader = (
    loaders.PIPELINES,
    loaders.epoch_rate,
    loaders.fixture_writers,
    loaders.loader,
)
write_trees = loaders.write_trees


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
        hw = (1024, 2048) if args.cityscapes_full else (512, 1024)
        trees = write_trees(Path(tmp), args.images, hw, fixture_writers())
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
