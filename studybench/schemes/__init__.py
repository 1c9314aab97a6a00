"""Scheme registry: YAML ``scheme.name`` -> scheme class (how a batch becomes an update).

Schemes are listed by where they live: their modules (and torch) are imported when one is
first built, not to list or describe them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from studybench.registry import Registry, lazy_exports

if TYPE_CHECKING:
    import torch

    from studybench.schemes.base import Scheme
    from studybench.study.spec import RunConfig

SCHEMES: Registry[Scheme] = Registry("scheme", reserved=("config", "num_classes", "device", "total_steps", "seed"))
SCHEMES.add("supervised", "studybench.schemes.supervised:SupervisedScheme")
SCHEMES.add("self-regulation", "studybench.schemes.self_regulation:SelfRegulationScheme")
SCHEMES.add("mutual", "studybench.schemes.mutual:MutualScheme")


def build_scheme(config: RunConfig, num_classes: int, device: torch.device, total_steps: int, seed: int = 0) -> Scheme:
    """The configured scheme; ``seed`` keys its networks' initial weights (see ``rng``)."""
    params = SCHEMES.typed(config.scheme.name, config.scheme.params)
    cls = SCHEMES.get(config.scheme.name)
    return cls(config=config, num_classes=num_classes, device=device, total_steps=total_steps, seed=seed, **params)


def list_schemes() -> list[str]:
    return SCHEMES.names()


__getattr__ = lazy_exports(
    __name__, dict.fromkeys(("NonFiniteLossError", "Scheme", "StepStats"), "studybench.schemes.base")
)


__all__ = ["SCHEMES", "NonFiniteLossError", "Scheme", "StepStats", "build_scheme", "list_schemes"]
