"""LAD — the locally adaptive loss of Guo et al. (methods.md §3).

Each valid pixel's standardised logit vector is replaced by a weighted pool of the vectors of
the neighbours that carry the *same label* (selective pooling), the pooled vector is scored
with softmax cross-entropy, and the per-pixel costs are combined by Minkowski pooling.

No public implementation exists, so this one is written to be the reference:

* **Exact.** Out-of-image window positions do not exist (labels are padded with the ignore
  label, which never equals a valid centre label); ignored neighbours are never pooled and
  ignored centres produce no cost. The tests compare it with a naive float64 loop to 1e-6.
* **O(B·C·H·W) memory.** ``unfold`` would hold kernel² copies of the logits. Instead a custom
  autograd function accumulates the kernel² shifted slices into one output, tile by tile.
  The pooling is linear in ẑ given the labels (``v = P ẑ``) and ``P`` is symmetric up to the
  per-centre normalisation, so the backward pass is the same shifted sum applied to
  ``∂L/∂v / ξ``; the standardisation is differentiated by hand and recomputed from the logits.
  Only the softmax of the pooled vectors (one logits-sized tensor) is kept between the
  passes; everything else lives in one per-image buffer and cache-sized row tiles.

Note on ``norm="count"`` (the paper's ξ): the weights are 2, 1, ½, ¼, … but ξ counts pixels,
so the pooled vector's scale depends on the neighbourhood (×2 for an isolated pixel, ×24/49
inside a uniform 7×7 window). ``norm="weight"`` divides by Σw instead, a true weighted mean.

Reference: J. Guo, P. Ren, A. Gu, J. Xu, W. Wu, "Locally Adaptive Learning Loss for Semantic
Image Segmentation", arXiv:1802.08290 — eq. 2 (selective pooling), eq. 4 (local cost),
eq. 5 (Minkowski pooling), §3.2 (chessboard weights 2^(1 − D8)).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from studybench import IGNORE_INDEX
from studybench.losses.base import SegLoss, check_inputs

NORMS = ("count", "weight")
EPS = 1e-5  # added to the per-pixel std (methods.md §3.1)

# Work per tile, in elements. On CPU a tile of ẑ/v plus its masks should stay in the L2 cache
# (a few MB), since the pooling is memory bound; on GPUs whole images are cheaper (fewer launches).
_CPU_TILE = 1 << 18
_GPU_TILE = 1 << 24


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


def _tile_rows(num_channels: int, height: int, width: int, device: torch.device) -> int:
    budget = _GPU_TILE if device.type == "cuda" else _CPU_TILE
    return max(1, min(height, budget // (num_channels * width)))


def _same_label_masks(padded: torch.Tensor, kernel: int, out: torch.Tensor) -> torch.Tensor:
    """``out[d, i, j] = [y(i + dy, j + dx) == y(i, j)]`` for one image, shape [k², H, W].

    ``padded`` holds the image's labels padded by kernel // 2 with the ignore label, so
    out-of-image positions never match a valid centre; the centre always matches itself,
    so the count ξ is never 0. (``F.unfold`` would do this in one call but is far slower.)
    """
    height, width = out.shape[1:]
    r = kernel // 2
    centre = padded[r : r + height, r : r + width]
    for d in range(kernel * kernel):
        dy, dx = divmod(d, kernel)
        torch.eq(padded[dy : dy + height, dx : dx + width], centre, out=out[d])
    return out


def _shift_sum(out: torch.Tensor, src: torch.Tensor, masks: torch.Tensor, weights: list[float], step: int) -> None:
    """``out = Σ_d w_d · m_d ⊙ src(· + d)`` for one image, ``step`` rows at a time.

    ``src`` is the image padded by kernel // 2: [C, H + 2r, W + 2r]; ``out`` is [C, H, W].
    Row tiles keep the working set in cache: the loop is memory bound.
    """
    kernel = int(len(weights) ** 0.5)
    height, width = out.shape[1:]
    for y0 in range(0, height, step):
        y1 = min(height, y0 + step)
        tile = out[:, y0:y1]
        tile.zero_()
        for d, w in enumerate(weights):
            dy, dx = divmod(d, kernel)
            tile.addcmul_(src[:, y0 + dy : y1 + dy, dx : dx + width], masks[d, y0:y1], value=w)


def _standardize(z: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``ẑ = (z − mean) / (std + ε)`` over ``dim`` (population std) and the std itself."""
    std, mean = torch.std_mean(z, dim=dim, correction=0, keepdim=True)
    return (z - mean).div_(std + EPS), std


