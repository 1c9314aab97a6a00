"""Scores from confusion counts, and the per-image counts artifact; numpy only (no torch).

``metrics.ConfusionMatrix.compute`` and the report's bootstrap over images (``report.images``)
both score through ``class_scores``, so a resampled mIoU follows exactly the rules of the
logged one: IoU per class from the summed counts, NaN for a class absent from both ground truth
and prediction, mIoU the mean over the other classes. The report never imports torch, so this
lives outside ``metrics``.

Every score is a function of three additive per-class totals (``class_totals``: true positives,
ground-truth pixels, predicted pixels), so the totals of a set of images are the sums of theirs.

The artifact (``write_image_counts``, ``read_image_counts``) is one compressed npz: ``counts``
``[images, C, C]`` (rows = ground truth, columns = prediction; int32 while every count fits,
else int64), the image ``ids`` in evaluation order and the ``class_names``.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np

_COUNTS, _IDS, _NAMES = "counts", "ids", "class_names"


def class_totals(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tp, gt, pred)`` per class of confusion matrices ``counts [..., C, C]``, as float64 (leading axes kept)."""
    m = np.asarray(counts, dtype=np.float64)
    return np.diagonal(m, axis1=-2, axis2=-1).copy(), m.sum(axis=-1), m.sum(axis=-2)


def class_scores(tp: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class IoU and recall ``[..., C]`` from the totals; NaN where a class has no union (IoU) or no
    ground truth (recall)."""
    union = gt + pred - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    return iou, acc


def mean_present(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis of the defined (non-NaN) values; NaN where none is defined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": NaN is the answer
        return np.nanmean(values, axis=-1)


def miou(counts: np.ndarray) -> np.ndarray:
    """mIoU of confusion matrices ``counts [..., C, C]`` (leading axes kept), by the rule of ``ConfusionMatrix``."""
    return mean_present(class_scores(*class_totals(counts))[0])


@dataclass(frozen=True)
class ImageCounts:
    """One run's per-image confusion counts as read from its artifact."""

    counts: np.ndarray  # [images, C, C] int64
    ids: list[str]
    class_names: list[str]


def write_image_counts(counts: np.ndarray, ids: list[str], class_names: list[str]) -> bytes:
    """The artifact's bytes: a compressed npz (int32 counts when they fit; most cells are 0, so it compresses well)."""
    counts = _checked(np.asarray(counts), ids, class_names)
    small = counts.size == 0 or counts.max() <= np.iinfo(np.int32).max
    buf = io.BytesIO()
    payload = {_COUNTS: counts.astype(np.int32 if small else np.int64), _IDS: np.array(ids, dtype=str)}
    np.savez_compressed(buf, **payload, **{_NAMES: np.array(class_names, dtype=str)})
    return buf.getvalue()


def read_image_counts(data: bytes) -> ImageCounts:
    """The artifact back (``ValueError`` if it is not one)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        missing = {_COUNTS, _IDS, _NAMES} - set(npz.files)
        if missing:
            raise ValueError(f"not a per-image counts artifact: no {', '.join(sorted(missing))}")
        counts, ids, names = npz[_COUNTS].astype(np.int64), npz[_IDS].tolist(), npz[_NAMES].tolist()
    return ImageCounts(_checked(counts, ids, names), ids, names)


def _checked(counts: np.ndarray, ids: list[str], names: list[str]) -> np.ndarray:
    """``counts`` if it is ``[len(ids), C, C]`` with C = len(names), else ``ValueError``."""
    if counts.ndim != 3 or counts.shape[1:] != (len(names), len(names)) or len(counts) != len(ids):
        raise ValueError(
            f"per-image counts of shape {counts.shape} do not fit {len(ids)} images x {len(names)} classes"
        )
    return counts


__all__ = [
    "ImageCounts",
    "class_scores",
    "class_totals",
    "mean_present",
    "miou",
    "read_image_counts",
    "write_image_counts",
]
