"""Center loss (Wen et al. 2016) for segmentation: CE + λ · ½‖x − c_y‖² on decoder features.

Each pixel's decoder feature vector x_i (the input of the segmentation head) is pulled
towards the centre c_{y_i} of its class. The centres are not learned by gradient descent:
they are a buffer moved towards the batch's class means after every training step, so the
term shrinks intra-class variation without a trivial collapse of the centres.

Reference: Y. Wen, K. Zhang, Z. Li, Y. Qiao, "A Discriminative Feature Learning Approach for
Deep Face Recognition", ECCV 2016 — eq. 2 (L_C = ½ Σ‖x_i − c_{y_i}‖²), eq. 4 (centre update
Δc_j), Algorithm 1 (c_j ← c_j − α Δc_j). Guo et al. (LAD paper, §4.2) use α = 0.5, λ = 3e-4.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from studybench import IGNORE_INDEX
from studybench.losses.base import SegLoss, check_inputs
from studybench.losses.ce import cross_entropy


def center_term(features: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """``(1/N) Σ_i ½‖x_i − c_{y_i}‖²`` for features [N, D], labels [N], centres [C, D]; 0 if N = 0."""
    diff = features - centers[labels].to(features.dtype)
    return 0.5 * diff.pow(2).sum() / max(labels.numel(), 1)


@torch.no_grad()
def update_centers(centers: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, alpha: float) -> None:
    """In place: ``c_j ← c_j − α Σ_i [y_i=j](c_j − x_i) / (1 + Σ_i [y_i=j])`` (classes absent: no change)."""
    counts = torch.bincount(labels, minlength=centers.shape[0]).to(centers.dtype).unsqueeze(1)
    sums = torch.zeros_like(centers).index_add_(0, labels, features.detach().to(centers.dtype))
    centers.sub_(alpha * (counts * centers - sums) / (1 + counts))


def pixels_used(
    features: torch.Tensor, target: torch.Tensor, max_pixels: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Valid pixels' features [N, D] and labels [N], the target resized to the features' grid.

    The target is resized with ``nearest`` (PyTorch's: the top-left label of each block), so no
    label is ever blended with 255. With ``max_pixels`` set and more valid pixels than that, a
    uniform random subset is drawn with ``torch.randperm`` from the default generator. In a
    run that generator is the method's own stream (``rng.seed_method_stream``): data order,
    augmentation and initial weights never draw from it, so the subset shifts none of them,
    and checkpoints restore it for an exact resume.
    """
    if target.shape[-2:] != features.shape[-2:]:
        target = F.interpolate(target[:, None].float(), size=features.shape[-2:], mode="nearest")[:, 0].long()
    labels = target.reshape(-1)
    index = (labels != IGNORE_INDEX).nonzero().squeeze(1)
    if max_pixels is not None and index.numel() > max_pixels:
        index = index[torch.randperm(index.numel(), device=index.device)[:max_pixels]]
    pixels = features.shape[2] * features.shape[3]
    return features.flatten(2)[index // pixels, :, index % pixels], labels[index]


class CenterLoss(SegLoss):
    """``CE(logits, y) + weight · center`` with class centres updated each training step.

    Args:
        alpha: centre learning rate α in (0, 1] (Guo et al.: 0.5).
        weight: λ, the weight of the centre term (Guo et al.: 3e-4).
        max_pixels: use at most this many valid pixels per batch for the centre term and the
            update (a random subset, see :func:`pixels_used`); ``None`` uses them all.
    Shape: logits [B, C, H, W], target [B, H, W], features [B, D, h, w] (h, w may be smaller,
        e.g. 1/8 for DeepLabV3) -> scalar. Parts: ``ce`` and ``center`` (unweighted).

    The centres are a buffer of shape [C, D], created (zeros) on the first call and updated
    only in training mode; they are saved in the state dict.
    """

    requires = frozenset({"features"})

    def __init__(self, alpha: float = 0.5, weight: float = 3e-4, max_pixels: int | None = None):
        super().__init__()
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        if max_pixels is not None and max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1 or None, got {max_pixels}")
        self.alpha, self.weight, self.max_pixels = float(alpha), float(weight), max_pixels
        self.register_buffer("centers", torch.empty(0))

    def forward(self, logits: torch.Tensor, target: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        check_inputs("center", logits, target)
        if features is None or features.dim() != 4 or features.shape[0] != logits.shape[0]:
            shape = None if features is None else tuple(features.shape)
            raise ValueError(f"loss 'center' needs features=[B, D, h, w] with B = {logits.shape[0]}, got {shape}")
        ce = cross_entropy(logits, target)  # also rejects labels outside [0, C) before they index centres
        if self.centers.numel() == 0:
            dtype = torch.promote_types(features.dtype, torch.float32)  # no half-precision running means
            self.centers = features.new_zeros((logits.shape[1], features.shape[1]), dtype=dtype).detach()
        elif self.centers.shape != (logits.shape[1], features.shape[1]):
            raise ValueError(
                f"loss 'center': centres are {tuple(self.centers.shape)} (classes, feature dim), "
                f"got {logits.shape[1]} classes and {features.shape[1]}-dim features"
            )
        x, y = pixels_used(features, target, self.max_pixels)
        center = center_term(x, y, self.centers)
        if self.training:
            update_centers(self.centers, x, y, self.alpha)
        self._record(ce=ce, center=center)
        return ce + self.weight * center

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        saved = state_dict.get(prefix + "centers")
        if saved is not None and self.centers.shape != saved.shape:  # lazily sized: adopt the saved shape
            self.centers = torch.empty_like(saved, device=self.centers.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, weight={self.weight}, max_pixels={self.max_pixels}"
