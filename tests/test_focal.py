"""The two focal losses against hand-computed values (methods.md §1) and smp's FocalLoss."""

from __future__ import annotations

import math

import pytest
import torch
from segmentation_models_pytorch.losses import FocalLoss

from studybench import IGNORE_INDEX
from studybench.losses import build_loss

LN3 = math.log(3.0)


def tiny_case():
    """Three pixels, two classes: (0, ln 3) labelled 1, (0, 0) labelled 0, one ignored pixel."""
    logits = torch.tensor([[[[0.0, 0.0, 7.0]], [[LN3, 0.0, -7.0]]]], dtype=torch.float64)
    target = torch.tensor([[[1, 0, IGNORE_INDEX]]])
    return logits, target


def test_softmax_focal_by_hand():
    logits, target = tiny_case()
    # p_y = 3/4 and 1/2; −(1 − p)^2 log p, mean over the 2 valid pixels
    want = (-(0.25**2) * math.log(0.75) - (0.5**2) * math.log(0.5)) / 2
    assert build_loss("focal")(logits, target).item() == pytest.approx(want, rel=1e-12)
    gamma0 = build_loss("focal", gamma=0.0)(logits, target).item()
    assert gamma0 == pytest.approx((-math.log(0.75) - math.log(0.5)) / 2, rel=1e-12)  # γ = 0 is CE


def test_sigmoid_focal_by_hand():
    logits, target = tiny_case()
    alpha, gamma = 0.25, 2.0

    def term(z: float, positive: bool) -> float:
        p = 1 / (1 + math.exp(-z))
        p_t = p if positive else 1 - p
        return (alpha if positive else 1 - alpha) * (1 - p_t) ** gamma * -math.log(p_t)

    # one-vs-rest per class, mean over the valid pixels, then (smp >= 0.5) mean over classes
    class0 = (term(0.0, False) + term(0.0, True)) / 2
    class1 = (term(LN3, True) + term(0.0, False)) / 2
    want = (class0 + class1) / 2
    assert build_loss("focal-sigmoid")(logits, target).item() == pytest.approx(want, rel=1e-12)


def test_sigmoid_focal_equals_smp():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 6)
    target = torch.randint(0, 5, (2, 6, 6))
    ours = build_loss("focal-sigmoid", alpha=0.25, gamma=2.0)
    smp_plain = FocalLoss(mode="multiclass", alpha=0.25, gamma=2.0)
    assert ours(logits, target).item() == pytest.approx(smp_plain(logits, target).item(), rel=1e-6)
    target[0, :3] = IGNORE_INDEX
    smp_ignore = FocalLoss(mode="multiclass", alpha=0.25, gamma=2.0, ignore_index=IGNORE_INDEX)
    assert ours(logits, target).item() == pytest.approx(smp_ignore(logits, target).item(), rel=1e-6)


@pytest.mark.parametrize("name", ["focal", "focal-sigmoid"])
def test_ignored_pixels_and_all_ignored(name):
    logits, target = tiny_case()
    loss = build_loss(name)
    changed = logits.clone()
    changed[0, :, 0, 2] = torch.tensor([-50.0, 50.0], dtype=torch.float64)  # the ignored pixel
    assert loss(changed, target).item() == pytest.approx(loss(logits, target).item(), rel=1e-12)
    logits = logits.clone().requires_grad_(True)
    value = loss(logits, torch.full_like(target, IGNORE_INDEX))
    value.backward()
    assert value.item() == 0.0 and logits.grad.abs().max().item() == 0.0
