"""Harness overhead: steps/s of studybench's training loop vs a bare PyTorch loop, same process.

The studybench side is ``train.execute`` on a RunSpec of the quickstart's U-Net setting (CE on
the synthetic dataset, light U-Net-resnet18 decoder, Adam), its steps divided by its training
time (``train_s``: data loading, padding, the split-graph step, per-step bookkeeping; evaluation
and recording excluded). The bare side is the loop a user would write by hand: the same dataset,
a ``DataLoader`` with the same batch size, the same smp model and fused Adam, ``cross_entropy``,
``backward``, ``step``. The two alternate round by round; the ratio of medians is the figure of
merit (goal >= 0.95).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from studybench import IGNORE_INDEX
from studybench.spec import RunConfig, RunSpec

#: The quickstart's light U-Net decoder.
LIGHT = [64, 32, 16, 16, 8]


class MemoryRecorder:
    """A recorder (``train.Recorder``) that keeps what a run logs in memory instead of MLflow."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.artifacts: dict[str, int] = {}
        self.tags: dict[str, str] = {}

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.update(metrics)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.artifacts[artifact_file] = len(text)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        self.artifacts[artifact_file] = len(data)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)


def harness_spec(image_size: int, train_images: int, epochs: int, batch: int, threads: int, device: str) -> RunSpec:
    """The quickstart's U-Net/CE run on synthetic data, scaled to enough steps for a rate."""
    config = RunConfig.model_validate(
        {
            "data": {
                "dataset": "synthetic",
                "options": {"num_classes": 5, "image_size": image_size, "train_images": train_images, "val_images": 8},
            },
            "model": {"arch": "unet", "encoder": "resnet18", "weights": None, "options": {"decoder_channels": LIGHT}},
            "train": {
                "epochs": epochs,
                "batch_size": batch,
                "optimizer": "adam",
                "lr": 3e-3,
                "threads": threads,
                "device": device,
                "checkpoint": False,
            },
        }
    )
    return RunSpec(study="bench-harness", method="ce", seed=0, config=config)


def harness_rate(spec: RunSpec) -> float:
    """Training steps per second of ``train.execute`` (its own training-time clock)."""
    from studybench.train import execute

    metrics = execute(spec, MemoryRecorder()).metrics
    return metrics["steps"] / metrics["train_s"]


def bare_rate(spec: RunSpec) -> float:
    """Steps per second of a hand-written PyTorch loop on the same data, model and batch."""
    from studybench.data import build_dataset
    from studybench.models import build_model
    from studybench.train import resolve_device, seed_everything

    cfg = spec.config
    device = resolve_device(cfg.train.device)
    seed_everything(spec.seed)
    dataset = build_dataset(cfg.data, cfg.data.train_split, train=True)
    loader = DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(spec.seed),
    )
    model = build_model(cfg.model, dataset.num_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, fused=True)
    steps, start = 0, time.perf_counter()
    for _ in range(cfg.train.epochs):
        for images, target in loader:
            images, target = images.to(device), target.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(images), target, ignore_index=IGNORE_INDEX)
            loss.backward()
            optimizer.step()
            steps += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps / (time.perf_counter() - start)


@dataclass
class HarnessResult:
    harness: list[float]
    bare: list[float]
    setting: dict[str, Any]

    @property
    def ratio(self) -> float:
        return statistics.median(self.harness) / statistics.median(self.bare)

    @property
    def best_ratio(self) -> float:
        return max(self.harness) / max(self.bare)


def measure_harness(
    rounds: int, image_size: int, train_images: int, epochs: int, batch: int, threads: int, device: str, done=None
) -> HarnessResult:
    """Alternate studybench and bare rounds (one untimed warm-up round of each first)."""
    spec = harness_spec(image_size, train_images, epochs, batch, threads, device)
    if threads:
        torch.set_num_threads(threads)
    harness, bare = [], []
    for round_ in range(rounds + 1):
        h, b = harness_rate(spec), bare_rate(spec)
        if round_:
            harness.append(h)
            bare.append(b)
        if done:
            done()
    setting = {
        "data": f"synthetic, 5 classes, {image_size}², {train_images} train images",
        "model": f"U-Net-resnet18, decoder {tuple(LIGHT)}",
        "batch": batch,
        "steps": epochs * (train_images // batch),
        "optimizer": "Adam (fused)",
        "rounds": rounds,
    }
    return HarnessResult(harness, bare, setting)
