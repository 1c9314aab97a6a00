"""What ``studybench bench`` measures: the loss and scheme cases, the sizes, and one step of each.

A *loss case* is one registered loss at one setting (its paper setting, or a named variant such
as RMI without downsampling or LAD at kernel 3/5/7), timed as forward + backward on detached
logits (and decoder features for the losses that declare them, as the supervised scheme feeds
them). A *scheme case* (SR, DML) changes the whole training step, so it is timed as one
``train_step`` of the scheme against the supervised CE step of the same U-Net-resnet18.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from studybench import IGNORE_INDEX
from studybench.losses import build_loss, list_losses

#: Channels of the decoder features of smp's default U-Net (the last decoder block), which the
#: losses that need ``features`` (center loss) get in a U-Net-resnet18 run.
UNET_FEATURE_CHANNELS = 16


@dataclass(frozen=True)
class LossCase:
    name: str
    loss: str
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    paper: bool = False  # the setting of its source paper (the 5 % goal is about these)


@dataclass(frozen=True)
class SchemeCase:
    name: str
    scheme: dict[str, Any]
    note: str = ""
    paper: bool = False


_RMI = {"radius": 3, "pool": "avg", "factor": 4, "bce_weight": 0.5}
LOSS_CASES: dict[str, LossCase] = {
    c.name: c
    for c in (
        LossCase("ce", "ce", note="softmax cross-entropy (the baseline)", paper=True),
        LossCase("bce", "bce", note="sigmoid BCE"),
        LossCase("focal", "focal", {"gamma": 2.0}, note="softmax focal, γ = 2", paper=True),
        LossCase(
            "focal-sigmoid", "focal-sigmoid", {"alpha": 0.25, "gamma": 2.0}, note="Guo et al.'s focal", paper=True
        ),
        LossCase("dice", "dice", note="smp Dice (multiclass)"),
        LossCase("jaccard", "jaccard", note="smp Jaccard"),
        LossCase("tversky", "tversky", note="smp Tversky"),
        LossCase("lovasz", "lovasz", note="smp Lovász-softmax"),
        LossCase("ce+dice", "sum", {"terms": [{"name": "ce"}, {"name": "dice"}]}, note="quickstart's sum"),
        LossCase(
            "center", "center", {"alpha": 0.5, "weight": 3e-4}, note="CE + centre term on decoder features", paper=True
        ),
        LossCase("rmi", "rmi", _RMI, note="R = 3, avg pool 4/4, λ = 0.5 (Zhao et al.)", paper=True),
        LossCase("rmi-f1", "rmi", {**_RMI, "factor": 1}, note="no downsampling (Gonçalves et al.)", paper=True),
        LossCase("lad-k3", "lad", {"kernel": 3, "k": 3}, note="LAD kernel 3, k = 3", paper=True),
        LossCase("lad-k5", "lad", {"kernel": 5, "k": 3}, note="LAD kernel 5, k = 3 (best in Guo et al.)", paper=True),
        LossCase("lad-k7", "lad", {"kernel": 7, "k": 3}, note="LAD kernel 7, k = 3", paper=True),
    )
}

SCHEME_CASES: dict[str, SchemeCase] = {
    "sr": SchemeCase(
        "sr",
        {"name": "self-regulation", "mea": True, "sr_f": True, "sr_l": True},
        note="Self-Regulation MEA + SR-F + SR-L (Zhang et al.), a step vs the supervised step",
        paper=True,
    ),
    "sr-mea": SchemeCase(
        "sr-mea",
        {"name": "self-regulation", "mea": True, "sr_f": False, "sr_l": False},
        note="multi-exit CE only (MEA), a step vs the supervised step",
    ),
    "dml": SchemeCase(
        "dml",
        {"name": "mutual", "peer": {"arch": "deeplabv3", "encoder": "resnet50", "weights": None}},
        note="mutual learning with a DeepLabV3-resnet50 peer (Gonçalves et al.), a step vs the supervised step",
        paper=True,
    ),
}

#: The real models whose training step the loss costs are compared with.
MODELS = {"unet-r18": ("unet", "resnet18"), "deeplabv3-r50": ("deeplabv3", "resnet50")}


def all_case_names() -> list[str]:
    return [*LOSS_CASES, *SCHEME_CASES]


def select_cases(names: list[str] | None) -> tuple[list[LossCase], list[SchemeCase]]:
    """Cases by name (a case name, or any registered loss at its defaults); ``None`` = all.

    Raises ``ValueError`` listing the valid names for an unknown one. CE is always included
    (every ratio is to CE measured in the same process).
    """
    if not names:
        return list(LOSS_CASES.values()), list(SCHEME_CASES.values())
    registered = [n for n in list_losses() if n not in LOSS_CASES and n != "sum"]
    losses, schemes = [LOSS_CASES["ce"]], []
    for name in names:
        if name in LOSS_CASES:
            case = LOSS_CASES[name]
        elif name in SCHEME_CASES:
            schemes.append(SCHEME_CASES[name])
            continue
        elif name in registered:
            case = LossCase(name, name, note="registered defaults")
        else:
            raise ValueError(
                f"unknown loss {name!r}; available: {', '.join(all_case_names())}"
                + (f" (or a registered loss at its defaults: {', '.join(registered)})" if registered else "")
            )
        if case not in losses:
            losses.append(case)
    return losses, schemes


@dataclass(frozen=True, order=True)
class Size:
    batch: int
    classes: int
    side: int

    @property
    def label(self) -> str:
        return f"{self.batch}x{self.classes}x{self.side}"

    @classmethod
    def parse(cls, text: str) -> Size:
        """``"BxCxS"``, e.g. ``2x21x256`` (batch 2, 21 classes, 256² images)."""
        match = re.fullmatch(r"\s*(\d+)x(\d+)x(\d+)\s*", text)
        if not match or min(int(g) for g in match.groups()) < 1:
            raise ValueError(f"size must be BxCxS with positive integers, e.g. 2x21x256, got {text!r}")
        batch, classes, side = (int(g) for g in match.groups())
        if batch < 2 or classes < 2 or side % 32:
            raise ValueError(
                f"size {text!r}: need B >= 2 (batch norm of DeepLabV3's image pooling), C >= 2 "
                "and a side that is a multiple of 32"
            )
        return cls(batch, classes, side)


def make_batch(batch: int, classes: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits and blocky labels (regions of 16², a few ignored pixels), like real masks."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, size, size, generator=gen)
    coarse = torch.randint(0, classes, (batch, 1, size // 16 + 1, size // 16 + 1), generator=gen)
    target = F.interpolate(coarse.float(), scale_factor=16, mode="nearest")[:, 0, :size, :size].long()
    target[torch.rand(target.shape, generator=gen) < 0.05] = IGNORE_INDEX
    return logits, target


def loss_step(case: LossCase, size: Size, device: torch.device, seed: int = 0) -> Callable[[], None]:
    """A closure running one forward + backward of the case's loss on fixed inputs of ``size``."""
    loss = build_loss(case.loss, **case.params).to(device)
    logits, target = (t.to(device) for t in make_batch(size.batch, size.classes, size.side, seed))
    extra: dict[str, torch.Tensor] = {}
    if "features" in loss.requires:
        gen = torch.Generator().manual_seed(seed + 1)
        shape = (size.batch, UNET_FEATURE_CHANNELS, size.side, size.side)
        extra["features"] = torch.randn(shape, generator=gen).to(device)

    def step() -> None:
        leaves = {k: v.detach().requires_grad_() for k, v in extra.items()}
        z = logits.detach().requires_grad_()
        loss(z, target, **leaves).backward()

    return step


