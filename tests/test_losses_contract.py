"""The contract every registered loss follows (parametrized over the registry).

Finite value and gradient; label 255 ignored (logits there do not matter); a batch with
every pixel ignored gives a finite value and a zero gradient; unknown names/params list
the valid ones.
"""

from __future__ import annotations

import math

import pytest
import torch

from studybench.losses import LOSSES, build_loss, list_losses

#: Parameters for losses that cannot be built from defaults alone.
EXAMPLE_PARAMS = {"sum": {"terms": [{"name": "ce", "weight": 1.0}, {"name": "dice", "weight": 0.5}]}}
FEATURE_DIM = 6


def make_inputs(dtype=torch.float32, ignored_fraction=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 12, 12, generator=g, dtype=dtype) * 2
    target = torch.randint(0, 4, (2, 12, 12), generator=g)
    target[torch.rand(target.shape, generator=g) < ignored_fraction] = 255
    return logits, target


def call(loss, logits, target):
    extra = {}
    if "features" in loss.requires:
        g = torch.Generator().manual_seed(1)
        extra["features"] = torch.randn(
            logits.shape[0], FEATURE_DIM, *logits.shape[2:], generator=g, dtype=logits.dtype
        )
    return loss(logits, target, **extra)


def build(name, dtype=torch.float32):
    return build_loss(name, **EXAMPLE_PARAMS.get(name, {})).to(dtype).eval()


@pytest.mark.parametrize("name", list_losses())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_value_and_gradient(name, dtype):
    loss = build(name, dtype)
    logits, target = make_inputs(dtype)
    logits.requires_grad_()
    value = call(loss, logits, target)
    assert value.dim() == 0
    assert torch.isfinite(value)
    value.backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0  # the loss actually depends on the logits


@pytest.mark.parametrize("name", list_losses())
def test_ignored_pixels_do_not_matter(name):
    loss = build(name, torch.float64)
    logits, target = make_inputs(torch.float64)
    changed = logits.clone()
    ignored = (target == 255).unsqueeze(1).expand_as(logits)
    changed[ignored] = torch.randn(int(ignored.sum()), dtype=torch.float64) * 10
    assert torch.allclose(call(loss, logits, target), call(loss, changed, target), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list_losses())
def test_all_ignored_batch_is_finite_with_zero_gradient(name):
    loss = build(name)
    logits, target = make_inputs()
    target[:] = 255
    logits.requires_grad_()
    value = call(loss, logits, target)
    assert torch.isfinite(value)
    value.backward()
    grad = logits.grad if logits.grad is not None else torch.zeros_like(logits)
    assert torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("name", list_losses())
def test_wrong_target_shape_is_a_clear_error(name):
    loss = build(name)
    logits, target = make_inputs()
    with pytest.raises(ValueError, match="target"):
        call(loss, logits, target[:, :5])


def test_unknown_loss_lists_available():
    with pytest.raises(ValueError, match="available: .*ce"):
        build_loss("no-such-loss")


def test_unknown_and_mistyped_parameters_are_named():
    with pytest.raises(ValueError, match="no parameter 'gama'.*gamma"):
        build_loss("focal", gama=2)
    with pytest.raises(ValueError, match="'gamma' expects"):
        LOSSES.check("focal", {"gamma": "two"})


def test_weighted_sum_logs_each_term():
    loss = build_loss("sum", terms=[{"name": "ce", "weight": 2.0}, {"name": "focal", "gamma": 0.0}])
    logits, target = make_inputs()
    value = loss(logits, target)
    ce = build_loss("ce")(logits, target)
    assert set(loss.parts) == {"ce", "focal"}
    # focal with gamma 0 is CE, so the total is 3 CE
    assert value.item() == pytest.approx(3 * ce.item(), rel=1e-5)
    assert loss.parts["ce"].item() == pytest.approx(ce.item(), rel=1e-6)


def test_ce_matches_torch_and_bce_uses_rmi_normalisation():
    logits, target = make_inputs(torch.float64)
    ce = build_loss("ce")(logits, target)
    assert ce.item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, target, ignore_index=255).item(), rel=1e-12
    )
    # bce: sum over valid pixels and classes / (M + 1), written out with loops
    total, m = 0.0, 0
    for b in range(2):
        for i in range(12):
            for j in range(12):
                y = int(target[b, i, j])
                if y == 255:
                    continue
                m += 1
                for c in range(4):
                    p = torch.sigmoid(logits[b, c, i, j]).item()
                    total -= torch.log(torch.tensor(p if c == y else 1 - p, dtype=torch.float64)).item()
    assert build_loss("bce")(logits, target).item() == pytest.approx(total / (m + 1), rel=1e-9)


def test_softmax_focal_matches_hand_computation():
    logits = torch.tensor([[[[2.0]], [[0.0]]]], dtype=torch.float64)  # B=1, C=2, 1x1
    target = torch.tensor([[[0]]])
    p = torch.softmax(logits[0, :, 0, 0], 0)[0].item()
    want = -((1 - p) ** 2) * math.log(p)
    assert build_loss("focal")(logits, target).item() == pytest.approx(want, rel=1e-9)
