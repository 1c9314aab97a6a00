"""RMI: Region Mutual Information loss, value-for-value equal to the official implementation.

Each pixel is represented by the R×R square of pixels starting at it, so a map becomes a set of
d = R² dimensional points; RMI maximises, class by class, a lower bound of the mutual information
between the label points Y and the prediction points P (Gaussian approximation):

    I(Y; P) >= -½ log det(Σ_Y - Σ_YP Σ_P⁻¹ Σ_YPᵀ) + const,

so the loss term per image and class is ``½ log det(A + αI)`` with the posterior-variance
approximation ``A = Σ_Y - Σ_YP (Σ_P + αI)⁻¹ Σ_YPᵀ``.

Reference:
    Zhao, Wang, Yang, Cai, "Region Mutual Information Loss for Semantic Segmentation",
    NeurIPS 2019 (arXiv:1910.12037), Sec. 3: the lower bound ``I_l(Y; P)`` of the region MI
    through the approximated posterior variance ``M = Σ_Y - Cov(Y,P) Var(P)⁻¹ Cov(Y,P)ᵀ`` and its
    log-determinant by Cholesky, and the overall objective
    ``L = λ·L_bce + (1 - λ)·(1/B) Σ_b Σ_c L_rmi`` (the paper's closing equation of Sec. 3).
    Official code github.com/ZJULearning/RMI (``losses/rmi/rmi.py``), whose constants we keep.
    Exact specification: ``methods.md`` §2 of this project.

Shape:
    logits ``[B, C, H, W]`` (any float dtype; half precision is computed in float32), target
    ``[B, H, W]`` int64 where any label outside ``[0, C)`` (255 included) is ignored.
    After downsampling by ``factor`` the map ``[B, C, H', W']`` must satisfy ``H', W' >= radius``;
    there are ``N = (H' - R + 1)(W' - R + 1)`` region vectors per image and class.
    Returns scalars ``(total, bce, rmi)`` in the logits' dtype.

The heavy lifting (covariances without stacking R² float64 copies, fused BCE + probabilities)
lives in ``studybench.losses._rmi_kernels``; this module states the algorithm.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from studybench.losses._rmi_kernels import pooled_onehot, region_covariances, sigmoid_bce_and_probs
from studybench.losses.base import SegLoss, check_inputs, valid_mask

#: added to ``sigmoid(z)·m`` so ignored pixels have probability 1e-6 (official ``_CLIP_MIN``)
CLIP_MIN = 1e-6
#: ridge added to Σ_P before inversion and to A before the Cholesky (official ``_POS_ALPHA``)
POS_ALPHA = 5e-4
#: added to the Cholesky diagonal inside the log (official ``log_det_by_cholesky``)
LOG_EPS = 1e-8
POOL_WAYS = ("max", "avg", "nearest")


class RMINumericalError(FloatingPointError):
    """RMI met non-finite logits or a covariance that is not positive definite."""


def _check_params(radius: int, pool: str, factor: int, bce_weight: float, lambda_way: int) -> None:
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
        raise ValueError(f"loss 'rmi': radius must be an integer >= 1, got {radius!r}")
    if pool not in POOL_WAYS:
        raise ValueError(f"loss 'rmi': pool must be one of {', '.join(POOL_WAYS)}, got {pool!r}")
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"loss 'rmi': factor must be an integer >= 1 (1 = no downsampling), got {factor!r}")
    if not 0.0 <= bce_weight <= 1.0:
        raise ValueError(f"loss 'rmi': bce_weight must be in [0, 1], got {bce_weight!r}")
    if lambda_way not in (0, 1):
        raise ValueError(f"loss 'rmi': lambda_way must be 0 or 1, got {lambda_way!r}")


def downsampled_size(height: int, width: int, pool: str, factor: int) -> tuple[int, int]:
    """Spatial size of the maps the region vectors are taken from."""
    if factor == 1:
        return height, width
    if pool == "nearest":
        return height // factor, width // factor
    pad = factor // 2
    return (height + 2 * pad - factor) // factor + 1, (width + 2 * pad - factor) // factor + 1


def downsample_probs(probs: torch.Tensor, pool: str, factor: int) -> torch.Tensor:
    """Pool size = stride = ``factor``, padding ``factor // 2``; ``nearest`` resizes bilinearly."""
    if factor == 1:
        return probs
    if pool == "max":
        return F.max_pool2d(probs, factor, factor, factor // 2)
    if pool == "avg":
        return F.avg_pool2d(probs, factor, factor, factor // 2)  # count_include_pad=True, as official
    size = downsampled_size(probs.shape[2], probs.shape[3], pool, factor)
    return F.interpolate(probs, size=size, mode="bilinear", align_corners=True)


def rmi_lower_bound(labels: torch.Tensor, probs: torch.Tensor, radius: int) -> torch.Tensor:
    """The RMI term from downsampled one-hot labels and probabilities ``[B, C, H', W']``.

    Per image and class ``r = ½ log det(A + αI)`` (computed as Σ log(L_ii + 1e-8) of the
    Cholesky factor), averaged over the batch, cast to the logits' float dtype (float32 for
    float32/half inputs, as official) and divided by R²; the term is the SUM over classes, not
    the mean (official ``_IS_SUM = 1``; the spec insists on it). Channels whose label map is
    constant (a class absent from the image) have Σ_Y = Σ_YP = 0, hence A = 0 and
    ``r = R²·log(√α + 1e-8)`` with zero gradient; they skip the covariance work.
    """
    batch, classes, height, width = probs.shape
    d = radius * radius
    out_dtype = torch.float64 if probs.dtype == torch.float64 else torch.float32
    flat_labels = labels.reshape(batch * classes, height, width)
    flat_probs = probs.reshape(batch * classes, height, width)
    active = (flat_labels.amax((1, 2)) > flat_labels.amin((1, 2))).nonzero().squeeze(1)
    r = torch.full((batch * classes,), d * math.log(math.sqrt(POS_ALPHA) + LOG_EPS), dtype=torch.float64)
    r = r.to(probs.device)
    if active.numel() > 0:
        all_active = active.numel() == batch * classes
        cov_y, cov_p, cov_yp = region_covariances(
            flat_labels if all_active else flat_labels.index_select(0, active),
            flat_probs if all_active else flat_probs.index_select(0, active),
            radius,
        )
        eye = POS_ALPHA * torch.eye(d, dtype=torch.float64, device=probs.device)
        chol_p, info_p = torch.linalg.cholesky_ex(cov_p + eye)
        # A = Σ_Y - Σ_YP (Σ_P + αI)⁻¹ Σ_YPᵀ, with a Cholesky solve instead of an explicit inverse
        approx_var = cov_y - cov_yp @ torch.cholesky_solve(cov_yp.mT, chol_p)
        chol_a, info_a = torch.linalg.cholesky_ex(approx_var + eye)
        _raise_if_not_positive_definite(info_p, info_a, cov_p + eye, approx_var + eye, active, classes)
        # ½ · 2 Σ_i log(L_ii + 1e-8)
        r_active = torch.log(torch.diagonal(chol_a, dim1=-2, dim2=-1) + LOG_EPS).sum(-1)
        r = r.index_put((active,), r_active) if not all_active else r_active
    per_class = r.view(batch, classes).mean(0).to(out_dtype) / d
    return per_class.sum()  # SUM over classes (official _IS_SUM = 1), not the mean


def _raise_if_not_positive_definite(
    info_p: torch.Tensor,
    info_a: torch.Tensor,
    mat_p: torch.Tensor,
    mat_a: torch.Tensor,
    active: torch.Tensor,
    classes: int,
) -> None:
    failed = (info_p != 0) | (info_a != 0)
    if not bool(failed.any()):
        return
    bad = int(failed.nonzero()[0, 0])
    which, matrix = ("Σ_P + αI", mat_p) if int(info_p[bad]) != 0 else ("A + αI", mat_a)
    flat = int(active[bad])
    eig = torch.linalg.eigvalsh(matrix[bad].detach()) if bool(torch.isfinite(matrix[bad]).all()) else None
    stats = "non-finite entries" if eig is None else f"min eigenvalue {float(eig.min()):.3e}"
    raise RMINumericalError(
        f"loss 'rmi': Cholesky of {which} failed for batch item {flat // classes}, class {flat % classes} "
        f"({int(failed.sum())} of {failed.numel()} image-class pairs failed; {stats}, "
        f"min diagonal {float(matrix[bad].diagonal().min()):.3e})"
    )


def _check_finite(logits: torch.Tensor) -> None:
    """Raise on NaN/Inf logits; one cheap reduction in the normal case (a sum is finite iff all are,
    barring overflow, which the exact count below rules out)."""
    if bool(torch.isfinite(logits.detach().sum())):
        return
    bad = ~torch.isfinite(logits.detach())
    if not bool(bad.any()):
        return
    nan = int(torch.isnan(logits.detach()).sum())
    items = sorted({int(i) for i in bad.nonzero()[:, 0].unique()})
    raise RMINumericalError(
        f"loss 'rmi': logits contain {int(bad.sum())} non-finite values ({nan} NaN, "
        f"{int(bad.sum()) - nan} ±Inf) in batch item(s) {items}"
    )


def region_mutual_information(
    logits: torch.Tensor,
    target: torch.Tensor,
    radius: int = 3,
    pool: str = "avg",
    factor: int = 4,
    bce_weight: float = 0.5,
    lambda_way: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(total, bce, rmi)`` of the RMI loss (methods.md §2, Zhao et al. 2019 Sec. 3).

    Args:
        logits: ``[B, C, H, W]`` raw scores; sigmoid (one-vs-rest), not softmax.
        target: ``[B, H, W]`` int64 labels; any label >= C (e.g. 255) is ignored.
        radius: side R of the square region; points have d = R² dimensions.
        pool: downsampling before the region vectors: ``max``, ``avg`` or ``nearest``.
        factor: pool size = stride (1 = no downsampling).
        bce_weight: λ. ``lambda_way=1``: ``λ·bce + (1 - λ)·rmi``; ``lambda_way=0``: ``bce + λ·rmi``.

    ``bce`` is Σ over valid pixels and classes of BCEWithLogits, divided by (M + 1) (M = valid
    pixels); ``rmi`` is the sum over classes of ``rmi_lower_bound``. An all-ignored batch gives
    ``bce = 0`` and ``rmi = C·log(√α + 1e-8) ≈ C·½·ln α`` with a zero gradient.
    """
    _check_params(radius, pool, factor, bce_weight, lambda_way)
    check_inputs("rmi", logits, target)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    _check_finite(logits)
    batch, classes, height, width = logits.shape
    size = downsampled_size(height, width, pool, factor)
    if min(size) < radius:
        raise ValueError(
            f"loss 'rmi': the {height}x{width} map downsampled by factor {factor} ({pool}) is "
            f"{size[0]}x{size[1]}, smaller than radius {radius}"
        )
    # the covariance / solve / log-det work is float64 on purpose: keep autocast out of it
    with torch.autocast(device_type=logits.device.type, enabled=False):
        bce_sum, probs = sigmoid_bce_and_probs(logits, target, CLIP_MIN)
        num_valid = valid_mask(target, classes).sum().to(logits.dtype)
        bce = bce_sum / (num_valid + 1.0)
        labels = pooled_onehot(target, classes, pool, factor, logits.dtype)
        rmi = rmi_lower_bound(labels, downsample_probs(probs, pool, factor), radius)
    total = bce_weight * bce + (1.0 - bce_weight) * rmi if lambda_way == 1 else bce + bce_weight * rmi
    return total, bce, rmi


class RMILoss(SegLoss):
    """Region Mutual Information loss (Zhao et al., NeurIPS 2019); records parts ``bce``, ``rmi``.

    Args:
        radius: region side R (1-5 in the paper's ablations; 3 is the official setting).
        pool: ``max`` | ``avg`` | ``nearest`` downsampling (official: ``avg``).
        factor: downsampling factor, pool size = stride (official: 4; 1 = none, as Gonçalves et al.).
        bce_weight: λ (official 0.5).
        lambda_way: 1 = ``λ·bce + (1 - λ)·rmi`` (official), 0 = ``bce + λ·rmi``.
    """

    def __init__(
        self,
        radius: int = 3,
        pool: Literal["max", "avg", "nearest"] = "avg",
        factor: int = 4,
        bce_weight: float = 0.5,
        lambda_way: int = 1,
    ):
        super().__init__()
        _check_params(radius, pool, factor, bce_weight, lambda_way)
        self.radius, self.pool, self.factor = radius, pool, factor
        self.bce_weight, self.lambda_way = bce_weight, lambda_way

    def check_input_size(self, height: int, width: int) -> None:
        """``ValueError`` if a ``radius`` x ``radius`` region does not fit the downsampled maps (checked
        before training, see ``studybench.checks``)."""
        h, w = downsampled_size(height, width, self.pool, self.factor)
        if min(h, w) < self.radius:
            raise ValueError(
                f"loss 'rmi': radius {self.radius} needs maps of at least {self.radius}x{self.radius}, but "
                f"{height}x{width} inputs downsampled by factor {self.factor} give {h}x{w}; "
                "lower radius or factor, or use larger crops"
            )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total, bce, rmi = region_mutual_information(
            logits, target, self.radius, self.pool, self.factor, self.bce_weight, self.lambda_way
        )
        self._record(bce=bce, rmi=rmi)
        return total
