"""Execute one RunSpec end to end: data -> scheme (model, loss, optimiser) -> epochs -> metrics.

Reads top to bottom: ``execute`` builds everything, loops over epochs (train, then
evaluate every network of the scheme), and returns the final metrics and costs. It never
imports the study config or the grid, and it writes only through the ``Recorder`` it is
given (MLflow in practice, see ``tracking``), so it can run in any process or on any node.
With ``checkpoints`` it saves its state after every epoch and continues from there when it
finds a checkpoint of its run key (see ``checkpoint``); ``faults.inject`` marks the points
where crash tests kill it.
"""

from __future__ import annotations

import io
import math
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from studybench import IGNORE_INDEX, faults
from studybench.checkpoint import Checkpoints, rng_state, set_rng_state
from studybench.data import SegDataset, build_dataset
from studybench.measure import PeakMemory, Timer, count_params
from studybench.metrics import ConfusionMatrix, SegMetrics
from studybench.schemes import Scheme, build_scheme
from studybench.spec import RunSpec

#: Inputs are padded to a multiple of this (smp encoders downsample by up to 32).
SIZE_MULTIPLE = 32
#: Validation images kept as the sample-prediction artifact.
NUM_SAMPLES = 4
#: Tags of a run that continued from a checkpoint: epochs it found done, and the MLflow run that did them.
TAG_RESUMED_EPOCH = "studybench.resumed_from_epoch"
TAG_RESUMED_RUN = "studybench.resumed_from_run"


