"""Execute one RunSpec end to end: data -> scheme (model, loss, optimiser) -> epochs -> metrics.

Reads top to bottom: ``execute`` builds everything, loops over epochs (train, then
evaluate every network of the scheme), and returns the final metrics and costs. It never
imports the study config or the grid, and it writes only through the ``Recorder`` it is
given (MLflow in practice, see ``tracking``), so it can run in any process or on any node.
With ``checkpoints`` it saves its state after every epoch and continues from there when it
finds a checkpoint of its run key (see ``checkpoint``); ``faults.inject`` marks the points
where crash tests kill it.

The protocol that makes methods comparable (design.md, "Protocol") is kept here and in the
modules it calls: every source of randomness has its own stream derived from the seed
(``rng``: data order and per-sample augmentation via ``data.sampler``, initial weights per
network role, the method's own draws on the global generators), so one seed gives one data
order and one augmentation per sample whatever the method and the number of loader workers;
predictions are scored against the native label maps (logits upsampled to each mask's size);
losses are computed in float32 (``schemes.base``); ``train.deterministic`` sets PyTorch's
reproducibility switches and records them as tags.
"""

from __future__ import annotations

import io
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from studybench import IGNORE_INDEX, faults
from studybench.checkpoint import Checkpoints, Fallback, rng_state, set_rng_state
from studybench.data import SegDataset, build_dataset
from studybench.data.sampler import EpochSampler
from studybench.measure import PeakMemory, Timer, count_params
from studybench.metrics import ConfusionMatrix, SegMetrics
from studybench.rng import deterministic_mode, seed_method_stream, torch_generator
from studybench.schemes import Scheme, build_scheme
from studybench.spec import RunSpec
from studybench.store.layout import (
    ARTIFACT_CONFUSION,
    ARTIFACT_SAMPLES,
    EVAL_CROP,
    EVAL_NATIVE,
    TAG_EVAL_LABELS,
    TAG_RESUMED_EPOCH,
    TAG_RESUMED_RUN,
)

#: Inputs are padded to a multiple of this (smp encoders downsample by up to 32).
SIZE_MULTIPLE = 32
#: Validation images kept as the sample-prediction artifact.
NUM_SAMPLES = 4


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
    with deterministic_mode(spec.config.train.deterministic) as switches:
        eval_labels = EVAL_CROP if spec.config.data.eval_on == "crop" else EVAL_NATIVE
        recorder.set_tags({**switches, TAG_EVAL_LABELS: eval_labels})
        return _execute(spec, recorder, progress, checkpoints if spec.config.train.checkpoint else None)


def _execute(
    spec: RunSpec, recorder: Recorder, progress: Progress | None, checkpoints: Checkpoints | None
) -> RunResult:
    cfg = spec.config
    wall = time.perf_counter()
    device = resolve_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)

    train_set = build_dataset(cfg.data, cfg.data.train_split, train=True)
    val_set = build_dataset(cfg.data, cfg.data.val_split, train=False)
    train_loader = train_loader_for(train_set, cfg.train.batch_size, spec.seed, cfg.data.num_workers)
    val_batch = cfg.train.val_batch_size or cfg.train.batch_size
    val_loader = val_loader_for(val_set, val_batch, spec.seed, cfg.data.num_workers)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError(f"training split has {len(train_set)} images, fewer than batch_size={cfg.train.batch_size}")
    total_steps = cfg.train.iterations or cfg.train.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)

    with PeakMemory(device) as peak:
        scheme = build_scheme(cfg, train_set.num_classes, device, total_steps, seed=spec.seed)
        seed_method_stream(spec.seed)  # after the networks are built: only the method draws from it
        state = _resume(spec, scheme, recorder, checkpoints)
        step_timer = Timer(device)
        step_timer.samples, scheme.loss_timer.samples = state.step_samples, state.loss_samples
        results = None
        for epoch in range(state.epoch, epochs):
            epoch_start = time.perf_counter()
            if progress:
                progress.epoch_started(epoch, epochs, min(steps_per_epoch, total_steps - state.step))
            means = train_one_epoch(spec, scheme, train_loader, epoch, state, total_steps, step_timer, progress)
            state.train_s += time.perf_counter() - epoch_start

            faults.inject("eval", epoch, spec.name)
            t0 = time.perf_counter()
            results = evaluate_scheme(scheme, val_loader, train_set.num_classes, device)
            state.eval_s += time.perf_counter() - t0
            curves = {f"train/{name}": value for name, value in means.items()}
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
                checkpoints.save(spec, _checkpoint(state, scheme, recorder))
        if results is None:  # resumed after the last epoch: only the final evaluation is left
            results = evaluate_scheme(scheme, val_loader, train_set.num_classes, device)
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
        recorder.log_text(_matrix_csv(matrix, val_set.class_names), f"{prefix}{ARTIFACT_CONFUSION}")
        recorder.log_bytes(_samples_npz(samples, val_set), f"{prefix}{ARTIFACT_SAMPLES}")

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


