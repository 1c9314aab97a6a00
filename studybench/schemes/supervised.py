"""The default scheme: one network, one loss (``loss(logits, target)``)."""

from __future__ import annotations

import torch

from studybench.losses import build_loss
from studybench.models import build_model, forward_outputs
from studybench.optim import build_optimizer, build_scheduler
from studybench.schemes.base import Scheme, StepStats, ensure_finite
from studybench.spec import RunConfig


class SupervisedScheme(Scheme):
    """One model trained with the configured loss.

    The graph is split at the model's outputs: the loss runs forward and backward on
    detached leaves (timed on its own), then the model's backward continues from the
    leaves' gradients. The arithmetic is identical to a single ``backward`` call.
    """

    headline = "model"

    def __init__(self, config: RunConfig, num_classes: int, device: torch.device, total_steps: int) -> None:
        super().__init__(config, num_classes, device, total_steps)
        self.model = build_model(config.model, num_classes).to(device)
        self.loss = build_loss(config.loss.name, **config.loss.params).to(device)
        self.networks = {"model": self.model}
        self.optimizer = build_optimizer(self.model.parameters(), config.train)
        self.scheduler = build_scheduler(self.optimizer, config.train, total_steps)
        self.amp = config.train.amp and device.type == "cuda"

    def train_step(self, images: torch.Tensor, target: torch.Tensor) -> StepStats:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            outputs = forward_outputs(self.model, images, self.loss.requires)
        leaves = {k: v.detach().requires_grad_() for k, v in outputs.items()}
        with self.loss_timer:
            extra = {k: leaves[k] for k in self.loss.requires}
            value = self.loss(leaves["logits"], target, **extra)
            ensure_finite(value, f"loss {self.config.loss.name!r}")
            value.backward()
        pairs = [(outputs[k], leaf.grad) for k, leaf in leaves.items() if leaf.grad is not None]
        torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        self.optimizer.step()
        self.scheduler.step()
        return StepStats(loss=value.detach(), parts=dict(self.loss.parts))

    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
