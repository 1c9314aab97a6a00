"""The memory-lean pieces of the RMI loss (``studybench.losses.rmi``), as custom autograd functions.

Why they exist: the official RMI code stacks the R² shifted copies of the label and probability
maps in float64 (``[B, C, R², N]``) and lets autograd keep every intermediate, which costs about
2 GB and 3 s per step on CPU for B=4, C=21, 224² without downsampling. The same numbers come out of

* ``sigmoid_bce_and_probs``: the BCE part and ``P = sigmoid(z)·m + 1e-6`` in one pass, never
  building the full-resolution one-hot tensor, with a hand-written backward;
* ``pooled_onehot``: downsampled one-hot labels computed by counting labels per pooling cell
  (``C`` times less work than pooling a one-hot tensor, same values);
* ``region_covariances``: the three R²×R² covariance matrices from sums of products of shifted
  *views*. Only R column-shifted float64 copies of a few maps are alive at a time (channel chunks
  sized to stay in cache), and the backward pass applies the small gradient matrices to the same
  shifted views instead of materialising gradients of the stacked vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from studybench.losses.base import safe_target, valid_mask

#: bytes of float64 work space per channel chunk in ``region_covariances``: on CPU small enough to
#: stay in L2/L3 cache, on GPUs large enough to keep the kernels busy
_CHUNK_BYTES = {"cpu": 8 << 20, "cuda": 512 << 20}


def _chunk(device: torch.device, bytes_per_channel: int) -> int:
    return max(1, _CHUNK_BYTES.get(device.type, 64 << 20) // bytes_per_channel)


class _SigmoidHead(torch.autograd.Function):
    """``(z, y) -> (Σ_{valid, classes} BCEWithLogits(z, onehot(y)), sigmoid(z)·m + eps)``."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, eps: float):
        valid = valid_mask(target, logits.shape[1]).unsqueeze(1)  # [B, 1, H, W]
        index = safe_target(target, valid.squeeze(1)).unsqueeze(1)
        mask = valid.to(logits.dtype)
        # BCEWithLogits(z, 0) = softplus(z), BCEWithLogits(z, 1) = softplus(-z): exact per entry (no
        # cancellation for confident logits) and three times cheaper than log-sigmoid on CPU
        per_entry = F.softplus(logits)
        per_entry.scatter_(1, index, F.softplus(logits.gather(1, index).neg_()))
        bce_sum = (per_entry.sum(1, keepdim=True) * mask).sum()
        del per_entry
        masked_sig = torch.sigmoid(logits).mul_(mask)
        probs = masked_sig + eps
        ctx.save_for_backward(masked_sig, index, mask)
        return bce_sum, probs

    @staticmethod
    @once_differentiable  # hand-written first derivatives only
    def backward(ctx, grad_bce: torch.Tensor, grad_probs: torch.Tensor | None):
        masked_sig, index, mask = ctx.saved_tensors
        # d/dz = m·(σ - y)·g_bce + m·σ(1 - σ)·g_P  =  s·(g_bce + g_P·(1 - s)) - g_bce·y·m,  s = σ·m
        if grad_probs is None:
            grad = masked_sig * grad_bce
        else:
            grad = torch.addcmul(grad_probs, grad_probs, masked_sig, value=-1.0).add_(grad_bce).mul_(masked_sig)
        grad.scatter_add_(1, index, mask * -grad_bce)
        return grad, None, None