def train_one_epoch(
    spec: RunSpec,
    scheme: Scheme,
    loader: DataLoader,
    epoch: int,
    state: TrainState,
    total_steps: int,
    step_timer: Timer,
    progress: Progress | None = None,
) -> dict[str, float]:
    """One pass over ``loader`` in the order of ``epoch`` (stopping at ``total_steps``); the mean
    loss and loss parts of its steps."""
    scheme.set_train(True)
    loader.sampler.set_epoch(epoch)  # the order and augmentations of this epoch, whatever came before
    device = scheme.device
    sums: dict[str, float] = defaultdict(float)
    seen = 0
    for images, target in loader:
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
    return {name: total / max(seen, 1) for name, total in sums.items()}


def _resume(spec: RunSpec, scheme: Scheme, recorder: Recorder, checkpoints: Checkpoints | None) -> TrainState:
    """Restore the run's checkpoint if there is one; re-log its curves into this MLflow run.

    Data order and augmentation are functions of (seed, epoch), so the epoch reached is all
    the loader needs; the global generators (the method's stream) are restored from the file.
    """
    payload = checkpoints.load(spec) if checkpoints else None
    if payload is None:
        return TrainState()
    before = Fallback(scheme)
    try:
        state = TrainState(**payload["state"])
        scheme.load_state_dict(payload["scheme"])
        set_rng_state(payload["rng"])
    except Exception as err:  # noqa: BLE001 - a checkpoint that does not fit this run: start over, not fail forever
        before.restore()
        checkpoints.set_aside(spec, f"it does not fit this run: {type(err).__name__}: {err}")
        return TrainState()
    for epoch, curves in enumerate(state.history):
        recorder.log_metrics(curves, step=epoch)
    recorder.set_tags({TAG_RESUMED_EPOCH: str(state.epoch), TAG_RESUMED_RUN: str(payload.get("run_id"))})
    return state


def _checkpoint(state: TrainState, scheme: Scheme, recorder: Recorder) -> dict[str, Any]:
    return {
        "epoch": state.epoch,
        "run_id": getattr(recorder, "run_id", None),
        "state": asdict(state),
        "scheme": scheme.state_dict(),
        "rng": rng_state(),
    }


def evaluate_scheme(
    scheme: Scheme, loader: DataLoader, num_classes: int, device: torch.device
) -> dict[str, tuple[SegMetrics, ConfusionMatrix, dict[str, np.ndarray]]]:
    """``evaluate`` for every network of the scheme, by role."""
    return {role: evaluate(net, loader, num_classes, device) for role, net in scheme.networks.items()}


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, loader: DataLoader, num_classes: int, device: torch.device
) -> tuple[SegMetrics, ConfusionMatrix, dict[str, np.ndarray]]:
    """Dataset-level metrics of ``model`` on ``loader``, plus the first few predictions.

    The loader yields lists (``val_loader_for``): network inputs, possibly resized, and masks
    at their native size. Consecutive inputs of one size are forwarded as one batch; each
    image's logits are then upsampled (bilinear) to its mask's size before the argmax, as the
    official Cityscapes/VOC evaluators and mmsegmentation score predictions.
    """
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes)
    kept: dict[str, list[np.ndarray]] = defaultdict(list)
    for images, masks in loader:
        for start, stop in _same_size_runs(images):
            logits = predict(model, torch.stack(images[start:stop]).to(device))
            for image, mask, logit in zip(images[start:stop], masks[start:stop], logits):
                size = tuple(mask.shape)
                pred = _to_size(logit, size).argmax(dim=0)
                matrix.update(pred, mask)
                if len(kept["pred"]) < NUM_SAMPLES:  # the input at the mask's size: the panels line up
                    kept["image"].append(_to_size(image, size).numpy())
                    kept["target"].append(mask.numpy())
                    kept["pred"].append(pred.cpu().numpy())
    model.train(was_training)
    return matrix.compute(), matrix, kept


