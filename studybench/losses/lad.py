"""LAD — the locally adaptive loss of Guo et al. (methods.md §3).

Each valid pixel's standardised logit vector is replaced by a weighted pool of the vectors of
the neighbours that carry the *same label* (selective pooling), the pooled vector is scored
with softmax cross-entropy, and the per-pixel costs are combined by Minkowski pooling.

No public implementation exists, so this one is written to be the reference:

* **Exact.** Out-of-image window positions do not exist (labels are padded with the ignore
  label, which never equals a valid centre label); ignored neighbours are never pooled and
  ignored centres produce no cost. The tests compare it with a naive float64 loop to 1e-6.
* **O(B·C·H·W) memory.** ``unfold`` would hold kernel² copies of the logits. Instead a custom
  autograd function accumulates the kernel² shifted slices into one output, tile by tile
  (``_SelectivePoolCE``, tensor ops: GPU). On CPU the same computation runs as two fused,
  compiled loops that finish each image row in cache (``_lad_kernels``, numba), 2–3× faster.
  The pooling is linear in ẑ given the labels (``v = P ẑ``) and ``P`` is symmetric up to the
  per-centre normalisation, so the backward pass is the same shifted sum applied to
  ``∂L/∂v / ξ``; the standardisation is differentiated by hand and recomputed from the logits.
  Only the softmax of the pooled vectors (one logits-sized tensor) is kept between the
  passes; everything else lives in per-chunk buffers (one image at a time on CPU, walked in
  cache-sized row tiles; larger chunks on GPU, where kernel launches cost more).

Note on ``norm="count"`` (the paper's ξ): the weights are 2, 1, ½, ¼, … but ξ counts pixels,
so the pooled vector's scale depends on the neighbourhood (×2 for an isolated pixel, ×24/49
inside a uniform 7×7 window). ``norm="weight"`` divides by Σw instead, a true weighted mean.

Reference: J. Guo, P. Ren, A. Gu, J. Xu, W. Wu, "Locally Adaptive Learning Loss for Semantic
Image Segmentation", arXiv:1802.08290 — eq. 2 (selective pooling), eq. 4 (local cost),
eq. 5 (Minkowski pooling), §3.2 (chessboard weights 2^(1 − D8)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from studybench import IGNORE_INDEX
from studybench.losses.base import SegLoss, check_inputs

try:
    from studybench.losses import _lad_kernels
except ImportError:  # numba missing: the tensor-op version runs on CPU too
    _lad_kernels = None

NORMS = ("count", "weight")
BACKENDS = ("auto", "compiled", "tensor")
EPS = 1e-5  # added to the per-pixel std (methods.md §3.1)
_CPU_TILE = 1 << 18  # elements of v per row tile on CPU
_GPU_CHUNK = 1 << 26  # elements of v per chunk of images on GPU


@dataclass(frozen=True)
class _Plan:
    """How the batch is walked: images per chunk, rows per tile, dtype of the same-label masks."""

    images: int
    rows: int
    mask_dtype: torch.dtype


def _plan(logits: torch.Tensor, kernel: int, work: torch.dtype) -> _Plan:
    """CPU: one image at a time in row tiles of ~2^18 elements, which stay in the L2 cache (the
    pooling is memory bound) while keeping the number of small ops down; float masks multiply
    fastest. GPU: few large launches matter more, so whole images, up to ~2^26 logits elements
    per chunk, with bool masks (1 byte per offset and pixel).
    """
    batch, classes, height, width = logits.shape
    if logits.device.type == "cpu":
        return _Plan(1, max(1, min(height, _CPU_TILE // (classes * width))), work)
    return _Plan(max(1, min(batch, _GPU_CHUNK // (classes * height * width))), height, torch.bool)


def check_lad_params(kernel: int, k: float, norm: str) -> None:
    if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be an odd integer >= 1, got {kernel!r}")
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not k >= 1:
        raise ValueError(f"k must be a number >= 1, got {k!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")


def ring_weights(kernel: int) -> list[float]:
    """``w = 2^(1 − D8)`` for every window offset, row-major (the order of ``F.unfold``)."""
    r = kernel // 2
    return [2.0 ** (1 - max(abs(dy), abs(dx))) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]


def _same_label_masks(
    padded: torch.Tensor, masks: torch.Tensor, xi: torch.Tensor | None = None, xi_weights: list[float] | None = None
) -> None:
    """``masks[d, n, 0, i, j] = [y(i + dy, j + dx) == y(i, j)]``; ``xi = Σ_d xi_weights[d] · masks[d]``.

    ``padded`` [n, 1, H + 2r, W + 2r] holds the labels (as floats: comparing them straight into a
    float mask is fastest on CPU), padded with the ignore label, so out-of-image positions never
    match a valid centre; the centre always matches itself, so ξ is never 0.
    (``F.unfold`` would build the masks in one call but is far slower.)
    """
    height, width = masks.shape[-2:]
    kernel = math.isqrt(masks.shape[0])
    r = kernel // 2
    centre = padded[..., r : r + height, r : r + width]
    for d in range(kernel * kernel):
        dy, dx = divmod(d, kernel)
        torch.eq(padded[..., dy : dy + height, dx : dx + width], centre, out=masks[d])
    if xi is None:
        return
    if masks.is_floating_point():  # one contraction instead of k² small ops
        torch.tensordot(masks.new_tensor(xi_weights), masks, dims=1, out=xi)
        return
    xi.zero_()
    for d, w in enumerate(xi_weights):
        xi.add_(masks[d], alpha=w)


def _shift_sum(out: torch.Tensor, src: torch.Tensor, masks: torch.Tensor, weights: list[float], rows: int) -> None:
    """``out = Σ_d w_d · m_d ⊙ src(· + d)`` on a chunk of images, ``rows`` rows at a time.

    ``src`` [n, C, H + 2r, W + 2r] is padded by r = kernel // 2; ``out`` is [n, C, H, W]. Row
    tiles keep the working set in cache. The centre's mask is all ones: it starts the sum.
    """
    kernel = math.isqrt(len(weights))
    r, centre = kernel // 2, len(weights) // 2
    height, width = out.shape[2:]
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        tile = out[:, :, y0:y1]
        torch.mul(src[:, :, y0 + r : y1 + r, r : r + width], weights[centre], out=tile)
        for d, w in enumerate(weights):
            if d != centre:
                dy, dx = divmod(d, kernel)
                tile.addcmul_(src[:, :, y0 + dy : y1 + dy, dx : dx + width], masks[d, :, :, y0:y1], value=w)


def _standardize(z: torch.Tensor, out: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """``ẑ = (z − mean) / (std + ε)`` over the classes (dim 1, population std), written to ``out``.

    Returns ``[mean, std]`` stacked on dim 1. Spelled out because ``torch.std_mean`` over a
    non-innermost dim is ~20× slower on CPU; ``scratch`` (same shape) spares a fresh temporary.
    """
    mean = z.mean(1, keepdim=True)
    centred = torch.sub(z, mean, out=out)
    std = torch.mul(centred, centred, out=scratch).mean(1, keepdim=True).sqrt_()
    centred.div_(std + EPS)
    return torch.cat([mean, std], dim=1)


def _standardize_backward(
    grad: torch.Tensor, z: torch.Tensor, stats: torch.Tensor, scratch: torch.Tensor, scratch2: torch.Tensor
) -> None:
    """∂L/∂z from ∂L/∂ẑ (dim 1), in place on ``grad``: ``(g − ḡ)/(σ + ε) − ẑ · mean(g ẑ)/σ``.

    ``stats`` holds the forward's mean and σ. The second term tends to 0 as σ → 0 (ẑ vanishes
    like σ/ε) and is set to 0 at σ = 0, where autograd through ``torch.std`` gives NaN.
    """
    mean, std = stats[:, :1], stats[:, 1:]
    zhat = torch.sub(z, mean, out=scratch).div_(std + EPS)
    coupling = torch.mul(grad, zhat, out=scratch2).mean(1, keepdim=True)
    coupling.div_(torch.where(std > 0, std, torch.ones_like(std))).mul_(-(std + EPS))
    grad.sub_(grad.mean(1, keepdim=True)).addcmul_(zhat, coupling).div_(std + EPS)


class _SelectivePoolCE(torch.autograd.Function):
    """Per-pixel ``ℓ_p = −log softmax(v_p)[y_p]`` with ``v = P ẑ`` (0 at ignored pixels).

    Saves the logits (alive anyway), the labels, softmax(v), 1/ξ and the per-pixel mean and
    std of the logits; the backward rebuilds the masks and ẑ chunk by chunk.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, kernel: int, norm: str) -> torch.Tensor:
        work = torch.promote_types(logits.dtype, torch.float32)
        weights = ring_weights(kernel)
        xi_weights = weights if norm == "weight" else [1.0] * len(weights)
        plan, valid, safe, labels, masks, xi, pad = _prepare(logits, target, kernel, work)
        batch, _, height, width = logits.shape
        probs = torch.empty(logits.shape, dtype=work, device=logits.device)  # v, then softmax(v)
        stats = torch.empty((batch, 2, height, width), dtype=work, device=logits.device)
        inv_xi = torch.empty((batch, 1, height, width), dtype=work, device=logits.device)
        losses = torch.empty((batch, 1, height, width), dtype=work, device=logits.device)
        for chunk in _chunks(batch, plan.images):
            n = chunk.stop - chunk.start
            _same_label_masks(labels[chunk], masks[:, :n], xi[:n], xi_weights)
            torch.div(valid[chunk], xi[:n], out=inv_xi[chunk])
            v, inv = probs[chunk], inv_xi[chunk]  # v is free until the shifted sum: scratch
            stats[chunk] = _standardize(logits[chunk].to(work), _inner(pad[:n], kernel), v)
            _shift_sum(v, pad[:n], masks[:, :n], weights, plan.rows)
            top = v.amax(1, keepdim=True).mul_(inv)  # max of v/ξ, as 1/ξ >= 0
            torch.addcmul(-top, v, inv, out=v)  # v/ξ − max: 0 at ignored pixels
            picked = v.gather(1, safe[chunk])
            total = v.exp_().sum(1, keepdim=True)
            torch.sub(total.log(), picked, out=losses[chunk]).mul_(valid[chunk])
            v.div_(total)
        ctx.save_for_backward(logits, target, probs, inv_xi, stats)
        ctx.kernel = kernel
        return losses[:, 0].to(logits.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_losses: torch.Tensor):
        logits, target, probs, inv_xi, stats = ctx.saved_tensors
        kernel = ctx.kernel
        weights = ring_weights(kernel)
        plan, _, safe, labels, masks, _, pad = _prepare(logits, target, kernel, probs.dtype)
        scale = grad_losses[:, None].to(probs.dtype) * inv_xi  # ∂L/∂ℓ_p / ξ_p, zero at ignored pixels
        grad = torch.empty_like(probs)
        scratch = torch.empty_like(probs[: plan.images])
        for chunk in _chunks(logits.shape[0], plan.images):
            n = chunk.stop - chunk.start
            _same_label_masks(labels[chunk], masks[:, :n])
            inner = _inner(pad[:n], kernel)  # ∂L/∂v / ξ = (softmax(v) − onehot(y)) · ∂L/∂ℓ / ξ
            torch.mul(probs[chunk], scale[chunk], out=inner)
            inner.scatter_add_(1, safe[chunk], -scale[chunk])
            g = grad[chunk]
            _shift_sum(g, pad[:n], masks[:, :n], weights, plan.rows)  # Pᵀ: the same sum (w, m symmetric)
            _standardize_backward(g, logits[chunk].to(probs.dtype), stats[chunk], scratch[:n], inner)
        return grad.to(logits.dtype), None, None, None


