"""Harness overhead: steps/s of studybench's training loop vs a bare PyTorch loop, same process.

The studybench side is ``train.execute`` on a RunSpec of the quickstart's U-Net setting (CE on
the synthetic dataset, light U-Net-resnet18 decoder, Adam), its steps divided by its training
time (``train_s``: data loading, padding, the split-graph step, per-step bookkeeping; evaluation
and recording excluded). The bare side is the loop a user would write by hand: the same dataset,
a ``DataLoader`` with the same batch size and workers (none), the same smp model and fused Adam,
``cross_entropy``, ``backward``, ``step``. The two alternate round by round, and which goes first
alternates too (a round's second loop inherits the first one's warm caches and freed heap); the
ratio of medians is the figure of merit (goal >= 0.97), printed with the per-round paired ratios
and their intervals, in wall time and in CPU time of the training epochs.

Both loops start from the heap a fresh process has: a run returns the memory that earlier code
freed to the OS before it starts (``measure.PeakMemory``, so that its "extra memory" is its own),
and then faults its gradients and optimiser state in again on its first step (measured: ~45,000
minor faults, 50-90 ms of system time on this setting). The bare loop used to start on the heap
the harness's run had just freed, faulting almost nothing: a head start no hand-written loop in
its own process has, worth ~5 % of a 16-step round. It now returns freed memory first too.

Host syncs per step are counted in one extra, untimed round of each loop
(``measure.count_host_reads``: PyTorch's sync debug mode on CUDA, tensor -> Python conversions on
CPU), over the training epochs only: the harness reads its running loss every ``train.log_every``
steps and at each epoch's end, so its figure is about ``1 / min(log_every, steps per epoch)``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from studybench import IGNORE_INDEX
from studybench.engine.load import load_average
from studybench.engine.measure import count_host_reads, release_free_heap
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
    return harness_round(spec)[0]


def harness_round(spec: RunSpec) -> tuple[float, float]:
    """``train.execute``'s steps per second of its training clock, and per CPU-second of its training
    epochs (process-wide CPU: its memory sampler's thread included)."""
    from studybench.engine.train import execute

    cpu: list[float] = []

    def timed(epoch: Callable[[], dict[str, float]]) -> dict[str, float]:
        start = time.process_time()
        try:
            return epoch()
        finally:
            cpu.append(time.process_time() - start)

    with epochs_wrapped(timed):
        metrics = execute(spec, MemoryRecorder()).metrics
    return metrics[METRIC_STEPS] / metrics[METRIC_TRAIN], metrics[METRIC_STEPS] / max(sum(cpu), 1e-9)


def harness_syncs(spec: RunSpec) -> float:
    """Host syncs per training step of ``train.execute``, counted inside its training epochs."""
    from studybench.engine.train import execute, resolve_device

    counted: list[int] = []

    def counting(epoch: Callable[[], dict[str, float]]) -> dict[str, float]:
        with count_host_reads(resolve_device(spec.config.train.device)) as reads:
            means = epoch()
        counted.append(reads.count)
        return means

    with epochs_wrapped(counting):
        steps = execute(spec, MemoryRecorder()).metrics[METRIC_STEPS]
    return sum(counted) / steps


@contextmanager
def epochs_wrapped(around: Callable[[Callable[[], dict[str, float]]], dict[str, float]]) -> Iterator[None]:
    """Within the block, each ``train.train_one_epoch`` call is made by ``around(call)``: what the bench
    measures of the harness's training epochs alone, without a hook in the trainer."""
    import studybench.engine.train as trainer

    real = trainer.train_one_epoch
    trainer.train_one_epoch = lambda *args, **kwargs: around(lambda: real(*args, **kwargs))
    try:
        yield
    finally:
        trainer.train_one_epoch = real


def bare_syncs(spec: RunSpec) -> float:
    """Host syncs per step of the bare loop (0 unless something in PyTorch itself reads the device)."""
    from studybench.engine.train import resolve_device

    with count_host_reads(resolve_device(spec.config.train.device)) as reads:
        steps = bare_loop(spec).steps
    return reads.count / steps


def bare_rate(spec: RunSpec) -> float:
    """Steps per second of a hand-written PyTorch loop on the same data, model and batch."""
    return bare_round(spec)[0]


def bare_round(spec: RunSpec) -> tuple[float, float]:
    """The bare loop's steps per wall second and per CPU-second (both over its loop)."""
    timed = bare_loop(spec)
    return timed.steps / timed.wall_s, timed.steps / max(timed.cpu_s, 1e-9)


class LoopTime(NamedTuple):
    steps: int
    wall_s: float
    cpu_s: float  # process-wide CPU time


def bare_loop(spec: RunSpec) -> LoopTime:
    """A hand-written PyTorch loop on the same data, model and batch: its steps, seconds and CPU-seconds.

    Like a run (and a script in its own process), it starts from a heap without the memory that
    earlier code freed (see the module docstring)."""
    from studybench.data import build_dataset
    from studybench.engine.device import default_workers
    from studybench.engine.train import resolve_device, seed_everything
    from studybench.models import build_model

    cfg = spec.config
    device, workers = resolve_device(cfg.train.device), default_workers(cfg.data.num_workers, cfg.train.threads)
    seed_everything(spec.seed)
    dataset = build_dataset(cfg.data, cfg.data.train_split, train=True)
    loader = DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,  # as the run's loader
        generator=torch.Generator().manual_seed(spec.seed),
    )
    if device.type == "cpu":
        release_free_heap()  # where a run's PeakMemory starts: after its data, before its model
    model = build_model(cfg.model, dataset.num_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, fused=True)
    steps, start, cpu = 0, time.perf_counter(), time.process_time()
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
    return LoopTime(steps, time.perf_counter() - start, time.process_time() - cpu)


