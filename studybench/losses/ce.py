"""Softmax cross-entropy, the baseline of every study."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from studybench import IGNORE_INDEX
from studybench.losses.base import SegLoss, check_inputs


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean softmax CE over valid pixels; 0 with zero gradient when all are ignored."""
    per_pixel = F.cross_entropy(
        logits,
        target,
        weight=class_weights,
        ignore_index=IGNORE_INDEX,
        reduction="none",
        label_smoothing=label_smoothing,
    )
    valid = target != IGNORE_INDEX
    if class_weights is None:
        denom = valid.sum().clamp_min(1).to(per_pixel.dtype)
    else:  # the weighted mean PyTorch uses for reduction="mean"
        safe = torch.where(valid, target, torch.zeros_like(target))
        denom = (class_weights[safe] * valid).sum().clamp_min(torch.finfo(per_pixel.dtype).tiny)
    return per_pixel.sum() / denom


class CrossEntropyLoss(SegLoss):
    """Softmax cross-entropy averaged over non-ignored pixels.

    Args:
        class_weights: optional per-class weights (length C).
        label_smoothing: PyTorch's label smoothing in [0, 1).
    """

    def __init__(self, class_weights: list[float] | None = None, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_inputs("ce", logits, target)
        weights = self.class_weights
        if weights is not None:
            if weights.numel() != logits.shape[1]:
                raise ValueError(
                    f"loss 'ce': class_weights has {weights.numel()} entries, logits have {logits.shape[1]} classes"
                )
            weights = weights.to(logits.dtype)
        return cross_entropy(logits, target, weights, self.label_smoothing)
