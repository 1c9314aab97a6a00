"""LAD against a naive float64 reference written from methods.md §3, plus gradient checks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from studybench import IGNORE_INDEX
from studybench.losses import build_loss
from studybench.losses.lad import LocallyAdaptiveLoss, lad_pixel_losses, locally_adaptive_loss, minkowski_mean

#: both implementations: compiled CPU loops (numba) and tensor ops (what GPUs run)
BACKENDS = ["compiled", "tensor"]


def reference_lad(logits: torch.Tensor, target: torch.Tensor, kernel: int, k: float, norm: str) -> float:
    """Explicit loops over pixels and neighbours, in float64 Python arithmetic."""
    z = logits.double()
    batch, classes, height, width = z.shape
    r = kernel // 2
    costs = []
    for b, i, j in itertools.product(range(batch), range(height), range(width)):
        label = int(target[b, i, j])
        if label == IGNORE_INDEX:
            continue
        pooled = [0.0] * classes
        xi = 0.0
        for di, dj in itertools.product(range(-r, r + 1), repeat=2):
            qi, qj = i + di, j + dj
            if not (0 <= qi < height and 0 <= qj < width) or int(target[b, qi, qj]) != label:
                continue
            vec = [float(z[b, c, qi, qj]) for c in range(classes)]
            mean = sum(vec) / classes
            std = math.sqrt(sum((x - mean) ** 2 for x in vec) / classes)
            w = 2.0 ** (1 - max(abs(di), abs(dj)))
            for c in range(classes):
                pooled[c] += w * (vec[c] - mean) / (std + 1e-5)
            xi += 1.0 if norm == "count" else w
        pooled = [x / xi for x in pooled]
        top = max(pooled)
        lse = top + math.log(sum(math.exp(x - top) for x in pooled))
        costs.append(lse - pooled[label])
    if not costs:
        return 0.0
    return (sum(c**k for c in costs) / len(costs)) ** (1.0 / k)


def random_case(seed: int, batch=2, classes=4, height=6, width=7, ignore=0.2, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, height, width, generator=gen, dtype=dtype) * 2
    # blocky labels so that same-label neighbourhoods of every size occur
    coarse = torch.randint(0, classes, (batch, 1, (height + 1) // 2, (width + 1) // 2), generator=gen)
    target = F.interpolate(coarse.float(), scale_factor=2, mode="nearest")[:, 0, :height, :width].long()
    noise = torch.rand(batch, height, width, generator=gen)
    target[noise < 0.15] = torch.randint(0, classes, (batch, height, width), generator=gen)[noise < 0.15]
    target[torch.rand(batch, height, width, generator=gen) < ignore] = IGNORE_INDEX
    return logits, target


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
@pytest.mark.parametrize("norm", ["count", "weight"])
def test_matches_naive_reference(kernel, norm, backend):
    for seed in range(2):
        logits, target = random_case(seed + 10 * kernel)
        for k in (1, 2, 2.5, 3, 5):
            got = locally_adaptive_loss(logits, target, kernel=kernel, k=k, norm=norm, backend=backend).item()
            want = reference_lad(logits, target, kernel, k, norm)
            assert got == pytest.approx(want, rel=1e-6, abs=1e-9), (kernel, norm, k, seed)


def test_float32_close_to_reference_and_row_tiling(monkeypatch):
    """Force one-row tiles so the tile loop's edges are exercised on a taller image."""
    import studybench.losses.lad as lad

    logits, target = random_case(3, batch=1, classes=5, height=11, width=9)
    want = reference_lad(logits, target, 5, 3.0, "count")
    monkeypatch.setattr(lad, "_CPU_TILE", 1)
    assert locally_adaptive_loss(logits, target, 5, backend="tensor").item() == pytest.approx(want, rel=1e-9)
    for backend in BACKENDS:
        got32 = locally_adaptive_loss(logits.float(), target, 5, backend=backend)
        assert got32.dtype == torch.float32 and got32.item() == pytest.approx(want, rel=1e-5), backend


@pytest.mark.parametrize("block_rows", [1, 2, 3, 32])
def test_compiled_row_blocks(monkeypatch, block_rows):
    """Blocks of rows (with their re-standardised halo rows) tile the image exactly, whatever
    their height relative to the window, with 1 or 2 threads."""
    from studybench.losses import _lad_kernels

    monkeypatch.setattr(_lad_kernels, "BLOCK_ROWS", block_rows)
    logits, target = random_case(12, batch=2, classes=4, height=9, width=6)
    want = reference_lad(logits, target, 7, 2.0, "count")
    for threads in (1, 2):
        monkeypatch.setattr(torch, "get_num_threads", lambda threads=threads: threads)
        got = locally_adaptive_loss(logits, target, 7, 2.0, backend="compiled").item()
        assert got == pytest.approx(want, rel=1e-9), threads


