"""The contract every loss follows, and the small masked reductions they share.

A loss is an ``nn.Module`` called as ``loss(logits[B,C,H,W], target[B,H,W] int64)`` that
returns a scalar; label 255 (and, for the losses that say so, any label >= C) is ignored.
Losses that need more than logits declare it in ``requires`` (e.g. ``{"features"}``);
the training scheme then asks the model for those outputs and passes them as keyword
arguments. After each call ``parts`` holds the detached named components of the value
(``{"bce": ..., "rmi": ...}``), which the trainer averages per epoch and logs.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from studybench import IGNORE_INDEX


class SegLoss(nn.Module):
    """Base class: subclasses implement ``forward`` and may fill ``self.parts``."""

    requires: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        super().__init__()
        self.parts: dict[str, torch.Tensor] = {}

    def _record(self, **parts: torch.Tensor) -> None:
        self.parts = {name: value.detach() for name, value in parts.items()}


def valid_mask(target: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Boolean mask of annotated pixels: not 255, and below ``num_classes`` when given."""
    mask = target != IGNORE_INDEX
    if num_classes is not None:
        mask &= (target >= 0) & (target < num_classes)
    return mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask``; 0 (with a zero gradient) when nothing is valid."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1)


def safe_target(target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Target with ignored pixels set to class 0, so it can index (their values are masked later)."""
    return torch.where(mask, target, torch.zeros_like(target))


def check_inputs(name: str, logits: torch.Tensor, target: torch.Tensor) -> None:
    """Shape errors users can act on (a bare broadcasting error helps nobody)."""
    if logits.dim() != 4:
        raise ValueError(f"loss {name!r}: logits must be [B, C, H, W], got shape {tuple(logits.shape)}")
    if target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"loss {name!r}: target must be [B, H, W] = {(logits.shape[0], *logits.shape[2:])}, "
            f"got {tuple(target.shape)}"
        )
