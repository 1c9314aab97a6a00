"""Dataset-level segmentation metrics from one confusion matrix.

Why dataset-level: averaging per-image IoU over-weights small images and classes absent
from an image; Cityscapes and mmsegmentation accumulate one confusion matrix over the
whole split and compute IoU from it. mIoU averages over the classes present in the ground
truth or the prediction (a class never seen and never predicted has no defined IoU).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from studybench import IGNORE_INDEX
from studybench.counts import class_scores, class_totals, mean_present


@dataclass(frozen=True)
class SegMetrics:
    miou: float  # mean IoU over classes present in GT or prediction
    pixel_acc: float  # aAcc: correct / valid pixels
    mean_acc: float  # mAcc: mean per-class recall over classes present in GT
    iou: list[float]  # per-class IoU, NaN where the class is absent from GT and prediction
    acc: list[float]  # per-class recall, NaN where the class is absent from GT

    def as_dict(self) -> dict[str, float]:
        return {"miou": self.miou, "pixel_acc": self.pixel_acc, "mean_acc": self.mean_acc}


class ConfusionMatrix:
    """Accumulates ``matrix[gt, pred]`` pixel counts over a dataset, on the device of the predictions.

    Each ``update`` is one ``bincount`` where the tensors live; nothing is read on the host
    until ``compute`` (or ``matrix``), so an evaluation copies the counts once instead of moving
    every batch's predictions and targets to the CPU as int64.

    Labels outside ``[0, C)`` other than the ignore index indicate a dataset/model mismatch.
    They are counted on the device (``bad``) and reported as a ``ValueError`` when the matrix is
    read: checking each batch would stop the host once per batch.

    With ``per_update`` each update's own counts are kept too (on the device; the evaluation
    updates once per image, so these are per-image counts for a bootstrap over images):
    ``update_counts`` reads them in one copy. They cost nothing to compute (the ``bincount`` is
    made anyway), only ``C² + 3`` integers of device memory per update.

    Args:
        num_classes: number of classes C.
        ignore_index: ground-truth label that is not counted.
        per_update: keep each update's counts (``update_counts``).
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, per_update: bool = False) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._counts: torch.Tensor | None = None  # flat [C*C + 2]: the matrix, bad labels, bad predictions
        self._first_bad_label: torch.Tensor | None = None
        self._host: np.ndarray | None = None  # the matrix as last read, until the next update
        self._updates: list[torch.Tensor] | None = [] if per_update else None  # each update's flat counts

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` class ids (or logits ``[B, C, H, W]``) and ``target`` ids."""
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(dim=1)
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        c, self._host = self.num_classes, None
        target = target.reshape(-1).to(pred.device, torch.int64, non_blocking=True)
        pred = pred.reshape(-1).to(torch.int64)
        valid = target != self.ignore_index
        bad_label = valid & ((target < 0) | (target >= c))
        bad_pred = valid & ((pred < 0) | (pred >= c))
        ok = valid & ~bad_label & ~bad_pred
        # Every pixel lands in one bin: a matrix cell, "bad label", "bad prediction" or the last bin (ignored).
        index = torch.where(ok, target * c + pred, c * c + 2)
        index = torch.where(bad_pred, c * c + 1, index)
        index = torch.where(bad_label, c * c, index)  # a bad label is reported before a bad prediction
        counts = torch.bincount(index, minlength=c * c + 3)[: c * c + 2]
        first = torch.where(bad_label, target, torch.iinfo(torch.int64).max).min() if target.numel() else None
        if self._updates is not None:
            self._updates.append(counts)
        if self._counts is None:  # a copy: the sum grows in place, the update's own counts must not
            self._counts, self._first_bad_label = counts.clone(), first
        else:
            self._counts += counts
            if first is not None:
                self._first_bad_label = first if self._first_bad_label is None else self._first_bad_label.minimum(first)

    @property
    def matrix(self) -> torch.Tensor:
        """The ``[C, C]`` counts on the CPU (int64), copied from the device once after the last update.
        Raises ``ValueError`` if any batch held a label or prediction outside ``[0, C)``."""
        return torch.from_numpy(self._host_counts())

    @property
    def keeps_updates(self) -> bool:
        """Whether it keeps each update's counts (``per_update``)."""
        return self._updates is not None

    def update_counts(self) -> np.ndarray:
        """Each update's ``[C, C]`` counts, ``[updates, C, C]`` int64 on the host, read in one copy; their
        sum is ``matrix``. Needs ``per_update``; checks labels and predictions as ``matrix`` does."""
        if self._updates is None:
            raise ValueError("this ConfusionMatrix keeps no per-update counts: construct it with per_update=True")
        c = self.num_classes
        self._host_counts()  # raises for labels or predictions outside [0, C)
        if not self._updates:
            return np.zeros((0, c, c), dtype=np.int64)
        return torch.stack(self._updates)[:, : c * c].cpu().numpy().reshape(-1, c, c)

    def _host_counts(self) -> np.ndarray:
        if self._counts is None:
            return np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        if self._host is None:
            self._host = self._read()
        return self._host

    def _read(self) -> np.ndarray:
        """The counts copied from the device (one copy); errors for out-of-range labels or predictions."""
        c = self.num_classes
        counts = self._counts.tolist()  # the one copy
        if counts[c * c]:
            label = int(self._first_bad_label)
            raise ValueError(f"target holds label {label} outside [0, {c}) and != {self.ignore_index}")
        if counts[c * c + 1]:
            raise ValueError(f"prediction holds a class id outside [0, {c})")
        return np.array(counts[: c * c], dtype=np.int64).reshape(c, c)

    def compute(self) -> SegMetrics:
        """The metrics of the counts so far (``counts.class_scores``: the report's bootstrap scores the same way)."""
        tp, gt, pr = class_totals(self._host_counts())
        iou, acc = class_scores(tp, gt, pr)
        total = gt.sum()
        return SegMetrics(
            miou=float(mean_present(iou)),
            pixel_acc=float(tp.sum() / total) if total > 0 else float("nan"),
            mean_acc=float(mean_present(acc)),
            iou=[float(v) for v in iou],
            acc=[float(v) for v in acc],
        )