def test_backends_agree_on_values_and_gradients_float32():
    """A case with many row blocks and 21 classes, in float32, as in training."""
    logits, target = random_case(13, batch=2, classes=21, height=70, width=45, ignore=0.05, dtype=torch.float32)
    grads, values = {}, {}
    upstream = torch.rand(2, 70, 45)
    for backend in BACKENDS:
        z = logits.clone().requires_grad_(True)
        pixel = lad_pixel_losses(z, target, 5, "count", backend=backend)
        (pixel * upstream).sum().backward()
        values[backend], grads[backend] = pixel.detach(), z.grad
    torch.testing.assert_close(values["compiled"], values["tensor"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads["compiled"], grads["tensor"], rtol=1e-4, atol=1e-7)


def test_compiled_backend_needs_cpu_and_numba(monkeypatch):
    import studybench.losses.lad as lad

    logits, target = random_case(1)
    with pytest.raises(ValueError, match="backend must be one of auto, compiled, tensor"):
        lad_pixel_losses(logits, target, backend="numba")
    with pytest.raises(ValueError, match="unknown parameter|backend"):
        build_loss("lad", backend="tensor")  # not a parameter of the method: no run key may depend on it
    monkeypatch.setattr(lad, "_lad_kernels", None)
    with pytest.raises(ValueError, match="pip install numba"):
        lad_pixel_losses(logits, target, backend="compiled")
    # auto falls back to tensor ops and still matches the reference
    want = reference_lad(logits, target, 3, 1.0, "count")
    assert locally_adaptive_loss(logits, target, 3, 1.0).item() == pytest.approx(want, rel=1e-6)


def test_gpu_plan_on_cpu(monkeypatch):
    """The GPU walk (several images per chunk, bool masks) gives the same values and gradients."""
    import studybench.losses.lad as lad

    logits, target = random_case(4, batch=3, classes=4, height=7, width=6)
    want = reference_lad(logits, target, 5, 2.0, "weight")
    monkeypatch.setattr(lad, "_plan", lambda *args: lad._Plan(images=2, rows=3, mask_dtype=torch.bool))
    assert locally_adaptive_loss(logits, target, 5, 2.0, "weight").item() == pytest.approx(want, rel=1e-9)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: lad_pixel_losses(z, target, 5, "weight"), (logits,), fast_mode=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel,norm", [(1, "count"), (3, "count"), (3, "weight"), (5, "count"), (7, "weight")])
def test_gradcheck(kernel, norm, backend):
    logits, target = random_case(7, batch=2, classes=3, height=4, width=5, ignore=0.25)
    if kernel == 7:  # a window wider than the image's rows and columns
        logits, target = random_case(8, batch=1, classes=3, height=8, width=5, ignore=0.2)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: locally_adaptive_loss(z, target, kernel, 3.0, norm, backend), (logits,))
    # every pixel's cost, each with its own upstream gradient (random projections of the Jacobian)
    assert torch.autograd.gradcheck(
        lambda z: lad_pixel_losses(z, target, kernel, norm, backend), (logits,), fast_mode=True
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_one_is_ce_on_standardised_logits(backend):
    logits, target = random_case(5, ignore=0.3)
    std, mean = torch.std_mean(logits, dim=1, correction=0, keepdim=True)
    zhat = (logits - mean) / (std + 1e-5)
    ce = F.cross_entropy(zhat, target, ignore_index=IGNORE_INDEX)
    got = locally_adaptive_loss(logits, target, kernel=1, k=1, norm="weight", backend=backend)
    assert got.item() == pytest.approx(ce.item())
    # the paper's count normalisation keeps the centre weight 2: CE on 2·ẑ
    ce2 = F.cross_entropy(2 * zhat, target, ignore_index=IGNORE_INDEX)
    got2 = locally_adaptive_loss(logits, target, kernel=1, k=1, norm="count", backend=backend)
    assert got2.item() == pytest.approx(ce2.item())


@pytest.mark.parametrize("backend", BACKENDS)
def test_ignored_pixels_logits_do_not_matter(backend):
    logits, target = random_case(11, ignore=0.3)
    ignored = (target == IGNORE_INDEX).unsqueeze(1).expand_as(logits)
    changed = torch.where(ignored, torch.randn_like(logits) * 100, logits).requires_grad_(True)
    base = locally_adaptive_loss(logits, target, kernel=5, backend=backend)
    value = locally_adaptive_loss(changed, target, kernel=5, backend=backend)
    assert value.item() == pytest.approx(base.item(), rel=1e-12)
    value.backward()
    assert changed.grad[ignored].abs().max().item() == 0.0
    assert changed.grad[~ignored].abs().max().item() > 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_labels_outside_image_are_not_neighbours(backend):
    """A 1-pixel-wide label line: only in-image, same-label pixels may be pooled."""
    logits, _ = random_case(2, batch=1, classes=3, height=5, width=5)
    target = torch.full((1, 5, 5), 1)
    target[0, 2] = 2
    for kernel in (3, 5):
        assert locally_adaptive_loss(logits, target, kernel, backend=backend).item() == pytest.approx(
            reference_lad(logits, target, kernel, 3.0, "count"), rel=1e-9
        )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_all_ignored_gives_zero_and_zero_grad(dtype, backend):
    logits = torch.randn(2, 4, 5, 5, dtype=dtype, requires_grad=True)
    target = torch.full((2, 5, 5), IGNORE_INDEX)
    value = locally_adaptive_loss(logits, target, kernel=3, k=3, backend=backend)
    value.backward()
    assert value.item() == 0.0
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().max().item() == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_constant_logits_have_finite_gradient(backend):
    logits = torch.zeros(1, 4, 4, 4, requires_grad=True)
    target = torch.randint(0, 4, (1, 4, 4))
    value = locally_adaptive_loss(logits, target, kernel=3, backend=backend)
    value.backward()
    assert value.item() == pytest.approx(math.log(4), rel=1e-6)
    assert torch.isfinite(logits.grad).all()


def test_minkowski_mean():
    values = torch.tensor([1.0, 2.0, 9.0], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([True, True, False])
    out = minkowski_mean(values, mask, 3.0)
    assert out.item() == pytest.approx(((1 + 8) / 2) ** (1 / 3))
    out.backward()
    assert values.grad[2].item() == 0.0 and values.grad[1].item() > values.grad[0].item() > 0


def test_registry_and_validation():
    loss = build_loss("lad", kernel=5, k=3, norm="count")
    assert (loss.kernel, loss.k, loss.norm) == (5, 3.0, "count")
    assert build_loss("lad").kernel == 5
    for params, match in [
        ({"kernel": 4}, "kernel"),
        ({"kernel": 0}, "kernel"),
        ({"k": 0.5}, "k must"),
        ({"norm": "mean"}, "'count' or 'weight'"),
    ]:
        with pytest.raises(ValueError, match=match):
            build_loss("lad", **params)
    with pytest.raises(ValueError, match="one of count, weight, got 'mean'"):
        LocallyAdaptiveLoss(norm="mean")
    with pytest.raises(ValueError, match="labels must be in"):
        build_loss("lad")(torch.randn(1, 3, 4, 4), torch.full((1, 4, 4), 3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precision_logits_are_pooled_in_float32(backend):
    logits, target = random_case(14, classes=5)
    want = reference_lad(logits.half().double(), target, 3, 3.0, "count")
    z = logits.half().requires_grad_(True)
    value = locally_adaptive_loss(z, target, 3, backend=backend)
    value.backward()
    assert value.dtype == torch.float16 and value.item() == pytest.approx(want, rel=2e-3)
    assert z.grad.dtype == torch.float16 and torch.isfinite(z.grad).all()


def test_compiled_float32_exp_is_accurate():
    """The vectorisable exp of the compiled softmax, against float64 exp on [-87, 0]."""
    from numba import njit

    from studybench.losses._lad_kernels import exp_nonpositive

    @njit
    def apply(x, out):
        for j in range(x.shape[0]):
            out[j] = exp_nonpositive(x[j])

    gen = np.random.default_rng(0)
    x = np.concatenate([-gen.random(200_000) * 87, -gen.random(20_000) * 1e-3, [0.0, -1e-30, -87.0]])
    for dtype, tolerance in ((np.float32, 2.5e-7), (np.float64, 1e-15)):
        xs = x.astype(dtype)
        out = np.empty_like(xs)
        apply(xs, out)
        want = np.exp(xs.astype(np.float64))
        assert out.dtype == dtype
        assert np.max(np.abs(out - want) / want) < tolerance, dtype
    below = np.array([-100.0, -1e4], np.float32)
    out = np.empty_like(below)
    apply(below, out)
    assert np.all(out <= np.float32(1.7e-38)) and np.all(out >= 0)  # clamped at exp(-87)
