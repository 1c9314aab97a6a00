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
    """Accumulates ``matrix[gt, pred]`` pixel counts over a dataset.

    Args:
        num_classes: number of classes C; labels outside ``[0, C)`` other than the ignore
            index are an error (they indicate a dataset/model mismatch).
        ignore_index: ground-truth label that is not counted.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` class ids (or logits ``[B, C, H, W]``) and ``target`` ids."""
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(dim=1)
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        pred = pred.reshape(-1).to("cpu", torch.int64)
        target = target.reshape(-1).to("cpu", torch.int64)
        valid = target != self.ignore_index
        pred, target = pred[valid], target[valid]
        c = self.num_classes
        bad = (target < 0) | (target >= c)
        if bool(bad.any()):
            raise ValueError(f"target holds label {int(target[bad][0])} outside [0, {c}) and != {self.ignore_index}")
        if bool(((pred < 0) | (pred >= c)).any()):
            raise ValueError(f"prediction holds a class id outside [0, {c})")
        self.matrix += torch.bincount(target * c + pred, minlength=c * c).reshape(c, c)

    def merge(self, other: ConfusionMatrix) -> None:
        self.matrix += other.matrix

    def compute(self) -> SegMetrics:
        m = self.matrix.to(torch.float64).numpy()
        tp = np.diag(m)
        gt = m.sum(axis=1)
        pr = m.sum(axis=0)
        union = gt + pr - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(gt > 0, tp / gt, np.nan)
        total = m.sum()
        return SegMetrics(
            miou=float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
            pixel_acc=float(tp.sum() / total) if total > 0 else float("nan"),
            mean_acc=float(np.nanmean(acc)) if np.any(gt > 0) else float("nan"),
            iou=[float(v) for v in iou],
            acc=[float(v) for v in acc],
        )
