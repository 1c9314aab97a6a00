"""Loss registry: YAML name -> loss module. ``build_loss(name, **params)`` is the public factory.

Every loss module is imported explicitly below, so the registry is complete as soon as this
package is imported (no registration that depends on import order elsewhere).
"""

from __future__ import annotations

from typing import Any

from studybench.losses.base import SegLoss
from studybench.losses.bce import SigmoidBCELoss
from studybench.losses.ce import CrossEntropyLoss
from studybench.losses.center import CenterLoss
from studybench.losses.focal import SigmoidFocalLoss, SoftmaxFocalLoss
from studybench.losses.lad import LocallyAdaptiveLoss
from studybench.losses.rmi import RMILoss
from studybench.losses.smp_losses import DiceLoss, JaccardLoss, LovaszLoss, TverskyLoss
from studybench.losses.weighted_sum import WeightedSumLoss
from studybench.registry import Registry

LOSSES: Registry[SegLoss] = Registry("loss")

LOSSES.register("ce", aliases=("cross_entropy",))(CrossEntropyLoss)
LOSSES.register("bce")(SigmoidBCELoss)
LOSSES.register("focal")(SoftmaxFocalLoss)
LOSSES.register("focal-sigmoid")(SigmoidFocalLoss)
LOSSES.register("lad")(LocallyAdaptiveLoss)
LOSSES.register("rmi")(RMILoss)
LOSSES.register("center")(CenterLoss)
LOSSES.register("dice")(DiceLoss)
LOSSES.register("lovasz")(LovaszLoss)
LOSSES.register("jaccard")(JaccardLoss)
LOSSES.register("tversky")(TverskyLoss)
LOSSES.register("sum")(WeightedSumLoss)


def build_loss(name: str, /, **params: Any) -> SegLoss:
    """Build the loss registered as ``name``; unknown names or parameters list the valid ones."""
    return LOSSES.build(name, **params)


def list_losses() -> list[str]:
    return LOSSES.names()


__all__ = ["LOSSES", "SegLoss", "build_loss", "list_losses"]
