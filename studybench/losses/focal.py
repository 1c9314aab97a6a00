"""Focal loss: the softmax form (Lin et al.) and smp's sigmoid one-vs-rest form."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import FocalLoss as _SmpFocalLoss

from studybench import IGNORE_INDEX
from studybench.losses.base import SegLoss, check_inputs, masked_mean, safe_target, valid_mask


def softmax_focal(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """``mean_V[-(1 - p_y)^γ log p_y]`` with ``p = softmax(logits)``."""
    mask = valid_mask(target)
    log_p = F.log_softmax(logits, dim=1).gather(1, safe_target(target, mask).unsqueeze(1)).squeeze(1)
    per_pixel = -((1.0 - log_p.exp()) ** gamma) * log_p
    return masked_mean(per_pixel, mask)


class SoftmaxFocalLoss(SegLoss):
    """Softmax focal loss ``-(1 - p_y)^γ log p_y`` averaged over valid pixels.

    Reference: Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, eq. 4 (α omitted).
    """

    def __init__(self, gamma: float = 2.0):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_inputs("focal", logits, target)
        return softmax_focal(logits, target, self.gamma)


class SigmoidFocalLoss(SegLoss):
    """smp's ``FocalLoss(mode="multiclass")``: per-class sigmoid focal, one-vs-rest (α, γ).

    This is what Guo et al. compare against (α = 0.25, γ = 2). smp returns NaN for a batch
    with no valid pixel; we return 0 there, as every studybench loss does.
    """

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0):
        super().__init__()
        self.inner = _SmpFocalLoss(mode="multiclass", alpha=alpha, gamma=gamma, ignore_index=IGNORE_INDEX)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_inputs("focal-sigmoid", logits, target)
        if not bool((target != IGNORE_INDEX).any()):
            return logits.sum() * 0.0
        return self.inner(logits, target)
