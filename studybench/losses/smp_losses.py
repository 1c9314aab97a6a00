"""Region losses taken from segmentation-models-pytorch, not rewritten (methods.md §1)."""

from __future__ import annotations

import torch
from segmentation_models_pytorch import losses as smp_losses

from studybench import IGNORE_INDEX
from studybench.losses.base import SegLoss, check_inputs


class _SmpLoss(SegLoss):
    """Adapter: multiclass mode, ignore label 255, and 0 for an all-ignored batch.

    Dice and Tversky need no shortcut for the all-ignored batch: smp masks the ignored pixels
    and zeroes the classes absent from the target, so the inner loss is already 0 with a zero
    gradient there (tested). Asking the device whether any pixel is valid would stop the host
    at every step for a case that needs nothing. Lovász (``empty_needs_shortcut``) returns an
    empty tensor for no valid pixel, so it keeps the check; its own algorithm reads per-class
    counts on the host anyway.
    """

    name = "smp"
    empty_needs_shortcut = False

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_inputs(self.name, logits, target)
        if self.empty_needs_shortcut and not bool((target != IGNORE_INDEX).any()):
            return logits.sum() * 0.0
        return self.inner(logits, target)


class DiceLoss(_SmpLoss):
    """smp ``DiceLoss(mode="multiclass")`` over softmax probabilities."""

    name = "dice"

    def __init__(self, smooth: float = 0.0, log_loss: bool = False):
        super().__init__(smp_losses.DiceLoss("multiclass", smooth=smooth, log_loss=log_loss, ignore_index=IGNORE_INDEX))


class LovaszLoss(_SmpLoss):
    """smp ``LovaszLoss(mode="multiclass")`` (Lovász-softmax, Berman et al. 2018)."""

    name = "lovasz"
    empty_needs_shortcut = True

    def __init__(self, per_image: bool = False):
        super().__init__(smp_losses.LovaszLoss("multiclass", per_image=per_image, ignore_index=IGNORE_INDEX))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # smp's Lovász gradient vector is float32 whatever the input (torch.dot then fails on
        # float64): compute in float32 and return in the caller's dtype
        return super().forward(logits.float(), target).to(logits.dtype)


class JaccardLoss(_SmpLoss):
    """smp ``JaccardLoss(mode="multiclass")`` (soft IoU)."""

    name = "jaccard"

    def __init__(self, smooth: float = 0.0, log_loss: bool = False):
        super().__init__(smp_losses.JaccardLoss("multiclass", smooth=smooth, log_loss=log_loss))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # smp's JaccardLoss has no ignore_index: zero the ignored pixels' contribution ourselves. Selecting
        # the valid pixels reads their count on the host (a sync on CUDA) whatever we do, so the shortcut stays.
        check_inputs(self.name, logits, target)
        valid = target != IGNORE_INDEX
        if not bool(valid.any()):
            return logits.sum() * 0.0
        return _region_loss_with_ignore(self.inner, logits, target, valid)


class TverskyLoss(_SmpLoss):
    """smp ``TverskyLoss(mode="multiclass")`` (α weighs false positives, β false negatives)."""

    name = "tversky"

    def __init__(self, alpha: float = 0.5, beta: float = 0.5, gamma: float = 1.0):
        super().__init__(
            smp_losses.TverskyLoss("multiclass", alpha=alpha, beta=beta, gamma=gamma, ignore_index=IGNORE_INDEX)
        )


def _region_loss_with_ignore(inner, logits, target, valid):
    """Run an smp region loss on valid pixels only, as a [1, C, 1, V] image."""
    flat_logits = logits.permute(1, 0, 2, 3)[:, valid].unsqueeze(0).unsqueeze(2)
    flat_target = target[valid].view(1, 1, -1)
    return inner(flat_logits, flat_target)