@dataclass
class HarnessResult:
    harness: list[float]
    bare: list[float]
    setting: dict[str, Any]
    syncs: dict[str, float] = field(default_factory=dict)  # host syncs per step: {"studybench": .., "bare": ..}
    #: steps per CPU-second of the training epochs (process-wide CPU time; the harness's memory sampler included)
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
    """Alternate studybench and bare rounds (one untimed warm-up round of each first; the loop that goes
    first alternates from round to round), then count the host syncs per step of each in one more,
    untimed round."""
    spec = harness_spec(image_size, train_images, epochs, batch, threads, device)
    if threads:
        torch.set_num_threads(threads)
    loops = {"studybench": harness_round, "bare": bare_round}
    wall: dict[str, list[float]] = {name: [] for name in loops}
    cpu: dict[str, list[float]] = {name: [] for name in loops}
    load_before = load_average()
    for round_ in range(rounds + 1):
        for name in loops if round_ % 2 == 0 else reversed(loops):
            steps_s, steps_cpu_s = loops[name](spec)
            if round_:
                wall[name].append(steps_s)
                cpu[name].append(steps_cpu_s)
        if done:
            done()
    load = f"{load_before:.1f}-{load_average():.1f}"
    syncs = {"studybench": harness_syncs(spec), "bare": bare_syncs(spec)} if count_syncs else {}
    setting = {
        "data": f"synthetic, 5 classes, {image_size}², {train_images} train images",
        "model": f"U-Net-resnet18, decoder {tuple(LIGHT)}",
        "batch": batch,
        "steps": epochs * (train_images // batch),  # the setting shown on the page, not a metric
        "optimizer": "Adam (fused)",
        "rounds": rounds,
        "load average": load,  # 1-minute, before and after the timed rounds: ratios mean little on a loaded machine
    }
    return HarnessResult(wall["studybench"], wall["bare"], setting, syncs, cpu["studybench"], cpu["bare"])


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
    rows.append(
        "  (wall: each loop's training time; CPU: process CPU time of the training epochs, the harness's memory "
        "sampler included; both start from a trimmed heap, and the loop that goes first alternates)"
    )
    rows.append("setting: " + ", ".join(f"{k} {v}" for k, v in result.setting.items()))
    return "\n".join(rows)
