"""LAD's forward and backward on CPU as two fused, compiled loops (numba).

Why they exist: the tensor-op version in ``studybench.losses.lad`` (used on GPU) sweeps the
whole logits tensor once per window offset — kernel² = 49 passes at kernel 7, each a separate
memory-bound op. Here every image row is finished while its data is in cache:

* **forward**: a block of rows is standardised into a rolling buffer of ``kernel`` rows (ẑ is
  never written to memory), each output row accumulates its same-label neighbours in a [C, W]
  buffer, and the softmax cross-entropy is taken in the same pass; only softmax(v) is stored.
* **backward**: per row, the same pooling applied to ``(softmax(v) − onehot(y)) · ∂L/∂ℓ / ξ`` of
  the neighbours (the pooling is symmetric up to 1/ξ), then the standardisation's backward.
* **register blocking**: the inner loop adds all ``kernel`` column offsets of a window row to
  one accumulator element at a time, so each accumulator is loaded and stored once per window
  row instead of once per offset. This is why ``kernel`` is compiled in (one pair of functions
  per size, cached on disk by numba) — with a run-time size LLVM cannot unroll and vectorise it.
* All row slices are taken before indexing (``a = acc[c]; a[k]``): numba's negative-index
  wrap-around on ``x[j + dx]`` would otherwise keep LLVM from vectorising, ~9× slower.

The arithmetic is the tensor version's, in the input's precision (float32 or float64); both
are compared with the naive float64 reference in the tests.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache, lru_cache

import numpy as np
from numba import njit, types
from numba.extending import overload

from studybench import IGNORE_INDEX

EPS = 1e-5  # added to the per-pixel std, as in lad.py
#: rows per parallel task in the forward; each task re-standardises kernel − 1 halo rows
BLOCK_ROWS = 32
# ``contract`` only allows fused multiply-adds: no reassociation, no finite-math assumptions
_JIT = {"cache": True, "error_model": "numpy", "fastmath": {"contract"}}


def exp_nonpositive(x):
    """``exp(x)`` for ``x <= 0``; in compiled code float32 gets a vectorisable version below."""
    return math.exp(x)


_F32 = np.float32
_LOG2E, _LN2_HI, _LN2_LO = _F32(1.4426950408889634), _F32(0.693359375), _F32(-2.1219444005469058e-4)
_TAYLOR = tuple(_F32(1 / math.factorial(n)) for n in range(8))
_POW2 = tuple(_F32(2.0 ** -(2**b)) for b in range(7))  # 2^-1, 2^-2, 2^-4, …, 2^-64


@overload(exp_nonpositive, jit_options=_JIT)
def _exp_nonpositive_compiled(x):
    """float32: ``2^n · e^f`` with ``n = round(x / ln 2)``, ``|f| <= ln 2 / 2``, ``e^f`` by its Taylor
    polynomial of degree 7 (truncation 5e-9) and ``2^n`` by multiplying the powers 2^-2^b of
    ``-n``'s bits — all plain arithmetic, so LLVM vectorises it, unlike a call to ``expf`` (the
    softmax's exps were half the forward's time). Relative error < 3e-7 (tested). Below −87
    the result is ~1e-38 or less: clamped there. float64 keeps ``math.exp``.
    """
    if x != types.float32:
        return lambda x: math.exp(x)

    def exp32(x):
        x = max(x, _F32(-87.0))
        n = np.floor(x * _LOG2E + _F32(0.5))
        f = (x - n * _LN2_HI) - n * _LN2_LO
        p = _TAYLOR[7]
        for c in _TAYLOR[6::-1]:
            p = p * f + c
        m = -n
        for scale in _POW2:
            half = np.floor(m * _F32(0.5))
            p = p * scale if m > half + half else p  # a select, not a branch
            m = half
        return p

    return exp32


@njit(**_JIT)
def _row_stats(logits, b, i, mean, std):
    """Mean and population std over the classes of every pixel of row ``i``, into ``mean``, ``std``."""
    classes, width = logits.shape[1], logits.shape[3]
    mean[:] = 0
    std[:] = 0
    for c in range(classes):
        x = logits[b, c, i]
        for j in range(width):
            mean[j] += x[j]
    for j in range(width):
        mean[j] /= classes
    for c in range(classes):
        x = logits[b, c, i]
        for j in range(width):
            d = x[j] - mean[j]
            std[j] += d * d
    for j in range(width):
        std[j] = math.sqrt(std[j] / classes)


@njit(**_JIT)
def _standardise_row(logits, b, i, out, slot, r, mean, std):
    """``out[0, c, slot, r:r + W] = ẑ`` of row ``i``; ``out``'s ``r`` border columns stay zero."""
    classes, width = logits.shape[1], logits.shape[3]
    _row_stats(logits, b, i, mean, std)
    for j in range(width):
        std[j] = 1 / (std[j] + EPS)
    for c in range(classes):
        x = logits[b, c, i]
        z = out[0, c, slot, r : r + width]
        for j in range(width):
            z[j] = (x[j] - mean[j]) * std[j]


