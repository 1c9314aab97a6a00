"""Scheme registry: YAML ``scheme.name`` -> scheme class (how a batch becomes an update)."""

from __future__ import annotations

from typing import Any

import torch

from studybench.registry import Registry
from studybench.schemes.base import NonFiniteLossError, Scheme, StepStats
from studybench.schemes.mutual import MutualScheme
from studybench.schemes.self_regulation import SelfRegulationScheme
from studybench.schemes.supervised import SupervisedScheme
from studybench.study.spec import RunConfig

SCHEMES: Registry[Scheme] = Registry("scheme", reserved=("config", "num_classes", "device", "total_steps", "seed"))
SCHEMES.register("supervised")(SupervisedScheme)
SCHEMES.register("self-regulation")(SelfRegulationScheme)
SCHEMES.register("mutual")(MutualScheme)


def build_scheme(config: RunConfig, num_classes: int, device: torch.device, total_steps: int, seed: int = 0) -> Scheme:
    """The configured scheme; ``seed`` keys its networks' initial weights (see ``rng``)."""
    params: dict[str, Any] = config.scheme.params
    SCHEMES.check(config.scheme.name, params)
    cls = SCHEMES.get(config.scheme.name)
    return cls(config=config, num_classes=num_classes, device=device, total_steps=total_steps, seed=seed, **params)


def list_schemes() -> list[str]:
    return SCHEMES.names()


__all__ = ["SCHEMES", "NonFiniteLossError", "Scheme", "StepStats", "build_scheme", "list_schemes"]
