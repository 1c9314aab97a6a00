"""Self-Regulation loss terms (Zhang et al., ICCV 2021) as pure functions of a multi-exit output.

These are not registered losses: they need every exit of a multi-exit network (see
``models/exits.py``), so the ``self-regulation`` scheme calls them. Exits are indexed as in
``ExitOutputs``: index 0 is the final output e0, 1..4 are the auxiliary exits e1 (shallowest,
on the stem) .. e4. Teachers are always detached: a distillation term never trains its teacher.

Reference: methods.md §4. Notation: ``Z_e`` exit logits ``[B, C, H, W]``, ``q_e`` presence
logits ``[B, C]``, ``V`` the valid pixels (label != 255 and < C), ``t`` the presence targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from studybench import IGNORE_INDEX
from studybench.losses.base import masked_mean, valid_mask

Mode = Literal["paper", "code"]


def _wide(x: torch.Tensor) -> torch.Tensor:
    """Losses run in float32 at least (bf16 autocast outputs are widened)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def presence_targets(target: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-level targets ``t[B, C]`` (1 = class present in the image) and ``image_valid[B]``.

    Label 255 (and any label >= C) marks no class present; an image with no valid pixel
    says nothing about which classes are absent, so ``image_valid`` excludes it.
    """
    valid = valid_mask(target, num_classes)
    flat = torch.where(valid, target, torch.full_like(target, num_classes)).flatten(1)
    present = torch.zeros(target.shape[0], num_classes + 1, dtype=torch.bool, device=target.device)
    present.scatter_(1, flat, True)
    return present[:, :num_classes], valid.flatten(1).any(dim=1)


def soft_ce(teacher: torch.Tensor, student: torch.Tensor, tau: float) -> torch.Tensor:
    """``τ² · (−Σ_c softmax(sg teacher/τ)_c · log softmax(student/τ)_c)`` over dim 1, unreduced.

    Shape: ``[B, C, ...]`` -> ``[B, ...]``.
    """
    p_teacher = F.softmax(_wide(teacher).detach() / tau, dim=1)
    return -(tau**2) * (p_teacher * F.log_softmax(_wide(student) / tau, dim=1)).sum(dim=1)


def _seg_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CE averaged over valid pixels (0 with zero gradient when none)."""
    num_classes = logits.shape[1]
    valid = valid_mask(target, num_classes)
    safe = torch.where(valid, target, torch.full_like(target, IGNORE_INDEX))
    per_pixel = F.cross_entropy(_wide(logits), safe, ignore_index=IGNORE_INDEX, reduction="none")
    return masked_mean(per_pixel, valid)


def _image_mean(per_image_class: torch.Tensor, image_valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``[B, C]`` values over valid images and all classes (0 when no image is valid)."""
    return masked_mean(per_image_class, image_valid[:, None].expand_as(per_image_class))


def seg_loss(logits: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """``L_seg = Σ_e CE(Z_e, y)`` over the given exits, each CE a mean over V."""
    return sum((_seg_ce(z, target) for z in logits), start=logits[0].new_zeros((), dtype=_wide(logits[0]).dtype))


def cls_loss(presence: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """``L_cls = Σ_e BCE(q_e, t)``, each BCE a mean over valid images and classes."""
    num_classes = presence[0].shape[1]
    t, image_valid = presence_targets(target, num_classes)
    total = presence[0].new_zeros((), dtype=_wide(presence[0]).dtype)
    for q in presence:
        q = _wide(q)
        bce = F.binary_cross_entropy_with_logits(q, t.to(q.dtype), reduction="none")
        total = total + _image_mean(bce, image_valid)
    return total


def sr_f_loss(
    logits: Sequence[torch.Tensor], target: torch.Tensor, tau: float = 1.0, mode: Mode = "paper"
) -> torch.Tensor:
    """Shallow-to-deep SR-F: exit e1 teaches e2, e3, e4 and e0, per pixel over V.

    ``paper``: ``Σ_e τ² · mean_V[−Σ_c softmax(sg Z_1/τ)_c log softmax(Z_e/τ)_c]``;
    ``code`` (official repository): ``Σ_e CE(Z_e, argmax Z_1)`` over V.

    Args:
        logits: ``[Z_0, Z_1, Z_2, Z_3, Z_4]``, each ``[B, C, H, W]``.
        target: ``[B, H, W]`` labels (only which pixels are valid is used).
    """
    teacher, students = logits[1], [*logits[2:], logits[0]]
    valid = valid_mask(target, teacher.shape[1])
    total = teacher.new_zeros((), dtype=_wide(teacher).dtype)
    if mode == "paper":
        for z in students:
            total = total + masked_mean(soft_ce(teacher, z, tau), valid)
    elif mode == "code":
        pseudo = torch.where(valid, teacher.detach().argmax(dim=1), torch.full_like(target, IGNORE_INDEX))
        for z in students:
            total = total + _seg_ce(z, pseudo)
    else:
        raise ValueError(f"mode must be 'paper' or 'code', got {mode!r}")
    return total


def sr_l_loss(
    presence: Sequence[torch.Tensor], target: torch.Tensor, tau: float = 1.0, mode: Mode = "paper"
) -> torch.Tensor:
    """Deep-to-shallow SR-L: e0's presence logits teach those of e1..e4.

    ``code`` (official repository): ``Σ_{e=1..4} BCE(q_e, sg σ(q_0))``, mean over valid images
    and classes; ``paper``: ``Σ_e τ² · mean_images[−Σ_c softmax(sg q_0/τ)_c log softmax(q_e/τ)_c]``.
    Images without a valid pixel are left out, like everywhere else.

    Args:
        presence: ``[q_0, q_1, .., q_4]``, each ``[B, C]``.
        target: ``[B, H, W]`` labels (only which images have a valid pixel is used).
    """
    teacher, students = presence[0], presence[1:]
    _, image_valid = presence_targets(target, teacher.shape[1])
    total = teacher.new_zeros((), dtype=_wide(teacher).dtype)
    if mode == "paper":
        for q in students:
            total = total + masked_mean(soft_ce(teacher, q, tau), image_valid)
    elif mode == "code":
        soft = torch.sigmoid(_wide(teacher).detach())
        for q in students:
            bce = F.binary_cross_entropy_with_logits(_wide(q), soft, reduction="none")
            total = total + _image_mean(bce, image_valid)
    else:
        raise ValueError(f"mode must be 'paper' or 'code', got {mode!r}")
    return total
