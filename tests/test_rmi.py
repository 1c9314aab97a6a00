"""RMI loss against an independent, slow float64 reference written from methods.md §2.

The reference stacks the R² shifted copies, centres them explicitly and takes the log-det from
an explicit Cholesky per image and class, in plain loops: exactly the official algorithm, none
of the shortcuts of ``studybench.losses.rmi`` (fused BCE, label counting, covariances from shifted
views, Cholesky solves, skipped constant channels).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from studybench.losses import build_loss
from studybench.losses._rmi_kernels import pooled_onehot, region_covariances, sigmoid_bce_and_probs
from studybench.losses.bce import sigmoid_bce
from studybench.losses.rmi import RMINumericalError, region_mutual_information, rmi_lower_bound

ALPHA = 5e-4


def reference_rmi(logits, target, radius, pool, factor, bce_weight=0.5, lambda_way=1):
    """(total, bce, rmi) in float64, following the spec line by line."""
    z = logits.detach().to(torch.float64)
    batch, classes, height, width = z.shape
    m = (target < classes).to(torch.float64)  # any label >= C is ignored
    onehot = torch.zeros_like(z)
    for c in range(classes):
        onehot[:, c] = (target == c).to(torch.float64) * m
    bce_entries = F.binary_cross_entropy_with_logits(z, onehot, reduction="none") * m[:, None]
    bce = bce_entries.sum() / (m.sum() + 1)
    probs = torch.sigmoid(z) * m[:, None] + 1e-6
    labels = onehot
    if factor > 1:
        if pool == "max":
            labels, probs = (F.max_pool2d(x, factor, factor, factor // 2) for x in (labels, probs))
        elif pool == "avg":
            labels, probs = (F.avg_pool2d(x, factor, factor, factor // 2) for x in (labels, probs))
        else:
            size = (height // factor, width // factor)
            labels = F.interpolate(labels, size=size, mode="nearest")
            probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=True)
    h, w = labels.shape[2] - radius + 1, labels.shape[3] - radius + 1
    d = radius * radius
    r = torch.zeros(batch, classes, dtype=torch.float64)
    for b in range(batch):
        for c in range(classes):
            ys, ps = [], []
            for dy in range(radius):
                for dx in range(radius):
                    ys.append(labels[b, c, dy : dy + h, dx : dx + w].reshape(-1))
                    ps.append(probs[b, c, dy : dy + h, dx : dx + w].reshape(-1))
            y, p = torch.stack(ys), torch.stack(ps)  # [d, N]
            y = y - y.mean(1, keepdim=True)
            p = p - p.mean(1, keepdim=True)
            eye = torch.eye(d, dtype=torch.float64)
            sigma_yp = y @ p.T
            a = y @ y.T - sigma_yp @ torch.linalg.inv(p @ p.T + ALPHA * eye) @ sigma_yp.T
            chol = torch.linalg.cholesky(a + ALPHA * eye)
            r[b, c] = 0.5 * 2 * torch.log(torch.diagonal(chol) + 1e-8).sum()
    rmi = (r.mean(0) / d).sum()
    total = bce_weight * bce + (1 - bce_weight) * rmi if lambda_way == 1 else bce + bce_weight * rmi
    return total, bce, rmi


def make_case(batch, classes, height, width, seed, scale=3.0, ignored=True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, height, width, generator=g) * scale
    # blocky labels, as real masks are, plus scattered pixels
    coarse = torch.randint(0, classes, (batch, (height + 3) // 4, (width + 3) // 4), generator=g)
    target = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, :height, :width].clone()
    noise = torch.rand(target.shape, generator=g) < 0.2
    target[noise] = torch.randint(0, classes, (int(noise.sum()),), generator=g)
    if ignored:
        target[:, 1:4, 2:7] = 255
        target[0, -3:, -2:] = classes  # >= C counts as ignored too
    return logits, target


def assert_matches(ours, ref, rtol=1e-5):
    total, bce, rmi = (float(v.detach()) for v in ours)
    want_total, want_bce, want_rmi = (float(v) for v in ref)
    assert bce == pytest.approx(want_bce, rel=rtol, abs=1e-7)
    assert rmi == pytest.approx(want_rmi, rel=rtol)
    # the total may nearly cancel: compare it at the scale of its parts
    assert total == pytest.approx(want_total, abs=rtol * (abs(want_bce) + abs(want_rmi)))


GRID = [
    (pool, factor, radius) for pool in ("max", "avg", "nearest") for factor in range(1, 7) for radius in range(1, 6)
]


@pytest.mark.parametrize(("pool", "factor", "radius"), GRID)
def test_matches_reference_over_the_knobs(pool, factor, radius):
    classes = 21 if (factor + radius) % 2 == 0 else 2
    height, width = (17, 23) if factor <= 2 else (37, 31)
    logits, target = make_case(2, classes, height, width, seed=factor * 10 + radius)
    loss = build_loss("rmi", radius=radius, pool=pool, factor=factor)
    ours = loss(logits, target)
    assert_matches((ours, loss.parts["bce"], loss.parts["rmi"]), reference_rmi(logits, target, radius, pool, factor))


@pytest.mark.parametrize("pool", ["max", "avg", "nearest"])
@pytest.mark.parametrize("factor", [1, 3])
def test_float64_is_exact(pool, factor):
    """Without float32 rounding the fast algorithm equals the reference to ~1e-10."""
    logits, target = make_case(3, 5, 19, 22, seed=factor)
    ours = region_mutual_information(logits.double(), target, 3, pool, factor)
    ref = reference_rmi(logits, target, 3, pool, factor)
    for a, b in zip(ours, ref):
        assert float(a) == pytest.approx(float(b), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("lambda_way", [0, 1])
@pytest.mark.parametrize("bce_weight", [0.5, 0.2])
def test_lambda_ways(lambda_way, bce_weight):
    logits, target = make_case(2, 4, 24, 20, seed=7)
    ours = region_mutual_information(logits, target, 3, "avg", 2, bce_weight, lambda_way)
    assert_matches(ours, reference_rmi(logits, target, 3, "avg", 2, bce_weight, lambda_way))


@pytest.mark.parametrize(("pool", "factor"), [("avg", 4), ("max", 2), ("nearest", 3), ("avg", 1)])
def test_confident_logits(pool, factor):
    """±20 logits: float32 covariances would lose A entirely; ours stay float64 from the vectors on."""
    logits, target = make_case(2, 21, 33, 29, seed=3)
    g = torch.Generator().manual_seed(4)
    correct = F.one_hot(torch.where(target < 21, target, 0), 21).permute(0, 3, 1, 2).bool()
    wrong = torch.rand(correct.shape, generator=g) < 0.05  # a few confident mistakes
    logits = torch.where(correct ^ wrong, 20.0, -20.0)
    ours = region_mutual_information(logits.requires_grad_(), target, 3, pool, factor)
    assert_matches(ours, reference_rmi(logits, target, 3, pool, factor))
    ours[0].backward()
    assert torch.isfinite(logits.grad).all()


def test_fully_ignored_image_within_a_batch():
    logits, target = make_case(3, 6, 20, 21, seed=11)
    target[1] = 255
    logits.requires_grad_()
    ours = region_mutual_information(logits, target, 3, "avg", 2)
    assert_matches(ours, reference_rmi(logits, target, 3, "avg", 2))
    ours[0].backward()
    assert torch.count_nonzero(logits.grad[1]) == 0


@pytest.mark.parametrize(("pool", "factor"), [("avg", 4), ("max", 1), ("nearest", 2)])
def test_all_ignored_batch(pool, factor):
    classes, lam = 5, 0.5
    logits, target = make_case(2, classes, 16, 16, seed=2)
    target[:] = 255
    logits.requires_grad_()
    loss = build_loss("rmi", pool=pool, factor=factor, bce_weight=lam)
    value = loss(logits, target)
    # A = 0, so r = R²·log(√α + 1e-8) per class: C·½·ln α up to the 1e-8 inside the log
    assert float(loss.parts["bce"]) == 0.0
    assert float(loss.parts["rmi"]) == pytest.approx(classes * math.log(math.sqrt(ALPHA) + 1e-8), rel=1e-6)
    assert float(loss.parts["rmi"]) == pytest.approx(classes * 0.5 * math.log(ALPHA), rel=1e-6)
    assert float(value.detach()) == pytest.approx((1 - lam) * classes * 0.5 * math.log(ALPHA), rel=1e-6)
    value.backward()
    assert torch.count_nonzero(logits.grad) == 0


@pytest.mark.parametrize(("pool", "factor"), [("avg", 2), ("max", 2), ("nearest", 2), ("avg", 1)])
def test_gradcheck(pool, factor):
    g = torch.Generator().manual_seed(5)
    logits = (torch.randn(2, 3, 9, 10, generator=g, dtype=torch.float64) * 2).requires_grad_()
    target = torch.randint(0, 3, (2, 9, 10), generator=g)
    target[0, :2, :3] = 255
    target[1, 4] = 0  # one class absent from some rows, present elsewhere
    assert torch.autograd.gradcheck(lambda z: region_mutual_information(z, target, 2, pool, factor)[0], (logits,))


def test_gradient_matches_reference_autograd():
    """The hand-written backward passes equal autograd through the reference (float64)."""
    logits, target = make_case(2, 3, 14, 15, seed=8)
    z = logits.double().requires_grad_()
    region_mutual_information(z, target, 3, "avg", 2)[0].backward()

    x = logits.double().requires_grad_()
    _differentiable_reference(x, target, 3, "avg", 2).backward()
    assert torch.allclose(z.grad, x.grad, rtol=1e-7, atol=1e-12)


def _differentiable_reference(z, target, radius, pool, factor):
    classes = z.shape[1]
    m = (target < classes).to(z.dtype)
    onehot = torch.stack([(target == c).to(z.dtype) * m for c in range(classes)], 1)
    bce = (F.binary_cross_entropy_with_logits(z, onehot, reduction="none") * m[:, None]).sum() / (m.sum() + 1)
    probs = torch.sigmoid(z) * m[:, None] + 1e-6
    labels = F.avg_pool2d(onehot, factor, factor, factor // 2) if factor > 1 else onehot
    probs = F.avg_pool2d(probs, factor, factor, factor // 2) if factor > 1 else probs
    h, w = labels.shape[2] - radius + 1, labels.shape[3] - radius + 1
    stack = [
        torch.stack([x[:, :, dy : dy + h, dx : dx + w] for dy in range(radius) for dx in range(radius)], 2).flatten(3)
        for x in (labels, probs)
    ]
    y, p = (v - v.mean(3, keepdim=True) for v in stack)
    eye = ALPHA * torch.eye(radius * radius, dtype=z.dtype)
    a = y @ y.mT - (y @ p.mT) @ torch.linalg.inv(p @ p.mT + eye) @ (y @ p.mT).mT
    r = torch.log(torch.diagonal(torch.linalg.cholesky(a + eye), dim1=-2, dim2=-1) + 1e-8).sum(-1)
    return 0.5 * bce + 0.5 * (r.mean(0) / radius**2).sum()


def test_parts_are_recorded_and_sum_to_the_total():
    logits, target = make_case(2, 4, 16, 18, seed=9)
    loss = build_loss("rmi", radius=3, pool="avg", factor=4, bce_weight=0.5)
    value = loss(logits, target)
    assert set(loss.parts) == {"bce", "rmi"}
    assert not loss.parts["rmi"].requires_grad
    assert float(value) == pytest.approx(0.5 * float(loss.parts["bce"]) + 0.5 * float(loss.parts["rmi"]), rel=1e-6)


def test_bce_part_equals_sigmoid_bce():
    logits, target = make_case(2, 5, 21, 19, seed=12, scale=6.0)
    for dtype, rel in ((torch.float32, 1e-6), (torch.float64, 1e-12)):
        bce_sum, _ = sigmoid_bce_and_probs(logits.to(dtype), target, 1e-6)
        valid = int((target < 5).sum())
        assert float(bce_sum / (valid + 1)) == pytest.approx(float(sigmoid_bce(logits.to(dtype), target)), rel=rel)


@pytest.mark.parametrize(("pool", "factor"), [(p, f) for p in ("max", "avg", "nearest") for f in (1, 2, 3, 4, 5, 6)])
def test_pooled_labels_equal_pooling_the_onehot(pool, factor):
    _, target = make_case(2, 7, 23, 17, seed=factor)
    valid = target < 7
    onehot = F.one_hot(torch.where(valid, target, 0), 7).permute(0, 3, 1, 2).float() * valid[:, None]
    if factor == 1:
        want = onehot
    elif pool == "max":
        want = F.max_pool2d(onehot, factor, factor, factor // 2)
    elif pool == "avg":
        want = F.avg_pool2d(onehot, factor, factor, factor // 2)
    else:
        want = F.interpolate(onehot, size=(23 // factor, 17 // factor), mode="nearest")
    assert torch.equal(pooled_onehot(target, 7, pool, factor, torch.float32), want)


@pytest.mark.parametrize("radius", [1, 2, 3, 5])
@pytest.mark.parametrize("size", [(5, 5), (6, 9), (9, 6), (12, 11)])
def test_region_covariances_and_their_gradient(radius, size):
    if min(size) < radius:
        pytest.skip("map smaller than the region")
    g = torch.Generator().manual_seed(radius)
    labels = torch.rand(3, *size, generator=g, dtype=torch.float64)
    probs = torch.rand(3, *size, generator=g, dtype=torch.float64, requires_grad=True)
    h, w = size[0] - radius + 1, size[1] - radius + 1
    shifts = [(dy, dx) for dy in range(radius) for dx in range(radius)]
    ys = torch.stack([labels[:, dy : dy + h, dx : dx + w].flatten(1) for dy, dx in shifts], 1)
    ps = torch.stack([probs[:, dy : dy + h, dx : dx + w].flatten(1) for dy, dx in shifts], 1)
    ys, ps = ys - ys.mean(2, keepdim=True), ps - ps.mean(2, keepdim=True)
    want = (ys @ ys.mT, ps @ ps.mT, ys @ ps.mT)
    got = region_covariances(labels, probs, radius)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    weights = torch.randn(2, 3, radius**2, radius**2, generator=g, dtype=torch.float64)
    (grad_got,) = torch.autograd.grad((got[1] * weights[0]).sum() + (got[2] * weights[1]).sum(), probs)
    (grad_want,) = torch.autograd.grad((want[1] * weights[0]).sum() + (want[2] * weights[1]).sum(), probs)
    assert torch.allclose(grad_got, grad_want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_logits_raise_a_clear_error(bad):
    logits, target = make_case(2, 3, 12, 12, seed=1)
    logits[1, 2, 3, 4] = bad
    with pytest.raises(RMINumericalError, match=r"loss 'rmi'.*1 non-finite.*batch item\(s\) \[1\]"):
        build_loss("rmi")(logits, target)
    assert issubclass(RMINumericalError, FloatingPointError)


def test_cholesky_failure_names_batch_item_and_class():
    labels = pooled_onehot(make_case(2, 3, 12, 12, seed=1)[1], 3, "avg", 1, torch.float32)
    probs = torch.rand(2, 3, 12, 12)
    probs[1, 2, 5, 5] = float("nan")
    with pytest.raises(RMINumericalError, match=r"loss 'rmi': Cholesky of .* batch item 1, class 2"):
        rmi_lower_bound(labels, probs, 3)


def test_invalid_parameters_are_rejected():
    with pytest.raises(ValueError, match="pool.*'max', 'avg' or 'nearest'"):
        build_loss("rmi", pool="bilinear")  # checked from the type hint, before building
    with pytest.raises(ValueError, match="pool must be one of max, avg, nearest, got 'bilinear'"):
        region_mutual_information(*make_case(1, 3, 10, 10, seed=0), pool="bilinear")
    with pytest.raises(ValueError, match="factor must be an integer >= 1.*got 0"):
        build_loss("rmi", factor=0)
    with pytest.raises(ValueError, match="radius must be an integer >= 1.*got 0"):
        build_loss("rmi", radius=0)
    with pytest.raises(ValueError, match="lambda_way must be 0 or 1"):
        build_loss("rmi", lambda_way=2)
    logits, target = make_case(1, 3, 10, 10, seed=0)
    with pytest.raises(ValueError, match="smaller than radius 3"):
        build_loss("rmi", factor=6)(logits, target)


def test_autocast_does_not_change_the_value():
    logits, target = make_case(2, 4, 20, 20, seed=6)
    plain = region_mutual_information(logits, target, 3, "avg", 2)[0]
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        cast = region_mutual_information(logits, target, 3, "avg", 2)[0]
    assert cast.dtype == torch.float32
    assert float(cast) == float(plain)
    half = region_mutual_information(logits.bfloat16(), target, 3, "avg", 2)
    assert half[0].dtype == torch.float32 and torch.isfinite(half[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    logits, target = make_case(2, 5, 33, 30, seed=13)
    for pool, factor in (("avg", 4), ("max", 1), ("nearest", 2)):
        cpu = region_mutual_information(logits, target, 3, pool, factor)
        gpu = region_mutual_information(logits.cuda(), target.cuda(), 3, pool, factor)
        for a, b in zip(cpu, gpu):
            assert float(b) == pytest.approx(float(a), rel=1e-5, abs=1e-6)