def predict(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, C, H, W]`` of ``images`` (padded to the size multiple for the network, cropped back)."""
    h, w = images.shape[-2:]
    padded = F.pad(images, (0, (-w) % SIZE_MULTIPLE, 0, (-h) % SIZE_MULTIPLE))
    return model(padded)[..., :h, :w]


def _to_size(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """``x [C, h, w]`` resized bilinearly to ``size`` (half-pixel centres, ``align_corners=False``,
    as mmsegmentation resizes logits to the original image); unchanged if it has that size."""
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]


def _same_size_runs(images: list[torch.Tensor]) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of consecutive images of one size (each range is one forward pass)."""
    runs: list[tuple[int, int]] = []
    for i, image in enumerate(images):
        if runs and images[runs[-1][0]].shape == image.shape:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


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
    """Seed the global generators as a run does before its first step (the method's stream, see ``rng``)."""
    seed_method_stream(seed)


def train_loader_for(dataset: SegDataset, batch_size: int, seed: int, workers: int) -> DataLoader:
    """Shuffled full batches in the order of ``(seed, epoch)``, each sample augmented from its own
    stream (``EpochSampler``): the batches are the same whatever ``workers`` is."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), seed),
        drop_last=len(dataset) >= batch_size,
        num_workers=workers,
        generator=torch_generator(seed, "workers"),  # workers' own seeds; never the global generator
        persistent_workers=False,
        collate_fn=_collate,
    )


def val_loader_for(dataset: SegDataset, batch_size: int, seed: int, workers: int) -> DataLoader:
    """The evaluation split in order, as lists of inputs and native-size masks (see ``evaluate``)."""
    return DataLoader(
        dataset,
        batch_size=min(batch_size, len(dataset)),
        shuffle=False,
        num_workers=workers,
        generator=torch_generator(seed, "workers"),
        persistent_workers=False,
        collate_fn=_collate_lists,
    )


def _collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = {tuple(img.shape) for img, _ in batch}
    if len(shapes) > 1:
        raise ValueError(
            f"training images of one batch differ in size ({sorted(shapes)[:3]}...): set data.crop, or "
            "data.resize to [height, width]"
        )
    return torch.stack([img for img, _ in batch]), torch.stack([m for _, m in batch])


def _collate_lists(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Evaluation batches stay lists: inputs and native masks may differ in size from image to image."""
    return [img for img, _ in batch], [m for _, m in batch]


def _matrix_csv(matrix: ConfusionMatrix, names: tuple[str, ...]) -> str:
    rows = ["gt\\pred," + ",".join(names)]
    for name, row in zip(names, matrix.matrix.tolist()):
        rows.append(name + "," + ",".join(str(v) for v in row))
    return "\n".join(rows) + "\n"


def _samples_npz(samples: dict[str, list[np.ndarray]], dataset: SegDataset) -> bytes:
    """The kept predictions as one npz; samples of different native sizes are padded to the largest
    (images with 0, labels with 255, shown as "ignore")."""
    buf = io.BytesIO()
    payload: dict[str, Any] = {
        "image": _stack_padded(samples["image"], 0.0, (0, 3, 1, 1)).astype(np.float32),
        "target": _stack_padded(samples["target"], IGNORE_INDEX, (0, 1, 1)).astype(np.uint8),
        "pred": _stack_padded(samples["pred"], IGNORE_INDEX, (0, 1, 1)).astype(np.uint8),
        "class_names": np.array(dataset.class_names),
        "palette": np.array(dataset.palette if dataset.palette else [], dtype=np.uint8),
    }
    np.savez_compressed(buf, **payload)
    return buf.getvalue()


def _stack_padded(arrays: list[np.ndarray], fill: float, empty: tuple[int, ...]) -> np.ndarray:
    """Stack arrays ``[..., H, W]`` padded at the bottom/right with ``fill`` to the largest H and W."""
    if not arrays:
        return np.zeros(empty)
    h = max(a.shape[-2] for a in arrays)
    w = max(a.shape[-1] for a in arrays)
    out = np.full((len(arrays), *arrays[0].shape[:-2], h, w), fill, dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i, ..., : a.shape[-2], : a.shape[-1]] = a
    return out
