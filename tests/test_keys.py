"""Canonical run keys: one key per computation, over every registry entry (docs/architecture.md)."""

from __future__ import annotations

import inspect

import pytest

from studybench.data import DATASETS
from studybench.losses import LOSSES
from studybench.schemes import SCHEMES
from studybench.study.config import Study
from studybench.study.grid import expand
from studybench.study.keys import canonical_component, run_key
from studybench.study.spec import DataCfg, LossCfg, ModelCfg, RunConfig, SchemeCfg, TrainCfg

#: Parameters a component cannot be built without (the rest have defaults).
REQUIRED = {("loss", "sum"): {"terms": [{"name": "ce"}]}}
FAMILIES = {"loss": LOSSES, "scheme": SCHEMES, "dataset": DATASETS}


def config_with(family: str, name: str, params: dict) -> RunConfig:
    if family == "loss":
        return RunConfig(loss=LossCfg(name=name, **params))
    if family == "scheme":
        return RunConfig(scheme=SchemeCfg(name=name, **params))
    return RunConfig(data=DataCfg(dataset=name, options=params))


def as_float(value):
    """An int default written as a float (2 -> 2.0): the same value to a typed parameter."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


ENTRIES = [(family, name) for family, registry in FAMILIES.items() for name in registry.names()]


@pytest.mark.parametrize(("family", "name"), ENTRIES, ids=[f"{f}-{n}" for f, n in ENTRIES])
def test_defaults_spelled_out_or_retyped_keep_the_key(family, name):
    registry = FAMILIES[family]
    required = REQUIRED.get((family, name), {})
    defaults = registry.defaults(name)
    bare = run_key(config_with(family, name, required), 0)
    explicit = run_key(config_with(family, name, {**defaults, **required}), 0)
    retyped = run_key(config_with(family, name, {**{k: as_float(v) for k, v in defaults.items()}, **required}), 0)
    assert bare == explicit == retyped
    assert run_key(config_with(family, name, required), 1) != bare  # the seed is part of the computation


@pytest.mark.parametrize(("family", "name"), ENTRIES, ids=[f"{f}-{n}" for f, n in ENTRIES])
def test_a_new_defaulted_parameter_keeps_the_key_and_a_version_bump_changes_it(family, name, monkeypatch):
    registry = FAMILIES[family]
    required = REQUIRED.get((family, name), {})
    before = run_key(config_with(family, name, required), 0)
    # the factory as a developer would grow it: one more keyword parameter, defaulted
    extra = inspect.Parameter("added_later", inspect.Parameter.KEYWORD_ONLY, default=0.5, annotation=float)
    monkeypatch.setattr(registry, "parameters", lambda n, _orig=registry.parameters: {**_orig(n), "added_later": extra})
    monkeypatch.setattr(registry, "type_hints", lambda n, _orig=registry.type_hints: {**_orig(n), "added_later": float})
    assert run_key(config_with(family, name, required), 0) == before
    assert run_key(config_with(family, name, {**required, "added_later": 0.5}), 0) == before
    assert run_key(config_with(family, name, {**required, "added_later": 0.25}), 0) != before
    monkeypatch.setitem(registry._versions, registry.canonical(name), registry.version(name) + 1)
    assert run_key(config_with(family, name, required), 0) != before


def test_section_fields_typed_ordered_and_runtime_keys_excluded():
    base = RunConfig(
        model=ModelCfg(options={"decoder_channels": [32, 16], "decoder_attention_type": None}),
        train=TrainCfg(lr=1, epochs=2),
    )
    same = RunConfig(
        model=ModelCfg(options={"decoder_attention_type": None, "decoder_channels": [32.0, 16.0]}),
        train=TrainCfg(lr=1.0, epochs=2, threads=1, device="cpu", checkpoint=False),
        data=DataCfg(num_workers=2, root="/elsewhere"),
    )
    assert run_key(base, 0) == run_key(same, 0)
    assert run_key(base, 0) != run_key(base.model_copy(update={"train": TrainCfg(lr=0.5, epochs=2)}), 0)


def test_sum_terms_are_canonical_like_losses_of_their_own():
    one = canonical_component(LOSSES, "sum", {"terms": [{"name": "ce", "weight": 1}, {"name": "focal", "gamma": 2}]})
    two = canonical_component(LOSSES, "sum", {"terms": [{"name": "cross_entropy"}, {"gamma": 2.0, "name": "focal"}]})
    assert one == two
    assert one != canonical_component(LOSSES, "sum", {"terms": [{"name": "focal"}, {"name": "ce"}]})


def test_equivalent_study_spellings_share_every_key():
    def study(method, base_extra=None):
        base = {"data": {"dataset": "synthetic", "options": {"num_classes": 3, "image_size": 32}}}
        return Study(study="eq", seeds=[0, 1], base={**base, **(base_extra or {})}, grid={"method": [method]})

    a = expand(study({"name": "f", "loss": {"name": "focal", "gamma": 2}}), check_data=False)
    b = expand(study({"loss": {"gamma": 2.0, "name": "focal"}, "name": "f"}), check_data=False)
    c = expand(study({"name": "f", "loss": {"name": "focal"}}, {"train": {"threads": 1}}), check_data=False)
    assert [s.key for s in a] == [s.key for s in b] == [s.key for s in c]


def test_seeds_by_source_key_as_plain_seeds_on_the_diagonal_and_apart_elsewhere():
    """All sources on one seed s compute what plain seed s computes (one key); any other tuple keys on its own."""
    config = RunConfig()
    for s in (0, 3):
        assert run_key(config, 99, dict.fromkeys(("init", "data", "aug", "method"), s)) == run_key(config, s)
    tuples = [(i, d, a, m) for i in (0, 1) for d in (0, 1) for a in (0, 2) for m in (0, 1)]
    found = {run_key(config, 0, dict(zip(("init", "data", "aug", "method"), t))) for t in tuples}
    plain = {run_key(config, s) for s in range(3)}
    assert len(found) == len(tuples) and len(found & plain) == 1  # only (0, 0, 0, 0) is a plain seed's run
    shuffled = {"method": 1, "aug": 2, "data": 0, "init": 1}
    assert run_key(config, 0, shuffled) == run_key(config, 0, {"init": 1, "data": 0, "aug": 2, "method": 1})
