"""Center loss: hand-computed values, the centre update rule, modes, ignore label, resizing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from studybench import IGNORE_INDEX
from studybench.losses import build_loss
from studybench.losses.center import CenterLoss

IGN = IGNORE_INDEX


def tiny_case():
    """One image, 2×2 pixels, 2-dim features, 3 classes; one pixel ignored."""
    features = torch.tensor([[[[1.0, 3.0], [0.0, 5.0]], [[2.0, -1.0], [4.0, 7.0]]]], dtype=torch.float64)
    target = torch.tensor([[[0, 0], [2, IGN]]])
    logits = torch.tensor([[[[2.0, 0.0], [1.0, 9.0]], [[0.0, 1.0], [0.0, 9.0]], [[0.0, 0.0], [3.0, 9.0]]]])
    return logits.double(), target, features


def test_value_and_update_by_hand():
    logits, target, features = tiny_case()
    loss = build_loss("center", alpha=0.5, weight=0.1)
    assert loss.requires == frozenset({"features"})
    value = loss(logits, target, features=features)
    # pixels used: (1, 2) class 0, (3, -1) class 0, (0, 4) class 2; centres start at 0
    center = 0.5 * ((1 + 4) + (9 + 1) + (0 + 16)) / 3
    ce = F.cross_entropy(logits, target, ignore_index=IGN).item()
    assert loss.parts["center"].item() == pytest.approx(center)
    assert loss.parts["ce"].item() == pytest.approx(ce)
    assert value.item() == pytest.approx(ce + 0.1 * center)
    # Δc_0 = ((0 − (1, 2)) + (0 − (3, −1))) / 3 = (−4/3, −1/3); Δc_2 = (0 − (0, 4)) / 2; c ← c − ½Δc
    want = torch.tensor([[2 / 3, 1 / 6], [0.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(loss.centers, want)
    # the second step uses the moved centres
    loss(logits, target, features=features)
    center2 = 0.5 * (((1 - 2 / 3) ** 2 + (2 - 1 / 6) ** 2) + ((3 - 2 / 3) ** 2 + (-1 - 1 / 6) ** 2) + (0 + 9)) / 3
    assert loss.parts["center"].item() == pytest.approx(center2)


def test_update_matches_formula_on_random_batch():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 6)
    target = torch.randint(0, 4, (2, 6, 6))
    target[0, :2] = IGN
    features = torch.randn(2, 5, 6, 6)
    loss = CenterLoss(alpha=0.3)
    loss(logits, target, features=features)  # first call creates (zero) centres and moves them
    before = loss.centers.clone()
    loss(logits, target, features=features)
    x = features.permute(0, 2, 3, 1).reshape(-1, 5)
    y = target.reshape(-1)
    want = before.clone()
    for j in range(4):
        sel = y == j
        delta = (before[j] - x[sel]).sum(0) / (1 + sel.sum())
        want[j] = before[j] - 0.3 * delta
    torch.testing.assert_close(loss.centers, want)


def test_gradient_reaches_features_not_centres():
    logits, target, features = tiny_case()
    features.requires_grad_(True)
    loss = CenterLoss(weight=2.0)
    loss.centers = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    centres = loss.centers.clone()
    loss(logits, target, features=features).backward()
    x = features.detach().permute(0, 2, 3, 1).reshape(-1, 2)
    y = target.reshape(-1)
    want = torch.zeros_like(x)
    used = y != IGN
    want[used] = 2.0 * (x[used] - centres[y[used]]) / used.sum()  # λ · (x − c) / N
    torch.testing.assert_close(features.grad.permute(0, 2, 3, 1).reshape(-1, 2), want)
    assert not loss.centers.requires_grad


def test_eval_mode_does_not_update():
    logits, target, features = tiny_case()
    loss = CenterLoss().eval()
    loss(logits, target, features=features)
    assert loss.centers.shape == (3, 2) and loss.centers.abs().max().item() == 0.0
    loss.train()
    loss(logits, target, features=features)
    assert loss.centers.abs().max().item() > 0


def test_ignored_pixels_excluded():
    logits, target, features = tiny_case()
    other = features.clone()
    other[0, :, 1, 1] = torch.tensor([100.0, -100.0])  # the ignored pixel
    other.requires_grad_(True)
    a, b = CenterLoss(), CenterLoss()
    va, vb = a(logits, target, features=features), b(logits, target, features=other)
    assert va.item() == pytest.approx(vb.item())
    torch.testing.assert_close(a.centers, b.centers)
    vb.backward()
    assert other.grad[0, :, 1, 1].abs().max().item() == 0.0


def test_all_ignored_gives_zero_and_no_update():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    features = torch.randn(2, 6, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), IGN)
    loss = CenterLoss()
    value = loss(logits, target, features=features)
    value.backward()
    assert value.item() == 0.0
    assert logits.grad.abs().max().item() == 0.0 and features.grad.abs().max().item() == 0.0
    assert loss.centers.abs().max().item() == 0.0


def test_low_resolution_features_use_nearest_labels():
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 8, 8)
    target = torch.randint(0, 3, (1, 8, 8))
    target[0, 4, 0] = IGN
    features = torch.randn(1, 4, 2, 2)
    loss = CenterLoss()
    loss(logits, target, features=features)
    small = target[:, ::4, ::4]  # PyTorch "nearest": the top-left label of each 4×4 block
    x = features.permute(0, 2, 3, 1).reshape(-1, 4)
    y = small.reshape(-1)
    used = y != IGN
    assert used.sum() == 3
    want = 0.5 * x[used].pow(2).sum() / 3  # centres were zero
    assert loss.parts["center"].item() == pytest.approx(want.item())


def test_max_pixels_subsample_is_seeded():
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    features = torch.randn(2, 4, 8, 8)
    values = []
    for _ in range(2):
        torch.manual_seed(5)
        loss = CenterLoss(max_pixels=10)
        loss(logits, target, features=features)
        values.append((loss.parts["center"].item(), loss.centers.clone()))
    assert values[0][0] == values[1][0]
    torch.testing.assert_close(values[0][1], values[1][1])
    full = CenterLoss()
    full(logits, target, features=features)
    assert full.parts["center"].item() != pytest.approx(values[0][0])


def test_state_dict_round_trip_and_checks():
    logits, target, features = tiny_case()
    loss = CenterLoss()
    loss(logits, target, features=features)
    fresh = CenterLoss()
    fresh.load_state_dict(loss.state_dict())
    torch.testing.assert_close(fresh.centers, loss.centers)
    with pytest.raises(ValueError, match="needs features"):
        loss(logits, target)
    with pytest.raises(ValueError, match="feature dim"):
        loss(logits, target, features=torch.randn(1, 7, 2, 2))
    for params, match in [({"alpha": 0.0}, "alpha"), ({"weight": -1.0}, "weight"), ({"max_pixels": 0}, "max_pixels")]:
        with pytest.raises(ValueError, match=match):
            build_loss("center", **params)


def test_float32_features_with_float64_centres():
    logits, target, features = tiny_case()
    loss = CenterLoss()
    loss(logits, target, features=features)  # float64 centres
    value = loss(logits.float(), target, features=features.float())
    assert value.dtype == torch.float32 and torch.isfinite(value)
