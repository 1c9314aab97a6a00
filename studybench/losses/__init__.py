"""Loss registry: YAML name -> loss module. ``build_loss(name, **params)`` is the public factory.

Every loss is listed below by where it lives, so the registry is complete as soon as this
package is imported (no registration that depends on import order elsewhere); a loss's
module, and torch, are imported when it is first built, not to list or describe it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from studybench.registry import Registry, lazy_exports

if TYPE_CHECKING:
    from studybench.losses.base import SegLoss

LOSSES: Registry[SegLoss] = Registry("loss")

LOSSES.add("ce", "studybench.losses.ce:CrossEntropyLoss", aliases=("cross_entropy",))
LOSSES.add("bce", "studybench.losses.bce:SigmoidBCELoss")
LOSSES.add("focal", "studybench.losses.focal:SoftmaxFocalLoss")
LOSSES.add("focal-sigmoid", "studybench.losses.focal:SigmoidFocalLoss")
LOSSES.add("lad", "studybench.losses.lad:LocallyAdaptiveLoss")
LOSSES.add("rmi", "studybench.losses.rmi:RMILoss")
LOSSES.add("center", "studybench.losses.center:CenterLoss")
LOSSES.add("dice", "studybench.losses.smp_losses:DiceLoss")
LOSSES.add("lovasz", "studybench.losses.smp_losses:LovaszLoss")
LOSSES.add("jaccard", "studybench.losses.smp_losses:JaccardLoss")
LOSSES.add("tversky", "studybench.losses.smp_losses:TverskyLoss")
LOSSES.add("sum", "studybench.losses.weighted_sum:WeightedSumLoss")


def build_loss(name: str, /, **params: Any) -> SegLoss:
    """Build the loss registered as ``name``; unknown names or parameters list the valid ones."""
    return LOSSES.build(name, **params)


def list_losses() -> list[str]:
    return LOSSES.names()


__getattr__ = lazy_exports(__name__, {"SegLoss": "studybench.losses.base"})


__all__ = ["LOSSES", "SegLoss", "build_loss", "list_losses"]
