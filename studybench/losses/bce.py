"""Sigmoid one-vs-rest binary cross-entropy with the RMI paper's normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from studybench.losses.base import SegLoss, check_inputs, safe_target, valid_mask


def sigmoid_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``Σ_{valid pixels, classes} BCEWithLogits(z, onehot(y)) / (M + 1)``.

    As in the official RMI code: summed (not averaged) over classes, divided by the number
    of valid pixels plus one; labels >= C count as ignored. Half-precision logits are
    computed in float32.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    num_classes = logits.shape[1]
    mask = valid_mask(target, num_classes)
    onehot = F.one_hot(safe_target(target, mask), num_classes).permute(0, 3, 1, 2).to(logits.dtype)
    onehot = onehot * mask.unsqueeze(1)
    per_entry = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    total = (per_entry * mask.unsqueeze(1)).sum()
    return total / (mask.sum().to(logits.dtype) + 1.0)


class SigmoidBCELoss(SegLoss):
    """One-vs-rest sigmoid BCE (Zhao et al. 2019 normalisation: sum over classes, / (M+1))."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_inputs("bce", logits, target)
        return sigmoid_bce(logits, target)
