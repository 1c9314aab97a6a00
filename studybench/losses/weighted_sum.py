"""A weighted sum of other losses, each term's value logged as a part."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from studybench.losses.base import SegLoss


class WeightedSumLoss(SegLoss):
    """``Σ_i w_i · loss_i``; ``terms`` is a list of ``{name: ..., weight: ..., **params}``.

    Parts are the unweighted term values, named after the terms (``dice``, or ``ce_2`` for a
    repeated name). The sum requires whatever any term requires.
    """

    def __init__(self, terms: list[dict[str, Any]]):
        super().__init__()
        from studybench.losses import build_loss  # the registry imports this module

        if not terms:
            raise ValueError("loss 'sum' needs at least one term in 'terms'")
        modules, weights, names = [], [], []
        for i, term in enumerate(terms):
            if not isinstance(term, dict) or "name" not in term:
                raise ValueError(f"loss 'sum': terms[{i}] must be a mapping with a 'name', got {term!r}")
            params = {k: v for k, v in term.items() if k not in ("name", "weight")}
            weight = term.get("weight", 1.0)
            if not isinstance(weight, (int, float)) or isinstance(weight, bool):
                raise ValueError(f"loss 'sum': terms[{i}].weight must be a number, got {weight!r}")
            modules.append(build_loss(term["name"], **params))
            weights.append(float(weight))
            name = str(term["name"])
            names.append(name if name not in names else f"{name}_{i}")
        self.terms = nn.ModuleList(modules)
        self.weights = weights
        self.names = names
        self.requires = frozenset().union(*(m.requires for m in modules))

    @staticmethod
    def key_params(params: dict[str, Any]) -> dict[str, Any]:
        """Run-key form of the terms: each term canonical like a loss of its own (``keys``),
        its weight a float left out when 1; the order of terms is kept (it names the parts)."""
        from studybench.losses import LOSSES
        from studybench.study.keys import canonical_component

        terms = []
        for term in params.get("terms", []):
            rest = {k: v for k, v in term.items() if k not in ("name", "weight")}
            item = canonical_component(LOSSES, term["name"], rest)
            if float(term.get("weight", 1.0)) != 1.0:
                item["weight"] = float(term["weight"])
            terms.append(item)
        return {**params, "terms": terms}

    def forward(self, logits: torch.Tensor, target: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros(())
        values = {}
        for name, weight, term in zip(self.names, self.weights, self.terms):
            extra = {k: inputs[k] for k in term.requires}
            value = term(logits, target, **extra)
            values[name] = value
            total = total + weight * value
        self._record(**values)
        return total