class Recorder(Protocol):
    """Where a run's results go (implemented by ``tracking.RunLogger``)."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_bytes(self, data: bytes, artifact_file: str) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...


class Progress(Protocol):
    """Progress display hooks (the CLI implements them with rich)."""

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step_done(self, loss: float) -> None: ...
    def epoch_done(self, epoch: int, metrics: dict[str, float]) -> None: ...


@dataclass
class RunResult:
    metrics: dict[str, float]  # final headline metrics and costs (what the summary shows)
    per_class_iou: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainState:
    """Where a run stands after an epoch: what a checkpoint needs besides weights and RNGs."""

    epoch: int = 0  # epochs completed
    step: int = 0
    train_s: float = 0.0
    eval_s: float = 0.0
    wall_s: float = 0.0  # wall time of earlier (interrupted) processes
    peak_mb: float = 0.0
    step_samples: list[float] = field(default_factory=list)
    loss_samples: list[float] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)  # the curves of each epoch


def execute(
    spec: RunSpec, recorder: Recorder, progress: Progress | None = None, checkpoints: Checkpoints | None = None
) -> RunResult:
    """Train and evaluate ``spec``; log curves, final metrics, costs and artifacts to ``recorder``.

    With ``checkpoints``, the state is saved after every epoch and a run that finds a
    checkpoint of its key continues from it (re-logging the earlier epochs' curves).
    """
    cfg = spec.config
    wall = time.perf_counter()
    device = resolve_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(spec.seed)
    checkpoints = checkpoints if cfg.train.checkpoint else None

    train_set = build_dataset(cfg.data, cfg.data.train_split, train=True)
    val_set = build_dataset(cfg.data, cfg.data.val_split, train=False)
    train_loader = _loader(train_set, cfg.train.batch_size, shuffle=True, seed=spec.seed, workers=cfg.data.num_workers)
    val_loader = _loader(
        val_set,
        cfg.train.val_batch_size or cfg.train.batch_size,
        shuffle=False,
        seed=spec.seed,
        workers=cfg.data.num_workers,
    )
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError(f"training split has {len(train_set)} images, fewer than batch_size={cfg.train.batch_size}")
    total_steps = cfg.train.iterations or cfg.train.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)

    with PeakMemory(device) as peak:
        scheme = build_scheme(cfg, train_set.num_classes, device, total_steps)
        state = _resume(spec, scheme, train_loader, recorder, checkpoints)
        step_timer = Timer(device)
        step_timer.samples, scheme.loss_timer.samples = state.step_samples, state.loss_samples
        results = None
        for epoch in range(state.epoch, epochs):
            t0 = epoch_start = time.perf_counter()
            scheme.set_train(True)
            if progress:
                progress.epoch_started(epoch, epochs, min(steps_per_epoch, total_steps - state.step))
            sums: dict[str, float] = defaultdict(float)
            seen = 0
            for images, target in train_loader:
                if state.step >= total_steps:
                    break
                images, target = pad_batch(images.to(device), target.to(device))
                with step_timer:
                    stats = scheme.train_step(images, target)
                sums["loss"] += float(stats.loss)
                for name, value in stats.parts.items():
                    sums[name] += float(value)
                seen += 1
                state.step += 1
                if progress:
                    progress.step_done(float(stats.loss))
                if seen == 1:
                    faults.inject("train", epoch, spec.name)
            state.train_s += time.perf_counter() - t0

            faults.inject("eval", epoch, spec.name)
            t0 = time.perf_counter()
            results = {
                role: evaluate(net, val_loader, train_set.num_classes, device) for role, net in scheme.networks.items()
            }
            state.eval_s += time.perf_counter() - t0
            curves = {f"train/{name}": total / max(seen, 1) for name, total in sums.items()}
            curves["lr"] = scheme.learning_rate()
            curves["epoch_s"] = time.perf_counter() - epoch_start
            for role, (metrics, _, _) in results.items():
                prefix = "val" if role == scheme.headline else f"{role}/val"
                curves.update({f"{prefix}/{k}": v for k, v in metrics.as_dict().items()})
            recorder.log_metrics(curves, step=epoch)
            state.history.append(curves)
            if progress:
                progress.epoch_done(epoch, curves)
            faults.inject("log", epoch, spec.name)
            state.epoch = epoch + 1
            if checkpoints:
                state.peak_mb = max(state.peak_mb, peak.current())
                state.wall_s += time.perf_counter() - wall
                wall = time.perf_counter()
                checkpoints.save(spec, _checkpoint(state, scheme, train_loader, recorder))
        if results is None:  # resumed after the last epoch: only the final evaluation is left
            results = {
                role: evaluate(net, val_loader, train_set.num_classes, device) for role, net in scheme.networks.items()
            }
        peak_mb = max(state.peak_mb, peak.current())

    final: dict[str, float] = {}
    per_class: dict[str, float] = {}
    for role, (metrics, matrix, samples) in results.items():
        prefix = "" if role == scheme.headline else f"{role}/"
        final.update({f"{prefix}{k}": v for k, v in metrics.as_dict().items()})
        ious = {f"{prefix}iou/{name}": v for name, v in zip(val_set.class_names, metrics.iou) if not math.isnan(v)}
        final.update(ious)
        if role == scheme.headline:
            per_class = {name: v for name, v in zip(val_set.class_names, metrics.iou)}
        recorder.log_text(_matrix_csv(matrix, val_set.class_names), f"{prefix}confusion_matrix.csv")
        recorder.log_bytes(_samples_npz(samples, val_set), f"{prefix}samples.npz")

    costs = {
        "wall_s": state.wall_s + time.perf_counter() - wall,
        "train_s": state.train_s,
        "eval_s": state.eval_s,
        "step_s": step_timer.median,
        "loss_ms": scheme.loss_timer.median * 1000,
        "loss_share": scheme.loss_timer.median / step_timer.median if step_timer.samples else float("nan"),
        "peak_mem_mb": peak_mb,
        "peak_extra_mb": peak_mb - peak.start_mb,  # above what the process held before the run
        "params_m": count_params(scheme.networks[scheme.headline]) / 1e6,
        "infer_ms_per_image": 1000 * state.eval_s / max(1, epochs * len(val_set) * len(scheme.networks)),
        "steps": float(state.step),
        **scheme.extra_costs(),
    }
    final.update(costs)
    recorder.log_metrics(final)
    faults.inject("final", None, spec.name)
    return RunResult(metrics=final, per_class_iou=per_class)


def _resume(
    spec: RunSpec, scheme: Scheme, loader: DataLoader, recorder: Recorder, checkpoints: Checkpoints | None
) -> TrainState:
    """Restore the run's checkpoint if there is one; re-log its curves into this MLflow run."""
    payload = checkpoints.load(spec) if checkpoints else None
    if payload is None:
        return TrainState()
    state = TrainState(**payload["state"])
    scheme.load_state_dict(payload["scheme"])
    set_rng_state(payload["rng"])
    loader.generator.set_state(payload["loader_rng"])
    for epoch, curves in enumerate(state.history):
        recorder.log_metrics(curves, step=epoch)
    recorder.set_tags({TAG_RESUMED_EPOCH: str(state.epoch), TAG_RESUMED_RUN: str(payload.get("run_id"))})
    return state


def _checkpoint(state: TrainState, scheme: Scheme, loader: DataLoader, recorder: Recorder) -> dict[str, Any]:
    return {
        "epoch": state.epoch,
        "run_id": getattr(recorder, "run_id", None),
        "state": asdict(state),
        "scheme": scheme.state_dict(),
        "rng": rng_state(),
        "loader_rng": loader.generator.get_state(),
    }


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, loader: DataLoader, num_classes: int, device: torch.device
) -> tuple[SegMetrics, ConfusionMatrix, dict[str, np.ndarray]]:
    """Dataset-level metrics of ``model`` on ``loader``, plus the first few predictions."""
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes)
    kept: dict[str, list[np.ndarray]] = defaultdict(list)
    for images, target in loader:
        h, w = images.shape[-2:]
        padded, _ = pad_batch(images.to(device), target.to(device))
        pred = model(padded)[..., :h, :w].argmax(dim=1)
        matrix.update(pred, target)
        if len(kept["pred"]) < NUM_SAMPLES:
            take = NUM_SAMPLES - len(kept["pred"])
            kept["image"].extend(images[:take].cpu().numpy())
            kept["target"].extend(target[:take].cpu().numpy())
            kept["pred"].extend(pred[:take].cpu().numpy())
    model.train(was_training)
    return matrix.compute(), matrix, kept


