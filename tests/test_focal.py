"""The two focal losses against hand-computed values (methods.md §1), a naive loop, and smp's FocalLoss."""

from __future__ import annotations

import math

import pytest
import segmentation_models_pytorch as smp
import torch
from packaging.version import Version
from segmentation_models_pytorch.losses import FocalLoss

from studybench import IGNORE_INDEX
from studybench.losses import build_loss
from studybench.losses.focal import sigmoid_focal

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

    # one-vs-rest per class, mean over the valid pixels, then mean over classes (pinned: smp 0.6's meaning)
    class0 = (term(0.0, False) + term(0.0, True)) / 2
    class1 = (term(LN3, True) + term(0.0, False)) / 2
    want = (class0 + class1) / 2
    assert build_loss("focal-sigmoid")(logits, target).item() == pytest.approx(want, rel=1e-12)


def naive_sigmoid_focal(logits: torch.Tensor, target: torch.Tensor, alpha: float | None, gamma: float) -> float:
    """The definition as plain Python loops in float64: per class, mean over valid pixels; then mean over classes."""
    batch, classes, height, width = logits.shape
    per_class = []
    for c in range(classes):
        total, count = 0.0, 0
        for b in range(batch):
            for i in range(height):
                for j in range(width):
                    y = int(target[b, i, j])
                    if y == IGNORE_INDEX:
                        continue
                    p = 1.0 / (1.0 + math.exp(-float(logits[b, c, i, j])))
                    p_t, w = (p, alpha) if y == c else (1.0 - p, None if alpha is None else 1.0 - alpha)
                    total += (1.0 if w is None else w) * (1.0 - p_t) ** gamma * -math.log(p_t)
                    count += 1
        per_class.append(total / count)
    return sum(per_class) / classes


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (None, 2.0), (0.6, 0.0), (0.25, 1.5)])
def test_sigmoid_focal_equals_a_naive_loop(alpha, gamma):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64) * 3
    target = torch.randint(0, 4, (2, 3, 5), generator=g)
    target[0, 1, :2] = IGNORE_INDEX
    value = build_loss("focal-sigmoid", alpha=alpha, gamma=gamma)(logits, target).item()
    assert value == pytest.approx(naive_sigmoid_focal(logits, target, alpha, gamma), rel=1e-12)


def test_sigmoid_focal_gradcheck():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(1, 3, 4, 4, generator=g, dtype=torch.float64).requires_grad_()
    target = torch.randint(0, 3, (1, 4, 4), generator=g)
    target[0, 0, 0] = IGNORE_INDEX
    assert torch.autograd.gradcheck(lambda z: sigmoid_focal(z, target, 0.25, 2.0), (logits,))


def test_sigmoid_focal_against_the_installed_smp():
    """smp >= 0.6 gives our value; smp <= 0.5 summed the classes, C times ours (why we pin our own)."""
    torch.manual_seed(0)
    classes = 5
    logits = torch.randn(2, classes, 6, 6, dtype=torch.float64)
    target = torch.randint(0, classes, (2, 6, 6))
    target[0, :3] = IGNORE_INDEX
    ours = build_loss("focal-sigmoid", alpha=0.25, gamma=2.0)(logits, target).item()
    theirs = FocalLoss(mode="multiclass", alpha=0.25, gamma=2.0, ignore_index=IGNORE_INDEX)(logits, target).item()
    factor = 1 if Version(smp.__version__) >= Version("0.6") else classes
    assert theirs == pytest.approx(factor * ours, rel=1e-10)


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
