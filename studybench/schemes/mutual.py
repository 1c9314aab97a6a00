"""Deep mutual learning (Zhang et al., CVPR 2018): two networks that teach each other.

``L_self = task(z_self, y) + KL(sg p_other ‖ p_self)`` with the KL summed over classes and
averaged over the valid pixels, no temperature (methods.md §5). The task term is the run's
``loss`` (``ce`` in DML). Updates alternate: step the student on fresh outputs of both
networks, recompute both forward passes, step the peer. Both networks are evaluated.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator

from studybench.engine.measure import count_params
from studybench.engine.optim import build_optimizer, build_scheduler
from studybench.losses import build_loss
from studybench.losses.base import masked_mean, valid_mask
from studybench.models import check_model
from studybench.schemes.base import Scheme, StepStats, backward_from_leaves, float32_leaves
from studybench.study.spec import ModelCfg, RunConfig


class PeerCfg(ModelCfg):
    """The peer network (a ``model`` section); arch and encoder are checked when the study is validated."""

    @model_validator(mode="after")
    def _known_model(self) -> PeerCfg:
        check_model(self)
        return self


def mutual_kl(logits: torch.Tensor, other_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``KL(sg p_other ‖ p_self)``: summed over classes, averaged over valid pixels.

    Shape: logits ``[B, C, H, W]`` (self, receives the gradient), other_logits the same
    (detached here, computed in the dtype of ``logits``: float32 in training, see
    ``schemes.base``), target ``[B, H, W]``. An all-ignored batch gives 0 with zero gradient.
    """
    log_p = F.log_softmax(logits, dim=1)
    log_q = F.log_softmax(other_logits.detach().to(log_p.dtype), dim=1)
    per_pixel = (log_q.exp() * (log_q - log_p)).sum(dim=1)
    return masked_mean(per_pixel, valid_mask(target, logits.shape[1]))


class MutualScheme(Scheme):
    """Two networks trained with deep mutual learning; each has its own optimiser and schedule.

    Args:
        peer: the other network as a ``model`` section (e.g. ``{arch: deeplabv3, encoder:
            resnet50}``); null = a second network like the student (the run's ``model``).
        evaluate: which network gives the run's headline metrics (both are evaluated; the
            other is logged as ``<role>/...``).

    Reference: Zhang et al., "Deep Mutual Learning", CVPR 2018, Eq. 5-6 and Algorithm 1.
    """

    def __init__(
        self,
        config: RunConfig,
        num_classes: int,
        device: torch.device,
        total_steps: int,
        seed: int = 0,
        peer: PeerCfg | None = None,
        evaluate: Literal["student", "peer"] = "student",
    ) -> None:
        super().__init__(config, num_classes, device, total_steps, seed)
        if evaluate not in ("student", "peer"):
            raise ValueError(f"mutual: evaluate must be 'student' or 'peer', got {evaluate!r}")
        peer_cfg = config.model if peer is None else PeerCfg.model_validate(peer)
        self.headline = evaluate
        # The student starts from the supervised model's weights of the seed; the peer from its own stream.
        self.student = self.build_network(config.model, "model")
        self.peer = self.build_network(peer_cfg, "peer")
        self.networks = {"student": self.student, "peer": self.peer}
        self.train_nets = {role: self.placement.trainable(net) for role, net in self.networks.items()}
        self.task_name = config.loss.name
        self.losses = {role: build_loss(config.loss.name, **config.loss.params).to(device) for role in self.networks}
        self.optimizers = {role: build_optimizer(net.parameters(), config.train) for role, net in self.networks.items()}
        self.schedulers = {
            role: build_scheduler(opt, config.train, total_steps) for role, opt in self.optimizers.items()
        }

    def _forward(self, role: str, images: torch.Tensor, grad: bool) -> torch.Tensor:
        with torch.set_grad_enabled(grad), self.autocast():
            return self.train_nets[role](images)

    def _update(self, role: str, other: str, images: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """One step of network ``role`` against fresh (detached) outputs of ``other``; the student's update
        opens the step's loss-time sample, the peer's adds to it (both networks' loss work is the step's)."""
        optimizer = self.optimizers[role]
        optimizer.zero_grad(set_to_none=True)
        target_logits = self._forward(other, images, grad=False)
        logits = self._forward(role, images, grad=True)
        (leaf,) = float32_leaves([logits])
        target_logits = target_logits.to(leaf.dtype)  # the KL's teacher side in float32 too
        with self.loss_timer if role == "student" else self.loss_timer.more(), self.float32():
            task = self.losses[role](leaf, target)
            kl = mutual_kl(leaf, target_logits, target)
            value = task + kl
            value.backward()
        backward_from_leaves([logits], [leaf])
        optimizer.step()
        self.schedulers[role].step()
        return {f"{role}_{self.task_name}": task.detach(), f"{role}_kl": kl.detach()}

    def train_step(self, images: torch.Tensor, target: torch.Tensor) -> StepStats:
        parts = self._update("student", "peer", images, target)
        parts.update(self._update("peer", "student", images, target))
        return StepStats(loss=sum(parts.values()), parts=parts)

    def learning_rate(self) -> float:
        return self.optimizers["student"].param_groups[0]["lr"]

    def extra_costs(self) -> dict[str, float]:
        other = "peer" if self.headline == "student" else "student"
        return {
            f"{other}_params_m": count_params(self.networks[other]) / 1e6,
            "train_params_m": count_params(self.student, self.peer) / 1e6,
        }

    def state_dict(self) -> dict:
        return {
            role: {
                "model": self.networks[role].state_dict(),
                "loss": self.losses[role].state_dict(),
                "optimizer": self.optimizers[role].state_dict(),
                "scheduler": self.schedulers[role].state_dict(),
            }
            for role in self.networks
        }

    def load_state_dict(self, state: dict) -> None:
        for role in self.networks:
            self.networks[role].load_state_dict(state[role]["model"])
            self.losses[role].load_state_dict(state[role]["loss"])
            self.optimizers[role].load_state_dict(state[role]["optimizer"])
            self.schedulers[role].load_state_dict(state[role]["scheduler"])
