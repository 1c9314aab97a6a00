"""Evaluation of a run's networks against the native label maps, and the artifacts it leaves.

The evaluation loader yields lists (``train.val_loader_for``): network inputs, possibly resized,
and masks at their native size. Consecutive inputs of one size are forwarded as one batch; each
image's logits are then upsampled (bilinear) to its mask's size before the argmax, as the
official Cityscapes/VOC evaluators and mmsegmentation score predictions. The confusion matrix
stays on the device (``metrics.ConfusionMatrix``); the host reads it once per evaluation, plus
the few predictions kept as samples.

The matrix also keeps each image's own counts (the ``bincount`` it makes per image anyway), so a
run's final evaluation can log them (``image_counts_npz``) and the report can bootstrap over
validation images (``report.images``). They stay on the device and are read only when logged.
"""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from studybench import IGNORE_INDEX
from studybench.counts import write_image_counts
from studybench.data import SegDataset
from studybench.data.carve import sample_ids
from studybench.metrics import ConfusionMatrix, SegMetrics
from studybench.store.layout import ARTIFACT_IMAGE_COUNTS, TAG_IMAGE_COUNTS

#: Inputs are padded to a multiple of this (smp encoders downsample by up to 32).
SIZE_MULTIPLE = 32
#: Validation images kept as the sample-prediction artifact.
NUM_SAMPLES = 4
#: Device memory the per-image counts may take (``images × (C² + 3)`` int64): VOC's 1,449 × 21² take 5 MB;
#: beyond this (hundreds of classes over thousands of images) an evaluation keeps none and logs none.
MAX_IMAGE_COUNTS_BYTES = 256 * 2**20

Evaluation = tuple[SegMetrics, ConfusionMatrix, dict[str, list[np.ndarray]]]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: Any,
    num_classes: int,
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Evaluation:
    """Dataset-level metrics of ``model`` on ``loader``, its confusion matrix and the first few predictions."""
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(
        num_classes, per_update=keeps_image_counts(len(getattr(loader, "dataset", ())), num_classes)
    )
    kept: dict[str, list[np.ndarray]] = defaultdict(list)
    for images, masks in loader:
        for start, stop in _same_size_runs(images):
            batch = torch.stack(images[start:stop]).to(device, non_blocking=True, memory_format=memory_format)
            logits = predict(model, batch)
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


def keeps_image_counts(images: int, num_classes: int) -> bool:
    """Whether an evaluation of ``images`` keeps per-image counts (``MAX_IMAGE_COUNTS_BYTES``)."""
    return images * (num_classes**2 + 3) * 8 <= MAX_IMAGE_COUNTS_BYTES


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


def matrix_csv(matrix: ConfusionMatrix, names: tuple[str, ...]) -> str:
    """The confusion matrix as CSV, rows = ground truth, columns = prediction."""
    rows = ["gt\\pred," + ",".join(names)]
    for name, row in zip(names, matrix.matrix.tolist()):
        rows.append(name + "," + ",".join(str(v) for v in row))
    return "\n".join(rows) + "\n"


def samples_npz(samples: dict[str, list[np.ndarray]], dataset: SegDataset) -> bytes:
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


def log_image_counts(recorder: Any, matrix: ConfusionMatrix, dataset: SegDataset, prefix: str) -> None:
    """Log the per-image counts as ``<prefix>image_counts.npz`` (nothing if the evaluation kept none).

    The headline network's (no ``prefix``) also tags the run with its number of images, so a report
    finds the runs that have them in the one read of the store it makes anyway and downloads only theirs.
    """
    payload = image_counts_npz(matrix, dataset)
    if payload is None:
        return
    recorder.log_bytes(payload, f"{prefix}{ARTIFACT_IMAGE_COUNTS}")
    if not prefix:
        recorder.set_tags({TAG_IMAGE_COUNTS: str(len(dataset))})


def image_counts_npz(matrix: ConfusionMatrix, dataset: SegDataset) -> bytes | None:
    """The per-image confusion counts of an evaluation of ``dataset`` in order (``counts.write_image_counts``),
    or None when the evaluation kept none (``keeps_image_counts``) or scored another number of images."""
    if not matrix.keeps_updates:
        return None
    per_image = matrix.update_counts()
    ids = image_ids(dataset)
    if len(per_image) != len(ids):
        return None
    return write_image_counts(per_image, ids, list(dataset.class_names))


def image_ids(dataset: SegDataset) -> list[str]:
    """The id of each image of ``dataset`` (a carved part names the images of its base dataset)."""
    base, indices = getattr(dataset, "base", None), getattr(dataset, "indices", None)
    if base is not None and indices is not None:
        ids = sample_ids(base)
        return [ids[i] for i in indices]
    return sample_ids(dataset)


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
