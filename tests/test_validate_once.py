"""Validation does each expensive check once per distinct input: a grid repeats its sections many times."""

from __future__ import annotations

import collections

from helpers import REPO

import studybench.losses
import studybench.models
from studybench.api import load_runs


def test_validate_builds_each_distinct_model_and_loss_once(monkeypatch):
    models, losses = collections.Counter(), collections.Counter()
    build_model, build_loss = studybench.models.build_model, studybench.losses.build_loss

    def counted_model(cfg, num_classes):
        models[(cfg.model_dump_json(), num_classes)] += 1
        return build_model(cfg, num_classes)

    def counted_loss(name, /, **params):
        losses[(name, repr(sorted(params.items())))] += 1
        return build_loss(name, **params)

    monkeypatch.setattr(studybench.models, "build_model", counted_model)
    monkeypatch.setattr(studybench.losses, "build_loss", counted_loss)
    _, specs, _ = load_runs(REPO / "studies" / "zhao2019_rmi_ablation.yaml", "smoke")
    distinct_models = {s.config.model.model_dump_json(exclude={"weights"}) for s in specs}
    distinct_losses = {repr(s.config.loss) for s in specs}
    assert len(specs) > 2 * len(distinct_models)  # the study repeats its models: there is something to save
    assert sum(models.values()) == len(distinct_models), models
    assert sum(losses.values()) == len(distinct_losses), losses