@njit(**_JIT)
def _softmax_ce_row(acc, xi, labels, probs, b, i, r, losses, inv_xi):
    """From the pooled sums ``acc`` [C, W] and ξ of row ``i``: ``ℓ = −log softmax(acc/ξ)[y]``,
    ``softmax`` into ``probs[b, :, i, r:r + W]``, ``1/ξ`` (0 at ignored pixels) into ``inv_xi``.
    ``acc`` is overwritten.
    """
    classes, width = acc.shape
    scale, cost = inv_xi[b, i], losses[b, i]
    top = np.empty(width, acc.dtype)
    total = np.zeros(width, acc.dtype)
    for j in range(width):
        scale[j] = 1 / xi[j] if labels[j] != IGNORE_INDEX else 0
    for c in range(classes):
        a = acc[c]
        for j in range(width):
            a[j] *= scale[j]
    top[:] = acc[0]
    for c in range(1, classes):
        a = acc[c]
        for j in range(width):
            top[j] = max(top[j], a[j])
    for j in range(width):
        y = labels[j]
        cost[j] = 0 if y == IGNORE_INDEX else top[j] - acc[y, j]
    for c in range(classes):
        a = acc[c]
        for j in range(width):
            e = exp_nonpositive(a[j] - top[j])
            a[j] = e
            total[j] += e
    for j in range(width):
        if labels[j] != IGNORE_INDEX:
            cost[j] += math.log(total[j])
        total[j] = 1 / total[j]
    for c in range(classes):
        a = acc[c]
        p = probs[b, c, i, r : r + width]
        for j in range(width):
            p[j] = a[j] * total[j]


@cache
def kernels(kernel: int) -> tuple[Callable, Callable]:
    """The compiled ``(forward, backward)`` pair for one odd window size."""
    r = kernel // 2

    @njit(**_JIT)
    def add_window_row(acc, masks, src, b, row):
        """``acc[c, k] += Σ_dx masks[dx, k] · src[b, c, row, k + dx]``: one window row, all its column
        offsets added to an accumulator element before it is stored (``src`` padded by r columns).
        """
        for c in range(acc.shape[0]):
            a, s = acc[c], src[b, c, row]
            for k in range(acc.shape[1]):
                t = a[k]
                for dx in range(kernel):
                    t += masks[dx, k] * s[k + dx]
                a[k] = t

    @njit(nogil=True, **_JIT)
    def forward(logits, target, weights, xi_weights, probs, losses, inv_xi, block_rows, first, stop):
        """Tasks ``first … stop − 1`` (blocks of ``block_rows`` rows, see ``forward_tasks``):
        ``probs`` [B, C, H, W + 2r] gets softmax(v) (zero borders), ``losses`` and ``inv_xi``
        [B, H, W] the costs and 1/ξ.
        """
        batch, classes, height, width = logits.shape
        blocks = (height + block_rows - 1) // block_rows
        for task in range(first, stop):
            b = task // blocks
            i0 = (task % blocks) * block_rows
            i1 = min(height, i0 + block_rows)
            window = np.zeros((1, classes, kernel, width + 2 * r), logits.dtype)  # ẑ of rows i − r … i + r
            acc = np.empty((classes, width), logits.dtype)
            xi = np.empty(width, logits.dtype)
            masks = np.zeros((kernel, width), logits.dtype)  # w · [same label], per column offset
            mean = np.empty(width, logits.dtype)
            inv = np.empty(width, logits.dtype)
            for i in range(max(0, i0 - r), min(height, i0 + r)):
                _standardise_row(logits, b, i, window, i % kernel, r, mean, inv)
            for i in range(i0, i1):
                if i + r < height:
                    _standardise_row(logits, b, i + r, window, (i + r) % kernel, r, mean, inv)
                centre = target[b, i]
                acc[:] = 0
                xi[:] = 0
                for dy in range(kernel):
                    row = i + dy - r
                    if row < 0 or row >= height:
                        continue
                    for dx in range(kernel):
                        j0, j1 = max(0, r - dx), min(width, width + r - dx)
                        w, xw = weights[dy, dx], xi_weights[dy, dx]
                        m, x, y = masks[dx, j0:j1], xi[j0:j1], centre[j0:j1]
                        other = target[b, row, j0 + dx - r : j1 + dx - r]
                        for k in range(j1 - j0):
                            same = other[k] == y[k]
                            m[k] = w if same else 0
                            x[k] += xw if same else 0
                    add_window_row(acc, masks, window, 0, row % kernel)
                _softmax_ce_row(acc, xi, centre, probs, b, i, r, losses, inv_xi)
                for c in range(classes):
                    p = probs[b, c, i]
                    for j in range(r):
                        p[j] = 0
                        p[width + r + j] = 0

    @njit(nogil=True, **_JIT)
    def backward(logits, target, probs, grad_losses, inv_xi, weights, grad, first, stop):
        """Rows ``first … stop − 1`` (of B·H) of ``grad`` [B, C, H, W] = ∂L/∂logits, from
        ``grad_losses`` [B, H, W] and the forward's outputs.
        """
        batch, classes, height, width = logits.shape
        for task in range(first, stop):
            b, i = task // height, task % height
            acc = np.zeros((classes, width), logits.dtype)  # ∂L/∂ẑ of row i
            masks = np.zeros((kernel, width), logits.dtype)  # w · [same label] · ∂L/∂ℓ / ξ of the neighbour
            onehot = np.zeros(width, logits.dtype)
            centre = target[b, i]
            for dy in range(kernel):
                row = i + dy - r
                if row < 0 or row >= height:
                    continue
                for dx in range(kernel):
                    j0, j1 = max(0, r - dx), min(width, width + r - dx)
                    w = weights[dy, dx]
                    m, y = masks[dx, j0:j1], centre[j0:j1]
                    other = target[b, row, j0 + dx - r : j1 + dx - r]
                    g = grad_losses[b, row, j0 + dx - r : j1 + dx - r]
                    s = inv_xi[b, row, j0 + dx - r : j1 + dx - r]
                    for k in range(j1 - j0):
                        m[k] = w * g[k] * s[k] if other[k] == y[k] else 0
                add_window_row(acc, masks, probs, b, row)
                for dx in range(kernel):  # −onehot(y_q) part: q has the centre's label
                    m = masks[dx]
                    for k in range(width):
                        onehot[k] += m[k]
            for j in range(width):
                if centre[j] != IGNORE_INDEX:
                    acc[centre[j], j] -= onehot[j]
            _standardise_backward_row(acc, logits, b, i, grad)

    return forward, backward


