"""Listings read signatures and docstrings from source files (no torch); they must say what importing would."""

from __future__ import annotations

import pytest

from studybench.data import DATASETS
from studybench.losses import LOSSES
from studybench.schemes import SCHEMES
from studybench.study import discover
from studybench.study.source import REQUIRED, find_class


def _pairs():
    for registry in (LOSSES, DATASETS, SCHEMES):
        for name in registry.names():
            yield registry.family, name, registry.target(name), lambda r=registry, n=name: r.get(n), registry.reserved
    import segmentation_models_pytorch as smp

    hidden = frozenset(discover.SMP_SET_BY_US)
    for name, cls in smp.MODEL_ARCHITECTURES_MAPPING.items():
        yield "arch", name, f"{discover.SMP}:{cls.__name__}", lambda c=cls: c, hidden


PAIRS = list(_pairs())


# ids from the family and name only: a lambda's or a frozenset's text differs between pytest-xdist workers
@pytest.mark.parametrize(("family", "name", "target", "load", "hidden"), PAIRS, ids=[f"{p[0]}-{p[1]}" for p in PAIRS])
def test_source_reading_agrees_with_importing(family, name, target, load, hidden):
    from_source = discover._entry(name, target, load, hidden)
    imported = discover._entry(name, None, load, hidden)
    assert from_source == imported


def test_a_class_is_found_through_re_exports_and_bases():
    found = find_class("studybench.losses.bce", "SigmoidBCELoss")  # no __init__ of its own: SegLoss's
    assert found.parameters() == {} and found.doc.startswith("One-vs-rest sigmoid BCE")
    unet = find_class("segmentation_models_pytorch", "Unet")  # smp/__init__ -> decoders/unet -> model.py
    params = unet.parameters()
    assert params["encoder_name"] == "resnet34" and params["decoder_channels"] == (256, 128, 64, 32, 16)
    assert find_class("studybench.losses.weighted_sum", "WeightedSumLoss").parameters() == {"terms": REQUIRED}
    with pytest.raises(LookupError):
        find_class("studybench.losses.ce", "NoSuchLoss")
