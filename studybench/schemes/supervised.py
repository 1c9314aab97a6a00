"""The default scheme: one network, one loss (``loss(logits, target)``)."""

from __future__ import annotations

import torch

from studybench.engine.optim import build_optimizer, build_scheduler
from studybench.losses import build_loss
from studybench.models import forward_outputs
from studybench.schemes.base import Scheme, StepStats, backward_from_leaves, float32_leaves
from studybench.study.spec import RunConfig


class SupervisedScheme(Scheme):
    """One model trained with the configured loss.

    The graph is split at the model's outputs: the loss runs forward and backward on
    detached float32 leaves (timed on its own), then the model's backward continues from the
    leaves' gradients. Without AMP the arithmetic is identical to a single ``backward`` call.
    """

    headline = "model"

    def __init__(
        self, config: RunConfig, num_classes: int, device: torch.device, total_steps: int, seed: int = 0
    ) -> None:
        super().__init__(config, num_classes, device, total_steps, seed)
        self.model = self.build_network(config.model, "model")
        self.loss = build_loss(config.loss.name, **config.loss.params).to(device)
        self.networks = {"model": self.model}
        self.train_model = self.placement.trainable(self.model)  # compiled with train.compile
        self.optimizer = build_optimizer(self.model.parameters(), config.train)
        self.scheduler = build_scheduler(self.optimizer, config.train, total_steps)

    def train_step(self, images: torch.Tensor, target: torch.Tensor) -> StepStats:
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            outputs = forward_outputs(self.train_model, images, self.loss.requires)
        names = list(outputs)
        leaves = dict(zip(names, float32_leaves([outputs[k] for k in names])))
        with self.loss_timer, self.float32():
            extra = {k: leaves[k] for k in self.loss.requires}
            value = self.loss(leaves["logits"], target, **extra)
            value.backward()
        backward_from_leaves([outputs[k] for k in names], [leaves[k] for k in names])
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
