"""Optimisers and learning-rate schedules named in ``TrainCfg``."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from studybench.study.spec import TrainCfg


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainCfg) -> torch.optim.Optimizer:
    """The configured optimiser, fused where PyTorch supports it.

    Why fused: on CPU the default per-tensor Adam step of a 14 M-parameter U-Net takes
    about as long as its forward pass; the fused kernel is ~5x faster (same update rule).
    """
    params = [p for p in params if p.requires_grad]
    fused = bool(params) and all(
        p.dtype in (torch.float32, torch.float64) and p.device.type in ("cpu", "cuda") for p in params
    )
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused or None
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; available: sgd, adam, adamw")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainCfg, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per training step. ``poly``: lr · (1 − step/total)^power (DeepLab)."""
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if cfg.schedule == "poly":
        total = max(1, total_steps)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: max(0.0, 1.0 - min(step, total) / total) ** cfg.poly_power
        )
    raise ValueError(f"unknown schedule {cfg.schedule!r}; available: constant, poly")