def _standardize_backward(grad: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """∂L/∂z from ∂L/∂ẑ over dim 0: ``(g − ḡ)/(σ + ε) − ẑ · mean(g ẑ)/σ``, in place on ``grad``.

    The second term's limit as σ → 0 is 0 (ẑ vanishes like σ/ε), which autograd through
    ``torch.std`` would turn into NaN for a constant logit vector.
    """
    zhat, std = _standardize(z)
    coupling = (grad * zhat).mean(0, keepdim=True)
    coupling.div_(torch.where(std > 0, std, torch.ones_like(std)))
    grad.sub_(grad.mean(0, keepdim=True)).div_(std + EPS)
    return grad.sub_(zhat.mul_(coupling))


class _SelectivePoolCE(torch.autograd.Function):
    """Per-pixel ``ℓ_p = −log softmax(v_p)[y_p]`` with ``v = P ẑ`` (0 at ignored pixels)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, kernel: int, norm: str) -> torch.Tensor:
        batch, classes, height, width = logits.shape
        work = torch.promote_types(logits.dtype, torch.float32)
        weights = ring_weights(kernel)
        xi_weights = logits.new_tensor(weights if norm == "weight" else [1.0] * len(weights), dtype=work)
        valid, safe, labels, masks, pad, step = _prepare(logits, target, kernel, work)
        probs = torch.empty(logits.shape, dtype=work, device=logits.device)  # v, then softmax(v)
        inv_xi = torch.empty((batch, height, width), dtype=work, device=logits.device)
        losses = torch.empty((batch, height, width), dtype=work, device=logits.device)
        for b in range(batch):
            _same_label_masks(labels[b], kernel, masks)
            torch.div(valid[b], torch.tensordot(xi_weights, masks, dims=1), out=inv_xi[b])
            pad[:, kernel // 2 : kernel // 2 + height, kernel // 2 : kernel // 2 + width] = _standardize(
                logits[b].to(work)
            )[0]
            v = probs[b]
            _shift_sum(v, pad, masks, weights, step)
            v.mul_(inv_xi[b])
            lse = torch.logsumexp(v, dim=0)
            torch.sub(lse, v.gather(0, safe[b][None])[0], out=losses[b]).mul_(valid[b])
            v.sub_(lse).exp_()
        ctx.save_for_backward(logits, target, probs, inv_xi)
        ctx.kernel = kernel
        return losses.to(logits.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_losses: torch.Tensor):
        logits, target, probs, inv_xi = ctx.saved_tensors
        kernel, r = ctx.kernel, ctx.kernel // 2
        height, width = logits.shape[2:]
        weights = ring_weights(kernel)
        valid, safe, labels, masks, pad, step = _prepare(logits, target, kernel, probs.dtype)
        scale = grad_losses.to(probs.dtype) * inv_xi  # ∂L/∂ℓ_p / ξ_p, zero at ignored pixels
        grad = torch.empty_like(probs)
        for b in range(logits.shape[0]):
            _same_label_masks(labels[b], kernel, masks)
            inner = pad[:, r : r + height, r : r + width]
            torch.mul(probs[b], scale[b], out=inner)  # ∂L/∂v / ξ = (softmax(v) − onehot(y)) · ∂L/∂ℓ / ξ
            inner.scatter_add_(0, safe[b][None], -scale[b][None])
            _shift_sum(grad[b], pad, masks, weights, step)  # Pᵀ is the same shifted sum (w, m symmetric)
            _standardize_backward(grad[b], logits[b].to(probs.dtype))
        return grad.to(logits.dtype), None, None, None


def _prepare(logits: torch.Tensor, target: torch.Tensor, kernel: int, work: torch.dtype):
    """Per-batch label tensors and the per-image buffers shared by forward and backward."""
    classes, height, width = logits.shape[1:]
    r = kernel // 2
    valid = target != IGNORE_INDEX
    safe = torch.where(valid, target, torch.zeros_like(target))
    labels = F.pad(target, (r, r, r, r), value=IGNORE_INDEX)
    masks = torch.empty((kernel * kernel, height, width), dtype=work, device=logits.device)
    pad = torch.zeros((classes, height + 2 * r, width + 2 * r), dtype=work, device=logits.device)
    return valid.to(work), safe, labels, masks, pad, _tile_rows(classes, height, width, logits.device)


def lad_pixel_losses(logits: torch.Tensor, target: torch.Tensor, kernel: int = 5, norm: str = "count") -> torch.Tensor:
    """The local costs ``ℓ_p`` of eq. 4, shape [B, H, W], 0 at ignored pixels.

    Raises ValueError for a label outside [0, C) other than the ignore label 255.
    """
    check_lad_params(kernel, 1, norm)
    check_inputs("lad", logits, target)
    classes = logits.shape[1]
    bad = (target != IGNORE_INDEX) & ((target < 0) | (target >= classes))
    if bool(bad.any()):
        raise ValueError(f"loss 'lad': labels must be in [0, {classes}) or {IGNORE_INDEX}, got {target[bad][0].item()}")
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
    logits: torch.Tensor, target: torch.Tensor, kernel: int = 5, k: float = 3.0, norm: str = "count"
) -> torch.Tensor:
    """LAD (eq. 5): Minkowski pooling with exponent ``k`` of the local costs over valid pixels.

    Args:
        logits: raw scores [B, C, H, W].
        target: labels [B, H, W] int64, 255 = ignore.
        kernel: odd window size s of the selective pooling (paper: 3, 5, 7).
        k: Minkowski exponent >= 1 (paper: 3); k = 1 is the plain mean.
        norm: ``"count"`` (ξ = number of same-label neighbours, the paper's) or ``"weight"`` (ξ = Σw).
    """
    check_lad_params(kernel, k, norm)
    losses = lad_pixel_losses(logits, target, kernel, norm)
    return minkowski_mean(losses, target != IGNORE_INDEX, float(k))


class LocallyAdaptiveLoss(SegLoss):
    """Locally adaptive loss (Guo et al.); see :func:`locally_adaptive_loss`.

    Args:
        kernel: odd window size (paper: 5 best).
        k: Minkowski exponent >= 1 (paper: 3 best).
        norm: ``"count"`` (paper) or ``"weight"``.
    Shape: logits [B, C, H, W], target [B, H, W] -> scalar.
    """

    def __init__(self, kernel: int = 5, k: float = 3.0, norm: Literal["count", "weight"] = "count"):
        super().__init__()
        check_lad_params(kernel, k, norm)
        self.kernel, self.k, self.norm = kernel, float(k), norm

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return locally_adaptive_loss(logits, target, self.kernel, self.k, self.norm)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, k={self.k}, norm={self.norm!r}"