def pad_batch(
    images: torch.Tensor, target: torch.Tensor, multiple: int = SIZE_MULTIPLE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad bottom/right to a multiple of ``multiple``: images with 0, targets with the ignore label."""
    h, w = images.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return images, target
    return F.pad(images, (0, pw, 0, ph)), F.pad(target, (0, pw, 0, ph), value=IGNORE_INDEX)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Same seed => same model init and data order, whatever the loss."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _loader(dataset: SegDataset, batch_size: int, shuffle: bool, seed: int, workers: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)  # data order independent of model-init draws
    return DataLoader(
        dataset,
        batch_size=min(batch_size, len(dataset)) if not shuffle else batch_size,
        shuffle=shuffle,
        drop_last=shuffle and len(dataset) >= batch_size,
        num_workers=workers,
        generator=generator,
        persistent_workers=False,  # fresh workers each epoch, seeded from `generator`: exact resume
        collate_fn=_collate,
    )


def _collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = {tuple(img.shape) for img, _ in batch}
    if len(shapes) > 1:
        raise ValueError(
            f"images of one batch differ in size ({sorted(shapes)[:3]}...): evaluate full images with "
            "train.val_batch_size: 1, or set data.crop / data.resize to a fixed size"
        )
    return torch.stack([img for img, _ in batch]), torch.stack([m for _, m in batch])


def _matrix_csv(matrix: ConfusionMatrix, names: tuple[str, ...]) -> str:
    rows = ["gt\\pred," + ",".join(names)]
    for name, row in zip(names, matrix.matrix.tolist()):
        rows.append(name + "," + ",".join(str(v) for v in row))
    return "\n".join(rows) + "\n"


def _samples_npz(samples: dict[str, list[np.ndarray]], dataset: SegDataset) -> bytes:
    buf = io.BytesIO()
    images = np.stack(samples["image"]) if samples["image"] else np.zeros((0, 3, 1, 1))
    payload: dict[str, Any] = {
        "image": images.astype(np.float32),
        "target": np.stack(samples["target"]).astype(np.uint8) if samples["target"] else np.zeros((0, 1, 1), np.uint8),
        "pred": np.stack(samples["pred"]).astype(np.uint8) if samples["pred"] else np.zeros((0, 1, 1), np.uint8),
        "class_names": np.array(dataset.class_names),
        "palette": np.array(dataset.palette if dataset.palette else [], dtype=np.uint8),
    }
    np.savez_compressed(buf, **payload)
    return buf.getvalue()
