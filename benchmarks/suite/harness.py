"""Harness overhead: steps/s of studybench's training loop vs a bare PyTorch loop, same process.

The studybench side is ``train.execute`` on a RunSpec of the quickstart's U-Net setting (CE on
the synthetic dataset, light U-Net-resnet18 decoder, Adam), its steps divided by its training
time (``train_s``: data loading, padding, the split-graph step, per-step bookkeeping; evaluation
and recording excluded). The bare side is the loop a user would write by hand: the same dataset,
a ``DataLoader`` with the same batch size, the same smp model and fused Adam, ``cross_entropy``,
``backward``, ``step``. The two alternate round by round; the ratio of medians is the figure of
merit (goal >= 0.97).

Host syncs per step are counted in one extra, untimed round of each loop
(``measure.count_host_reads``: PyTorch's sync debug mode on CUDA, tensor -> Python conversions on
CPU), over the training epochs only: the harness reads its running loss every ``train.log_every``
steps and at each epoch's end, so its figure is about ``1 / min(log_every, steps per epoch)``.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from studybench import IGNORE_INDEX
from studybench.engine.measure import count_host_reads
from studybench.store.layout import METRIC_STEPS, METRIC_TRAIN
from studybench.study.keys import keyed_spec
from studybench.study.spec import RunConfig, RunSpec

from .timing import median_coverage, median_interval

#: The quickstart's light U-Net decoder.
LIGHT = [64, 32, 16, 16, 8]
#: ``studybench bench --harness``: 2 epochs of 8 steps per round (enough steps for a rate, few seconds on a CPU).
HARNESS_ONLY = {"image_size": 64, "train_images": 64, "epochs": 2, "batch": 8}


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
                "num_workers": 0,  # as the bare loop
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
    return keyed_spec(study="bench-harness", method="ce", seed=0, config=config)


def harness_rate(spec: RunSpec) -> float:
    """Training steps per second of ``train.execute`` (its own training-time clock)."""
    from studybench.engine.train import execute

    metrics = execute(spec, MemoryRecorder()).metrics
    return metrics[METRIC_STEPS] / metrics[METRIC_TRAIN]


def harness_syncs(spec: RunSpec) -> float:
    """Host syncs per training step of ``train.execute``, counted inside its training epochs."""
    import studybench.engine.train as trainer

    real, counted = trainer.train_one_epoch, []

    def counting(*args: Any, **kwargs: Any) -> dict[str, float]:
        with count_host_reads(trainer.resolve_device(spec.config.train.device)) as reads:
            means = real(*args, **kwargs)
        counted.append(reads.count)
        return means

    trainer.train_one_epoch = counting
    try:
        steps = trainer.execute(spec, MemoryRecorder()).metrics[METRIC_STEPS]
    finally:
        trainer.train_one_epoch = real
    return sum(counted) / steps


def bare_syncs(spec: RunSpec) -> float:
    """Host syncs per step of the bare loop (0 unless something in PyTorch itself reads the device)."""
    from studybench.engine.train import resolve_device

    with count_host_reads(resolve_device(spec.config.train.device)) as reads:
        steps = bare_loop(spec)[0]
    return reads.count / steps


def bare_rate(spec: RunSpec) -> float:
    """Steps per second of a hand-written PyTorch loop on the same data, model and batch."""
    steps, seconds = bare_loop(spec)
    return steps / seconds


def bare_loop(spec: RunSpec) -> tuple[int, float]:
    """A hand-written PyTorch loop on the same data, model and batch: its steps and seconds."""
    from studybench.data import build_dataset
    from studybench.engine.train import resolve_device, seed_everything
    from studybench.models import build_model

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
    return steps, time.perf_counter() - start


@dataclass
class HarnessResult:
    harness: list[float]
    bare: list[float]
    setting: dict[str, Any]
    syncs: dict[str, float] = field(default_factory=dict)  # host syncs per step: {"studybench": .., "bare": ..}
    #: steps per CPU-second of each whole call (the harness's includes its evaluation and logging)
    harness_cpu: list[float] = field(default_factory=list)
    bare_cpu: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.harness) / statistics.median(self.bare)

    def paired(self, cpu: bool = False) -> tuple[float, float, float]:
        """Median of the per-round ratios (a round's two loops share its load) and its 95 % interval."""
        h, b = (self.harness_cpu, self.bare_cpu) if cpu else (self.harness, self.bare)
        ratios = [x / y for x, y in zip(h, b)]
        if not ratios:
            return math.nan, math.nan, math.nan
        return (statistics.median(ratios), *median_interval(ratios))

    @property
    def best_ratio(self) -> float:
        return max(self.harness) / max(self.bare)


def measure_harness(
    rounds: int,
    image_size: int,
    train_images: int,
    epochs: int,
    batch: int,
    threads: int,
    device: str,
    done=None,
    count_syncs: bool = True,
) -> HarnessResult:
    """Alternate studybench and bare rounds (one untimed warm-up round of each first), then count
    the host syncs per step of each in one more, untimed round."""
    spec = harness_spec(image_size, train_images, epochs, batch, threads, device)
    if threads:
        torch.set_num_threads(threads)
    harness, bare, harness_cpu, bare_cpu = [], [], [], []
    for round_ in range(rounds + 1):
        (h, h_cpu), (b, b_cpu) = _with_cpu(harness_rate, spec), _with_cpu(bare_rate, spec)
        if round_:
            harness.append(h)
            bare.append(b)
            harness_cpu.append(h_cpu)
            bare_cpu.append(b_cpu)
        if done:
            done()
    syncs = {"studybench": harness_syncs(spec), "bare": bare_syncs(spec)} if count_syncs else {}
    setting = {
        "data": f"synthetic, 5 classes, {image_size}², {train_images} train images",
        "model": f"U-Net-resnet18, decoder {tuple(LIGHT)}",
        "batch": batch,
        "steps": epochs * (train_images // batch),  # the setting shown on the page, not a metric
        "optimizer": "Adam (fused)",
        "rounds": rounds,
    }
    return HarnessResult(harness, bare, setting, syncs, harness_cpu, bare_cpu)


def _with_cpu(rate, spec: RunSpec) -> tuple[float, float]:
    """``rate(spec)`` (steps per wall second) and the call's steps per CPU-second of this process."""
    start = time.process_time()
    steps_per_s = rate(spec)
    return steps_per_s, _steps(spec) / max(time.process_time() - start, 1e-9)


def _steps(spec: RunSpec) -> int:
    data = spec.config.data.options
    return spec.config.train.epochs * (data["train_images"] // spec.config.train.batch_size)


def harness_table(result: HarnessResult) -> str:
    """The comparison as a plain table: steps/s (median and range), host syncs per step, and the ratio."""
    rows = [f"{'loop':<12} {'steps/s (median)':>17} {'min-max':>15} {'host syncs/step':>16}"]
    for name, rates in (("studybench", result.harness), ("bare", result.bare)):
        syncs = result.syncs.get(name)
        sync_text = f"{syncs:.3f}" if syncs is not None else "-"
        spread = f"{min(rates):.2f}-{max(rates):.2f}"
        rows.append(f"{name:<12} {statistics.median(rates):>17.3f} {spread:>15} {sync_text:>16}")
    rows.append(f"ratio studybench / bare (medians of {len(result.harness)} interleaved rounds): {result.ratio:.3f}")
    coverage = median_coverage(len(result.harness))
    for what, cpu in (("wall", False), ("CPU", True)):
        median, lo, hi = result.paired(cpu)
        rows.append(
            f"  per-round ratio, {what:<4}: median {median:.3f}, interval [{lo:.3f}, {hi:.3f}] "
            f"({100 * coverage:.1f} % distribution-free interval of the median)"
        )
    rows.append("  (wall: training time only; CPU: whole calls, the harness's with its evaluation and logging)")
    rows.append("setting: " + ", ".join(f"{k} {v}" for k, v in result.setting.items()))
    return "\n".join(rows)
