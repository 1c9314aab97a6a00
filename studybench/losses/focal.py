"""Focal loss: the softmax form (Lin et al.) and the sigmoid one-vs-rest form (``focal-sigmoid``).

``focal-sigmoid`` is our own code, not smp's ``FocalLoss``: smp changed its meaning between
releases (0.6 averages the per-class losses over the C classes, 0.5 and older sum them, a
factor of C), so a study's numbers would depend on the installed smp. Ours is fixed to the
average over classes (smp 0.6's semantics, see ``sigmoid_focal``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


def sigmoid_focal(
    logits: torch.Tensor, target: torch.Tensor, alpha: float | None = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """One-vs-rest sigmoid focal loss, averaged over the valid pixels V and the C classes.

    ``mean_{v in V} mean_c  w_t (1 - p_t)^γ (-log p_t)`` with ``p = sigmoid(z_c)``,
    ``p_t = p`` and ``w_t = α`` where ``y = c``, ``p_t = 1 - p`` and ``w_t = 1 - α`` elsewhere
    (``w_t = 1`` when ``alpha`` is None). This is each class's binary focal loss averaged over
    V, then averaged over classes: what smp >= 0.6 ``FocalLoss(mode="multiclass")`` returns
    (smp <= 0.5 returned C times this).
    """
    mask = valid_mask(target)
    positive = F.one_hot(safe_target(target, mask), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
    nll = F.binary_cross_entropy_with_logits(logits, positive, reduction="none")  # -log p_t, stable
    per_class = (1.0 - torch.exp(-nll)) ** gamma * nll
    if alpha is not None:
        per_class = per_class * (alpha * positive + (1.0 - alpha) * (1.0 - positive))
    return masked_mean(per_class.mean(dim=1), mask)


class SigmoidFocalLoss(SegLoss):
    """Sigmoid one-vs-rest focal loss (α, γ), mean over valid pixels and classes (``sigmoid_focal``).

    This is what Guo et al. compare against (α = 0.25, γ = 2). A batch with no valid pixel
    gives 0 with a zero gradient, as every studybench loss does.
    Reference: Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, eq. 5 (α-balanced).
    """

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0):
        super().__init__()
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] or null, got {alpha}")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_inputs("focal-sigmoid", logits, target)
        return sigmoid_focal(logits, target, self.alpha, self.gamma)