def sigmoid_bce_and_probs(logits: torch.Tensor, target: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over valid pixels and classes of the one-vs-rest BCE, and the masked probabilities.

    Labels outside ``[0, C)`` (255 included) are ignored: no BCE, probability ``eps``.
    Equal to ``studybench.losses.bce.sigmoid_bce(...) · (M + 1)``, in about half the memory traffic.
    """
    return _SigmoidHead.apply(logits, target, eps)


def pooled_onehot(target: torch.Tensor, num_classes: int, pool: str, factor: int, dtype: torch.dtype) -> torch.Tensor:
    """``pool``-downsampled one-hot labels ``[B, C, H', W']`` (ignored pixels all-zero), exactly
    as pooling ``onehot(y)·m`` with ``max_pool2d``/``avg_pool2d(count_include_pad=True)``
    (kernel = stride = factor, padding = factor // 2) or nearest resizing to ``(H//s, W//s)``.
    """
    batch, height, width = target.shape
    valid = valid_mask(target, num_classes)
    if factor == 1 or pool == "nearest":
        if factor > 1:  # nearest resizing picks source pixels; resizing the label map picks the same ones
            size = (height // factor, width // factor)
            target = F.interpolate(target[:, None].to(torch.float32), size=size, mode="nearest")[:, 0].long()
            valid = valid_mask(target, num_classes)
        onehot = torch.zeros(batch, num_classes, *target.shape[1:], dtype=dtype, device=target.device)
        return onehot.scatter_(1, safe_target(target, valid).unsqueeze(1), valid.unsqueeze(1).to(dtype))
    # max / avg with kernel = stride: every pixel falls in at most one cell, so count labels per cell
    pad = factor // 2
    out_h, out_w = (height + 2 * pad - factor) // factor + 1, (width + 2 * pad - factor) // factor + 1
    rows = (torch.arange(height, device=target.device) + pad) // factor
    cols = (torch.arange(width, device=target.device) + pad) // factor
    keep = valid & (rows < out_h)[None, :, None] & (cols < out_w)[None, None, :]
    batch_idx = torch.arange(batch, device=target.device)[:, None, None]
    cell = ((batch_idx * num_classes + target) * out_h + rows[None, :, None]) * out_w + cols[None, None, :]
    bins = batch * num_classes * out_h * out_w
    cell = torch.where(keep, cell, bins)  # ignored or uncovered pixels go to one extra bin, dropped below
    counts = torch.bincount(cell.flatten(), minlength=bins + 1)[:bins].to(dtype)
    counts = counts.view(batch, num_classes, out_h, out_w)
    return (counts > 0).to(dtype) if pool == "max" else counts / float(factor * factor)


def _column_shifts(maps: list[torch.Tensor], radius: int) -> torch.Tensor:
    """``[m, S·R, H, w]`` float64 with ``out[:, s·R + dx, i, j] = maps[s][:, i, j + dx]``."""
    m, height, width = maps[0].shape
    w = width - radius + 1
    out = torch.empty(m, len(maps) * radius, height, w, dtype=torch.float64, device=maps[0].device)
    for s, x in enumerate(maps):
        for dx in range(radius):
            out[:, s * radius + dx].copy_(x[:, :, dx : dx + w])
    return out


def _rows(shifted: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Image rows ``[start, stop)`` of every column shift as one ``[m, S·R, (stop - start)·w]`` view."""
    m, channels, _, w = shifted.shape
    return shifted[:, :, start:stop].reshape(m, channels, (stop - start) * w)


def _row_products(shifted: torch.Tensor, start: int, count: int, shift: int) -> torch.Tensor:
    """``[m, count + 1, S·R, S·R]`` cumulative sums over rows ``i < start + t`` of ``X_i X_{i+shift}ᵀ``."""
    m, channels, _, _ = shifted.shape
    left = shifted[:, :, start : start + count].transpose(1, 2)
    right = shifted[:, :, start + shift : start + shift + count].transpose(1, 2)
    per_row = torch.matmul(left, right.mT)  # [m, count, S·R, S·R]
    out = torch.zeros(m, count + 1, channels, channels, dtype=per_row.dtype, device=per_row.device)
    torch.cumsum(per_row, dim=1, out=out[:, 1:])
    return out


class _RegionCovariance(torch.autograd.Function):
    """Centred second moments of the joint region vectors ``[Y windows; P windows]`` (2R² long).

    Write ``X_i`` for image row ``i`` of the R column-shifted copies of both maps (``[2R, w]``).
    The moment block between window row offsets ``a`` and ``b = a + δ`` is
    ``Σ_{i=a}^{a+h-1} X_i X_{i+δ}ᵀ``: one large product over rows ``[0, h)`` per δ, corrected by the
    few rows where the ranges for different ``a`` differ. The backward pass uses the same idea:
    away from the top and bottom R - 1 rows every window offset contributes, so the gradient
    rows are ``Σ_δ K_δ X_{i+δ}`` with 2R - 1 summed coefficient blocks ``K_δ``.
    """

    @staticmethod
    def forward(ctx, labels: torch.Tensor, probs: torch.Tensor, radius: int):
        n, height, width = probs.shape
        r = radius
        h, w = height - r + 1, width - r + 1
        d, count = r * r, h * w
        chunk = _chunk(probs.device, 2 * r * height * w * 8)
        # joint moments indexed [n, source, dy, dx, source, dy, dx]; source 0 = labels, 1 = probs
        moments = torch.empty(n, 2, r, r, 2, r, r, dtype=torch.float64, device=probs.device)
        means = torch.empty(n, 2, r, r, dtype=torch.float64, device=probs.device)
        for start in range(0, n, chunk):
            part = slice(start, min(n, start + chunk))
            m = part.stop - part.start
            shifted = _column_shifts([labels[part], probs[part]], r)  # [m, 2R, H, w]
            row_sums = shifted.sum(-1)  # [m, 2R, H]
            for a in range(r):
                means[part, :, a, :] = (row_sums[:, :, a : a + h].sum(-1) / count).view(m, 2, r)
            base = _rows(shifted, 0, h)
            for delta in range(r):
                block0 = torch.bmm(base, _rows(shifted, delta, delta + h).mT)  # offsets (0, δ)
                if delta < r - 1:  # offsets (a, a + δ) drop rows [0, a) and gain rows [h, h + a)
                    head = _row_products(shifted, 0, r - 1 - delta, delta)
                    tail = _row_products(shifted, h, r - 1 - delta, delta)
                for a in range(r - delta):
                    block = block0 if a == 0 else block0 - head[:, a] + tail[:, a]
                    block = block.view(m, 2, r, 2, r)
                    moments[part, :, a, :, :, a + delta, :] = block
                    if delta:
                        moments[part, :, a + delta, :, :, a, :] = block.permute(0, 3, 4, 1, 2)
        joint = moments.view(n, 2 * d, 2 * d)
        mean = means.view(n, 2 * d)
        # Σ (x - x̄)(y - ȳ) = Σ xy - N x̄ ȳ; float64 sums of float32 inputs keep this well below α = 5e-4
        cov = joint - count * mean[:, :, None] * mean[:, None, :]
        ctx.save_for_backward(labels, probs, mean)
        ctx.radius = radius
        cov_y = cov[:, :d, :d]
        ctx.mark_non_differentiable(cov_y)
        return cov_y, cov[:, d:, d:], cov[:, :d, d:]

    @staticmethod
    @once_differentiable  # hand-written first derivatives only
    def backward(ctx, _grad_y, grad_p: torch.Tensor | None, grad_yp: torch.Tensor | None):
        labels, probs, mean = ctx.saved_tensors
        r = ctx.radius
        n, height, width = probs.shape
        h, w = height - r + 1, width - r + 1
        d = r * r
        chunk = _chunk(probs.device, 3 * r * height * w * 8)
        # dL/d(P window c)[i] = Σ_k G[c, k] (joint window k - its mean)[i], G = P rows of (g + gᵀ)
        coeff = torch.zeros(n, d, 2 * d, dtype=torch.float64, device=probs.device)
        if grad_p is not None:
            coeff[:, :, d:] = grad_p + grad_p.mT
        if grad_yp is not None:
            coeff[:, :, :d] = grad_yp.mT
        offset = (coeff @ mean[:, :, None]).view(n, r, r)  # Σ_k G[c, k] · mean_k, per window c
        # blocks [n, dy_c, dy_k, dx_c, (source, dx_k)] multiplying the column-shifted rows
        coeff = coeff.view(n, r, r, 2, r, r).permute(0, 1, 4, 2, 3, 5).reshape(n, r, r, r, 2 * r)
        # K_δ = Σ_{dy_k - dy_c = δ} G[dy_c, dy_k], δ = -(R-1) .. R-1
        kernel = [
            sum(coeff[:, c, c + delta] for c in range(max(0, -delta), min(r, r - delta))) for delta in range(1 - r, r)
        ]
        row_in = _window_indicator(height, h, r, probs.device)  # [R, H]
        col_in = _window_indicator(width, w, r, probs.device)  # [R, W]
        grad = torch.empty_like(probs)
        inner = (r - 1, h) if h > r - 1 else (r - 1, r - 1)
        edges = [(0, min(r - 1, height)), (max(inner[1], r - 1), height)]
        for start in range(0, n, chunk):
            part = slice(start, min(n, start + chunk))
            m = part.stop - part.start
            shifted = _column_shifts([labels[part], probs[part]], r)
            full = torch.zeros(m, height, width, dtype=torch.float64, device=probs.device)
            pieces = []
            if inner[1] > inner[0]:  # rows where every window offset contributes
                acc = None
                for delta in range(1 - r, r):
                    rows = _rows(shifted, inner[0] + delta, inner[1] + delta)
                    k = kernel[delta + r - 1][part]
                    acc = torch.bmm(k, rows) if acc is None else acc.baddbmm_(k, rows)
                pieces.append((inner, acc))
            for lo, hi in edges:  # top and bottom R - 1 rows: only the offsets whose window covers them
                if hi <= lo:
                    continue
                acc = torch.zeros(m, r, (hi - lo) * w, dtype=torch.float64, device=probs.device)
                for c in range(r):
                    first, last = max(lo, c), min(hi, c + h)
                    for k in range(r) if first < last else ():
                        rows = _rows(shifted, first - c + k, last - c + k)
                        acc[:, :, (first - lo) * w : (last - lo) * w] += torch.bmm(coeff[part, c, k], rows)
                pieces.append(((lo, hi), acc))
            for (lo, hi), acc in pieces:  # undo the column shifts
                acc = acc.view(m, r, hi - lo, w)
                for dx in range(r):
                    full[:, lo:hi, dx : dx + w] += acc[:, dx]
            # the mean terms are constant over each window: subtract Σ_c offset_c·[p - c ∈ window]
            full.baddbmm_(row_in.T.expand(m, -1, -1), offset[part] @ col_in, alpha=-1.0)
            grad[part] = full
        return None, grad, None


def _window_indicator(size: int, length: int, radius: int, device: torch.device) -> torch.Tensor:
    """``[R, size]`` float64: 1 where position ``p`` lies in the window ``[c, c + length)``."""
    pos = torch.arange(size, device=device)[None, :]
    start = torch.arange(radius, device=device)[:, None]
    return ((pos >= start) & (pos < start + length)).to(torch.float64)


def region_covariances(
    labels: torch.Tensor, probs: torch.Tensor, radius: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Σ_Y, Σ_P, Σ_YP)``, each ``[n, R², R²]`` float64, of the R×R region vectors of ``[n, H, W]`` maps.

    Region vectors are anchored top-left at every valid position (offsets ``(dy, dx)`` row-major),
    centred over their ``N = (H - R + 1)(W - R + 1)`` points, not divided by N. Differentiable
    with respect to ``probs`` only (labels carry no gradient).
    """
    return _RegionCovariance.apply(labels, probs, radius)