@njit(**_JIT)
def _standardise_backward_row(g, logits, b, i, grad):
    """``grad[b, :, i] = (g − ḡ)/(σ + ε) − ẑ · mean(g ẑ)/σ`` (second term 0 at σ = 0)."""
    classes, width = g.shape
    mean = np.empty(width, g.dtype)
    std = np.empty(width, g.dtype)
    _row_stats(logits, b, i, mean, std)
    g_mean = np.zeros(width, g.dtype)
    coupling = np.zeros(width, g.dtype)
    inv = np.empty(width, g.dtype)
    for j in range(width):
        inv[j] = 1 / (std[j] + EPS)
    for c in range(classes):
        a, x = g[c], logits[b, c, i]
        for j in range(width):
            g_mean[j] += a[j]
            coupling[j] += a[j] * (x[j] - mean[j])
    for j in range(width):
        g_mean[j] /= classes
        coupling[j] = coupling[j] * inv[j] / classes / std[j] if std[j] > 0 else 0
    for c in range(classes):
        a, x, out = g[c], logits[b, c, i], grad[b, c, i]
        for j in range(width):
            out[j] = ((a[j] - g_mean[j]) - (x[j] - mean[j]) * coupling[j]) * inv[j]


def forward_tasks(batch: int, height: int, block_rows: int) -> int:
    return batch * ((height + block_rows - 1) // block_rows)


def run_parallel(fn: Callable, args: tuple, tasks: int, threads: int) -> None:
    """``fn(*args, first, stop)`` over ``tasks`` split in contiguous ranges, one per thread.

    The compiled loops release the GIL, so plain threads run them in parallel; this keeps the
    thread count under the caller's control (``torch.get_num_threads``) and avoids a second
    OpenMP runtime beside torch's, and compiles far faster than numba's ``parallel=True``.
    """
    threads = max(1, min(threads, tasks))
    bounds = [tasks * t // threads for t in range(threads + 1)]
    if threads == 1:
        fn(*args, 0, tasks)
        return
    pool = _pool(threads, os.getpid())  # a forked child gets its own (threads do not survive a fork)
    futures = [pool.submit(fn, *args, lo, hi) for lo, hi in zip(bounds, bounds[1:])]
    for future in futures:
        future.result()


@lru_cache(maxsize=4)
def _pool(threads: int, pid: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="studybench-lad")
