"""Self-Regulation (Zhang et al., ICCV 2021): multi-exit training with MEA, SR-F and SR-L.

The evaluated network is the plain smp model; the auxiliary exits and presence heads
(``models/exits.py``) live in this scheme and are trained with the model but never
evaluated or exported, so inference costs exactly what the plain model costs.
"""

from __future__ import annotations

from typing import Literal

import torch

from studybench.engine.measure import count_params
from studybench.engine.optim import build_optimizer, build_scheduler
from studybench.engine.rng import init_stream
from studybench.losses import sr
from studybench.losses.ce import cross_entropy
from studybench.models.exits import ExitHeads, exit_costs
from studybench.schemes.base import Scheme, StepStats, backward_from_leaves, float32_leaves
from studybench.study.spec import RunConfig


class SelfRegulationScheme(Scheme):
    """Multi-exit training; the total loss (official weights, methods.md §4) is
    ``cls_weight·L_cls + seg_weight·L_seg + sr_f_weight·L_SR-F + sr_l_weight·L_SR-L``.

    With ``mea`` the task losses (seg CE, presence BCE) train every exit; without it they
    train e0 only. With none of ``mea``/``sr_f``/``sr_l`` no exit is built and the loss is the
    plain CE of the final output (the baseline, identical to the supervised scheme with CE).

    Args:
        sr_f: shallow-to-deep self-regulation on the exits' pixel distributions.
        sr_l: deep-to-shallow self-regulation on the exits' presence logits.
        mea: multi-exit architecture loss (every exit trained on the task).
        tau: distillation temperature τ.
        mode: ``paper`` (τ-scaled soft CE) or ``code`` (official repository: hard pseudo-labels
            for SR-F, BCE on sigmoid targets for SR-L).
        warmup: fraction of the training steps with SR-F/SR-L off (MEA only); 0 = none.
        cls_weight, seg_weight, sr_f_weight, sr_l_weight: the loss weights.

    Reference: Zhang et al., "Self-Regulation for Semantic Segmentation", ICCV 2021; methods.md §4.
    """

    headline = "model"

    def __init__(
        self,
        config: RunConfig,
        num_classes: int,
        device: torch.device,
        total_steps: int,
        seed: int = 0,
        sr_f: bool = True,
        sr_l: bool = True,
        mea: bool = True,
        tau: float = 1.0,
        mode: Literal["paper", "code"] = "paper",
        warmup: float = 0.0,
        cls_weight: float = 0.2,
        seg_weight: float = 0.8,
        sr_f_weight: float = 1.0,
        sr_l_weight: float = 1.0,
    ) -> None:
        super().__init__(config, num_classes, device, total_steps, seed)
        if not tau > 0:
            raise ValueError(f"self-regulation: tau must be > 0, got {tau}")
        if mode not in ("paper", "code"):
            raise ValueError(f"self-regulation: mode must be 'paper' or 'code', got {mode!r}")
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"self-regulation: warmup must be in [0, 1), got {warmup}")
        for name, weight in (("cls", cls_weight), ("seg", seg_weight), ("sr_f", sr_f_weight), ("sr_l", sr_l_weight)):
            if weight < 0:
                raise ValueError(f"self-regulation: {name}_weight must be >= 0, got {weight}")
        if config.loss.name != "ce" or any(config.loss.params.get(k) for k in ("class_weights", "label_smoothing")):
            raise ValueError(
                f"self-regulation trains every exit with plain CE (methods.md §4); set loss to ce, got "
                f"{config.loss.name!r} {config.loss.params}"
            )
        self.use_sr_f, self.use_sr_l, self.mea = sr_f, sr_l, mea
        self.tau, self.mode = tau, mode
        self.weights = {"cls": cls_weight, "seg": seg_weight, "sr_f": sr_f_weight, "sr_l": sr_l_weight}
        self.warmup_steps = round(warmup * total_steps)
        self.steps_done = 0

        # The plain model starts from the supervised model's weights of the seed; the exits from their own stream.
        self.model = self.build_network(config.model, "model")
        self.networks = {"model": self.model}
        self.heads: ExitHeads | None = None
        if mea or sr_f or sr_l:
            with init_stream(seed, "exits"):
                self.heads = ExitHeads.for_model(self.model, num_classes).to(device)
        trained = list(self.model.parameters()) + (list(self.heads.parameters()) if self.heads else [])
        self.optimizer = build_optimizer(trained, config.train)
        self.scheduler = build_scheduler(self.optimizer, config.train, total_steps)
        self.costs = exit_costs(self.model, self.heads) if self.heads is not None else {}
        self.train_pixels = 0  # H·W of the training input, seen at the first step

    def train_step(self, images: torch.Tensor, target: torch.Tensor) -> StepStats:
        self.optimizer.zero_grad(set_to_none=True)
        self.train_pixels = images.shape[-2] * images.shape[-1]
        with self.autocast():
            if self.heads is None:
                outputs = [self.model(images)]
            else:
                out = self.heads(self.model, images)
                outputs = [*out.logits, *out.presence]
        leaves = float32_leaves(outputs)
        with self.loss_timer, self.float32():
            total, parts = self.loss(leaves, target)
            total.backward()
        backward_from_leaves(outputs, leaves)
        self.optimizer.step()
        self.scheduler.step()
        self.steps_done += 1
        return StepStats(loss=total.detach(), parts={k: v.detach() for k, v in parts.items()})

    def loss(self, outputs: list[torch.Tensor], target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its unweighted parts from ``[Z_0..Z_4, q_0..q_4]`` (or ``[Z_0]`` without exits)."""
        if self.heads is None:
            value = cross_entropy(outputs[0], target)
            return value, {"seg": value}
        n = self.heads.num_exits
        logits, presence = outputs[:n], outputs[n:]
        task = slice(None) if self.mea else slice(0, 1)
        parts = {"seg": sr.seg_loss(logits[task], target), "cls": sr.cls_loss(presence[task], target)}
        regulating = self.steps_done >= self.warmup_steps
        zero = parts["seg"].new_zeros(())
        if self.use_sr_f:
            parts["sr_f"] = sr.sr_f_loss(logits, target, self.tau, self.mode) if regulating else zero
        if self.use_sr_l:
            parts["sr_l"] = sr.sr_l_loss(presence, target, self.tau, self.mode) if regulating else zero
        total = sum((self.weights[k] * v for k, v in parts.items()), start=zero)
        return total, parts

    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def extra_costs(self) -> dict[str, float]:
        """Training-only overhead of the exits; inference overhead is 0 by construction (the
        evaluated network is the plain model), reported from what is actually evaluated."""
        evaluated = count_params(self.networks[self.headline])
        costs = {
            "exits_params_m": self.costs.get("extra_params_m", 0.0),
            "exits_infer_params_m": (evaluated - count_params(self.model)) / 1e6,
            "exits_infer_gflops_per_image": 0.0,
        }
        if self.costs and self.train_pixels:
            mpx = self.train_pixels / 1e6
            costs["exits_train_gflops_per_image"] = self.costs["extra_train_gflops_per_mpx"] * mpx
            costs["model_train_gflops_per_image"] = self.costs["base_train_gflops_per_mpx"] * mpx
        return costs

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "heads": self.heads.state_dict() if self.heads is not None else {},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "steps_done": self.steps_done,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.heads is not None:
            self.heads.load_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.steps_done = state["steps_done"]