class _CompiledSelectivePoolCE(torch.autograd.Function):
    """``_SelectivePoolCE`` on CPU through the compiled row loops of ``_lad_kernels``.

    Saves the logits, the labels, softmax(v) (padded by r columns for the backward's blocked
    loop) and 1/ξ; the per-pixel mean and std are recomputed per row in the backward.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, kernel: int, norm: str) -> torch.Tensor:
        work = torch.promote_types(logits.dtype, torch.float32)
        batch, classes, height, width = logits.shape
        r = kernel // 2
        weights = torch.tensor(ring_weights(kernel), dtype=work).view(kernel, kernel)
        xi_weights = weights if norm == "weight" else torch.ones_like(weights)
        z = logits.detach().to(work).contiguous()
        labels = target.to(torch.int64).contiguous()
        probs = torch.empty((batch, classes, height, width + 2 * r), dtype=work)
        losses = torch.empty((batch, height, width), dtype=work)
        inv_xi = torch.empty_like(losses)
        forward, _ = _lad_kernels.kernels(kernel)
        block = _lad_kernels.BLOCK_ROWS
        outputs = (probs.numpy(), losses.numpy(), inv_xi.numpy())
        args = (z.numpy(), labels.numpy(), weights.numpy(), xi_weights.numpy(), *outputs, block)
        tasks = _lad_kernels.forward_tasks(batch, height, block)
        _lad_kernels.run_parallel(forward, args, tasks, torch.get_num_threads())
        ctx.save_for_backward(z, labels, probs, inv_xi, weights)
        ctx.kernel, ctx.dtype = kernel, logits.dtype
        return losses.to(logits.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_losses: torch.Tensor):
        z, labels, probs, inv_xi, weights = ctx.saved_tensors
        grad = torch.empty_like(z)
        upstream = grad_losses.to(z.dtype).contiguous()
        _, backward = _lad_kernels.kernels(ctx.kernel)
        args = (
            z.numpy(),
            labels.numpy(),
            probs.numpy(),
            upstream.numpy(),
            inv_xi.numpy(),
            weights.numpy(),
            grad.numpy(),
        )
        rows = z.shape[0] * z.shape[2]
        _lad_kernels.run_parallel(backward, args, rows, torch.get_num_threads())
        return grad.to(ctx.dtype), None, None, None


def _prepare(logits: torch.Tensor, target: torch.Tensor, kernel: int, work: torch.dtype):
    """The plan, label tensors and the per-chunk buffers shared by forward and backward."""
    batch, classes, height, width = logits.shape
    plan = _plan(logits, kernel, work)
    r, n, device = kernel // 2, plan.images, logits.device
    valid = (target != IGNORE_INDEX).unsqueeze(1)
    safe = torch.where(valid, target.unsqueeze(1), 0)
    labels = F.pad(target.to(work).unsqueeze(1), (r, r, r, r), value=float(IGNORE_INDEX))
    masks = torch.empty((kernel * kernel, n, 1, height, width), dtype=plan.mask_dtype, device=device)
    xi = torch.empty((n, 1, height, width), dtype=work, device=device)
    pad = torch.zeros((n, classes, height + 2 * r, width + 2 * r), dtype=work, device=device)
    return plan, valid.to(work), safe, labels, masks, xi, pad


def _chunks(batch: int, size: int) -> list[slice]:
    return [slice(b, min(batch, b + size)) for b in range(0, batch, size)]


def _inner(padded: torch.Tensor, kernel: int) -> torch.Tensor:
    r = kernel // 2
    return padded[:, :, r : padded.shape[2] - r, r : padded.shape[3] - r]


def lad_pixel_losses(
    logits: torch.Tensor, target: torch.Tensor, kernel: int = 5, norm: str = "count", backend: str = "auto"
) -> torch.Tensor:
    """The local costs ``ℓ_p`` of eq. 4, shape [B, H, W], 0 at ignored pixels.

    ``backend``: ``"compiled"`` (CPU only, needs numba), ``"tensor"`` (any device), or
    ``"auto"``: compiled on CPU when numba is installed, tensor ops otherwise. They agree to
    rounding. Raises ValueError for a label outside [0, C) other than the ignore label 255.
    """
    check_lad_params(kernel, 1, norm)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    compiled_ok = logits.device.type == "cpu" and _lad_kernels is not None
    if backend == "compiled" and not compiled_ok:
        why = "numba is not installed (pip install numba)" if _lad_kernels is None else f"logits are on {logits.device}"
        raise ValueError(f"LAD backend 'compiled' runs on CPU with numba; {why}")
    check_inputs("lad", logits, target)
    classes = logits.shape[1]
    bad = (target != IGNORE_INDEX) & ((target < 0) | (target >= classes))
    if bool(bad.any()):
        raise ValueError(f"loss 'lad': labels must be in [0, {classes}) or {IGNORE_INDEX}, got {target[bad][0].item()}")
    if backend == "compiled" or (backend == "auto" and compiled_ok):
        return _CompiledSelectivePoolCE.apply(logits, target, kernel, norm)
    return _SelectivePoolCE.apply(logits, target, kernel, norm)


def minkowski_mean(values: torch.Tensor, mask: torch.Tensor, k: float) -> torch.Tensor:
    """``((1/M) Σ_mask values^k)^(1/k)``; 0 with a zero (finite) gradient when M = 0.

    The k-th root has an infinite slope at 0, so the root is taken of a safe stand-in there.
    """
    total = (values.pow(k) * mask).sum() / mask.sum().clamp_min(1)
    positive = total > 0
    root = torch.where(positive, total, torch.ones_like(total)).pow(1.0 / k)
    return torch.where(positive, root, torch.zeros_like(root))


def locally_adaptive_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    kernel: int = 5,
    k: float = 3.0,
    norm: str = "count",
    backend: str = "auto",
) -> torch.Tensor:
    """LAD (eq. 5): Minkowski pooling with exponent ``k`` of the local costs over valid pixels.

    Args:
        logits: raw scores [B, C, H, W].
        target: labels [B, H, W] int64, 255 = ignore.
        kernel: odd window size s of the selective pooling (paper: 3, 5, 7).
        k: Minkowski exponent >= 1 (paper: 3); k = 1 is the plain mean.
        norm: ``"count"`` (ξ = number of same-label neighbours, the paper's) or ``"weight"`` (ξ = Σw).
        backend: how the pooling runs, see :func:`lad_pixel_losses` (same values either way).
    """
    check_lad_params(kernel, k, norm)
    losses = lad_pixel_losses(logits, target, kernel, norm, backend)
    return minkowski_mean(losses, target != IGNORE_INDEX, float(k))


class LocallyAdaptiveLoss(SegLoss):
    """Locally adaptive loss (Guo et al.); see :func:`locally_adaptive_loss`.

    Args:
        kernel: odd window size (paper: 5 best).
        k: Minkowski exponent >= 1 (paper: 3 best).
        norm: ``"count"`` (paper) or ``"weight"``.
    Shape: logits [B, C, H, W], target [B, H, W] -> scalar.

    The implementation is picked per call (compiled loops on CPU, tensor ops on GPU): it is a
    speed choice, not a parameter of the method, so it stays out of the run's parameters and key.
    """

    def __init__(self, kernel: int = 5, k: float = 3.0, norm: Literal["count", "weight"] = "count"):
        super().__init__()
        check_lad_params(kernel, k, norm)
        self.kernel, self.k, self.norm = kernel, float(k), norm

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return locally_adaptive_loss(logits, target, self.kernel, self.k, self.norm)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, k={self.k}, norm={self.norm!r}"
