"""The scheme contract: how a training batch becomes a loss, an update, and what is evaluated.

The trainer's loop is the same for every scheme: it calls ``train_step`` per batch and
evaluates every network in ``networks`` every ``train.eval_every`` epochs and after the last
(the one named ``headline`` gives the run's unprefixed metrics). ``train_step`` returns
detached tensors and reads nothing on the host: the loop sums them on the device and checks
them for NaN/Inf when it reads them (``train.LossMeter``). A scheme owns its networks, losses, optimisers and
schedulers, so schemes with two networks and alternating updates (DML) or multi-exit
training (SR) plug in without touching the loop.

Two promises every scheme keeps through the helpers here, so that methods differ only in
what they are meant to differ in (design.md, "Protocol"):

- each network's initial weights come from its own stream ``(seed, "init/<role>")``: the
  evaluated model of a seed starts from the same weights in every scheme, and a peer
  network or exit heads draw nothing that another consumer would have drawn;
- losses are computed in float32: under AMP the networks run in bfloat16, and the loss
  receives float32 copies of their outputs (``float32_leaves``) with autocast off, whatever
  the loss (before, CE, focal, Dice, Jaccard, Tversky and center got bfloat16 logits while
  BCE, RMI, SR, the DML KL and Lovász widened them on their own).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from studybench.engine.device import Placement
from studybench.engine.measure import Timer
from studybench.engine.rng import init_stream
from studybench.models import build_model
from studybench.study.spec import ModelCfg, RunConfig


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/Inf: a deterministic failure that a retry will not fix.

    Schemes do not check their losses step by step (that would stop the host at every step); the
    trainer checks the running sums when it reads them, every ``train.log_every`` steps and at the
    end of each epoch, and names the steps in which the value became non-finite.
    """


@dataclass
class StepStats:
    loss: torch.Tensor  # detached total loss of the step
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # detached named components


class Scheme:
    """Base class. Subclasses build networks/optimisers in ``__init__`` and implement ``train_step``.

    Constructed as ``Cls(config=..., num_classes=..., device=..., total_steps=..., seed=..., **params)``
    where ``params`` are the scheme's own YAML parameters (``scheme: {name: ..., ...}``).
    """

    headline: str = "model"

    def __init__(
        self, config: RunConfig, num_classes: int, device: torch.device, total_steps: int, seed: int = 0
    ) -> None:
        self.config = config
        self.num_classes = num_classes
        self.device = device
        self.total_steps = total_steps
        self.seed = seed
        self.placement = Placement.for_run(config.train, device)  # AMP, memory format, compile
        self.amp = self.placement.amp  # bfloat16 autocast of the networks' forward
        self.networks: dict[str, nn.Module] = {}
        self.loss_timer = Timer(device)  # the loss's own forward+backward time per step (read at log time)

    def build_network(self, cfg: ModelCfg, role: str) -> nn.Module:
        """The network ``cfg`` with initial weights from the stream ``(seed, "init/<role>")``, on the device."""
        with init_stream(self.seed, role):
            return self.placement.network(build_model(cfg, self.num_classes))

    def autocast(self) -> torch.autocast:
        """Context of the networks' forward: bfloat16 autocast with ``train.amp`` on CUDA, else a no-op."""
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.amp)

    def float32(self) -> torch.autocast:
        """Context of every loss computation: autocast off, so float32 inputs stay float32 inside."""
        return torch.autocast(self.device.type, enabled=False)

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


def float32_leaves(outputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Detached copies of network outputs, widened to at least float32, which the loss differentiates.

    Splitting the graph here times the loss on its own and is the one place where half-precision
    outputs become float32 (float32 and float64 stay as they are), so every loss of every scheme
    sees the same precision.
    """
    return [out.detach().to(torch.promote_types(out.dtype, torch.float32)).requires_grad_() for out in outputs]


def backward_from_leaves(outputs: Sequence[torch.Tensor], leaves: Sequence[torch.Tensor]) -> None:
    """Continue the backward from the leaves' gradients into the networks (same arithmetic as one
    ``backward`` call; the gradients are cast back to the outputs' dtype)."""
    pairs = [(out, leaf.grad.to(out.dtype)) for out, leaf in zip(outputs, leaves) if leaf.grad is not None]
    if pairs:
        torch.autograd.backward([out for out, _ in pairs], [grad for _, grad in pairs])
