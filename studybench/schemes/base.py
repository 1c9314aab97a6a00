"""The scheme contract: how a training batch becomes a loss, an update, and what is evaluated.

The trainer's loop is the same for every scheme: it calls ``train_step`` per batch and
evaluates every network in ``networks`` after each epoch (the one named ``headline`` gives
the run's unprefixed metrics). A scheme owns its networks, losses, optimisers and
schedulers, so schemes with two networks and alternating updates (DML) or multi-exit
training (SR) plug in without touching the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from studybench.measure import Timer
from studybench.spec import RunConfig


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/Inf: a deterministic failure that a retry will not fix."""


@dataclass
class StepStats:
    loss: torch.Tensor  # detached total loss of the step
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # detached named components


class Scheme:
    """Base class. Subclasses build networks/optimisers in ``__init__`` and implement ``train_step``.

    Constructed as ``Cls(config=..., num_classes=..., device=..., total_steps=..., **params)``
    where ``params`` are the scheme's own YAML parameters (``scheme: {name: ..., ...}``).
    """

    headline: str = "model"

    def __init__(self, config: RunConfig, num_classes: int, device: torch.device, total_steps: int) -> None:
        self.config = config
        self.num_classes = num_classes
        self.device = device
        self.total_steps = total_steps
        self.networks: dict[str, nn.Module] = {}
        self.loss_timer = Timer(device)  # the loss's own forward+backward time per step

    def train_step(self, images: torch.Tensor, target: torch.Tensor) -> StepStats:
        raise NotImplementedError

    def set_train(self, mode: bool) -> None:
        for net in self.networks.values():
            net.train(mode)

    def learning_rate(self) -> float:
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def extra_costs(self) -> dict[str, float]:
        """Scheme-specific costs to log (e.g. training-only parameters of auxiliary heads)."""
        return {}


def ensure_finite(value: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(value)):
        raise NonFiniteLossError(f"{what} is {value.item()} (non-finite): training diverged or the input is bad")