def scheme_step(
    scheme: dict[str, Any], size: Size, device: torch.device, arch: str = "unet", encoder: str = "resnet18"
) -> Callable[[], None]:
    """A closure running one ``train_step`` of ``scheme`` (U-Net-resnet18 student by default)."""
    built = build_training_scheme(scheme, size.classes, device, arch, encoder)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(size.batch, 3, size.side, size.side, generator=gen).to(device)
    _, target = make_batch(size.batch, size.classes, size.side)
    target = target.to(device)
    return lambda: built.train_step(images, target)


def build_training_scheme(
    scheme: dict[str, Any],
    classes: int,
    device: torch.device,
    arch: str = "unet",
    encoder: str = "resnet18",
    steps: int = 1000,
    optimizer: str = "adam",
):
    """A studybench scheme on a randomly initialised smp model, seeded like a run with seed 0."""
    from studybench.engine.train import seed_everything
    from studybench.schemes import build_scheme
    from studybench.study.spec import RunConfig

    config = RunConfig.model_validate(
        {
            "model": {"arch": arch, "encoder": encoder, "weights": None},
            "scheme": scheme,
            "train": {"optimizer": optimizer, "lr": 1e-4},
        }
    )
    seed_everything(0)
    return build_scheme(config, classes, device, total_steps=steps)
