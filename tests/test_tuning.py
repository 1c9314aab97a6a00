"""The tuning building blocks: typed knobs, the Sobol trial list, the carved split, expected best of n."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from studybench.data.carve import carve_fraction, carve_groups, check_disjoint, ids_digest
from studybench.data.files import SplitOverlapError
from studybench.report.budget import budget_curve, expected_best, expected_best_with_replacement
from studybench.study.tuning import Knob, TuneCfg, sobol_trials


@pytest.mark.parametrize(
    "knob, message",
    [
        ({"low": 3.0, "high": 1.0}, "above high"),
        ({"low": 0.0, "high": 1.0, "log": True}, "above 0"),
        ({"low": -1.0, "high": 1.0, "log": True}, "above 0"),
        ({"low": 1.0}, "both low and high"),
        ({"choices": [1, 2], "low": 0.0}, "not both"),
        ({"low": 0.1, "high": float("inf")}, "finite"),
    ],
)
def test_a_bad_range_is_refused_with_the_reason(knob, message):
    with pytest.raises(ValidationError, match=message):
        Knob(**knob)


@pytest.mark.parametrize("budget", [0, -1])
def test_a_budget_below_one_is_refused(budget):
    with pytest.raises(ValidationError, match="budget"):
        TuneCfg(budget=budget)


def test_a_knob_outside_the_run_sections_is_refused():
    with pytest.raises(ValidationError, match="not a dotted key"):
        TuneCfg(budget=4, space={"lr": {"low": 0.1, "high": 1.0}})


def test_values_follow_the_declared_type():
    ints = Knob(low=1, high=4)
    assert sorted({ints.value(u, int) for u in np.linspace(0, 0.999, 400)}) == [1, 2, 3, 4]
    counts = np.bincount([ints.value(u, int) for u in (np.arange(4000) + 0.5) / 4000])[1:]
    assert counts.tolist() == [1000] * 4  # every integer equally likely
    log = Knob(low=1e-4, high=1e-2, log=True)
    assert log.value(0.5, float) == pytest.approx(1e-3)
    assert isinstance(log.value(0.5, float), float)
    assert Knob(choices=["a", "b", "c"]).value(0.99, str) == "c"
    with pytest.raises(ValueError, match="holds no integer"):
        Knob(low=1.2, high=1.8).check_type(int, "loss.radius")
    with pytest.raises(ValueError, match="choices"):
        Knob(low=0, high=1).check_type(bool, "train.amp")


def test_trial_zero_is_the_default_and_the_list_is_reproducible():
    knobs = {"train.lr": Knob(low=1e-4, high=3e-2, log=True), "loss.radius": Knob(low=1, high=5)}
    kinds = {"train.lr": float, "loss.radius": int}
    default = {"train.lr": 0.003, "loss.radius": 3}
    trials = sobol_trials(16, knobs, kinds, default, seed=7)
    assert len(trials) == 16
    assert trials[0] == default
    assert trials == sobol_trials(16, knobs, kinds, default, seed=7)
    assert trials != sobol_trials(16, knobs, kinds, default, seed=8)
    assert all(1e-4 <= t["train.lr"] <= 3e-2 and isinstance(t["loss.radius"], int) for t in trials)
    # a prefix of a longer budget: adding trials never changes the earlier ones
    assert sobol_trials(8, knobs, kinds, default, seed=7) == trials[:8]
    # low discrepancy: 15 points over 5 radii hit every radius
    assert {t["loss.radius"] for t in trials[1:]} == {1, 2, 3, 4, 5}


def test_a_fractional_carve_is_stable_and_disjoint():
    ids = [f"img{i:04d}" for i in range(100)]
    carve = carve_fraction(ids, 0.2, salt=0)
    assert len(carve.tune) == 20 and len(carve.fit) == 80
    assert not set(carve.tune) & set(carve.fit) and set(carve.tune) | set(carve.fit) == set(ids)
    assert carve == carve_fraction(list(reversed(ids)), 0.2, salt=0)  # order of listing does not matter
    assert carve.tune != carve_fraction(ids, 0.2, salt=1).tune
    grown = carve_fraction([*ids, "img9999"], 0.2, salt=0)
    assert len(set(grown.tune) ^ set(carve.tune)) <= 2  # one more image moves at most one
    assert carve.digest == ids_digest(reversed(carve.tune))
    with pytest.raises(ValueError, match="2 or more"):
        carve_fraction(["only"], 0.5)


def test_a_grouped_carve_takes_whole_groups():
    ids = [f"{city}_{i:03d}" for city in ("aachen", "bochum", "bremen", "koeln") for i in range(5)]
    carve = carve_groups(ids, lambda i: i.split("_")[0], count=1, salt=3)
    tuned = {i.split("_")[0] for i in carve.tune}
    assert len(tuned) == 1 and len(carve.tune) == 5
    assert not tuned & {i.split("_")[0] for i in carve.fit}
    with pytest.raises(ValueError, match="leave at least one"):
        carve_groups(ids, lambda i: i.split("_")[0], count=4)


def test_an_id_in_both_the_tuning_and_the_reported_split_is_an_error():
    check_disjoint(["a", "b"], ["c"], "tuning split")
    with pytest.raises(SplitOverlapError, match="1 image"):
        check_disjoint(["a", "b"], ["b", "c"], "tuning split")


def _mean_best_of_subsets(scores, n):
    return float(np.mean([max(s) for s in itertools.combinations(scores, n)]))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_expected_best_is_the_mean_maximum_over_all_subsets(n):
    scores = np.random.default_rng(n).normal(size=7).round(3).tolist()
    scores[2] = scores[4]  # ties too
    assert expected_best(scores, n) == pytest.approx(_mean_best_of_subsets(scores, n), abs=1e-12)


def test_expected_best_is_unbiased_and_the_with_replacement_one_is_not():
    rng = np.random.default_rng(0)
    draws = rng.uniform(size=(20_000, 8))
    truth = 5 / 6  # E[max of 5 uniforms] = 5 / (5 + 1)
    unbiased = np.mean([expected_best(row, 5) for row in draws])
    replaced = np.mean([expected_best_with_replacement(row, 5) for row in draws])
    assert unbiased == pytest.approx(truth, abs=0.003)
    assert replaced < truth - 0.02  # draws with replacement repeat low values: biased low


def test_the_budget_curve_rises_to_the_best_trial_and_works_at_large_budgets():
    scores = np.linspace(0, 1, 2001)
    curve = budget_curve(scores[:50])
    assert curve[0] == pytest.approx(np.mean(scores[:50])) and curve[-1] == pytest.approx(scores[49])
    assert all(b >= a - 1e-12 for a, b in zip(curve, curve[1:]))
    assert math.isfinite(expected_best(scores, 1000))
    with pytest.raises(ValueError, match="finite"):
        expected_best([0.1, float("nan")], 1)


def test_the_best_mean_wins_and_a_tie_goes_to_the_default():
    from studybench.study.tuning import choose_trial

    assert choose_trial({0: [0.5, 0.7], 1: [0.65, 0.66], 2: [0.2]}) == 1
    assert choose_trial({3: [0.6], 0: [0.6], 1: [float("nan")]}) == 0
    with pytest.raises(ValueError, match="nothing to choose"):
        choose_trial({0: [], 1: [float("nan")]})


def test_a_carved_run_trains_on_the_rest_and_scores_on_the_carve_without_opening_the_reported_split(monkeypatch):
    from studybench.data import build_dataset
    from studybench.data.synthetic import SyntheticSegmentation
    from studybench.study.spec import CarveCfg, DataCfg

    opened = []
    real_init = SyntheticSegmentation.__init__

    def spy(self, *args, **kwargs):
        opened.append(kwargs.get("split"))
        if kwargs.get("split") == "val":
            raise AssertionError("the reported split was opened during tuning")
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(SyntheticSegmentation, "__init__", spy)
    options = {"train_images": 20, "image_size": 32}
    carve = CarveCfg(fraction=0.25, salt=1)
    data = DataCfg(options=options, carve=carve)
    fit, tune = build_dataset(data, "train", train=True), build_dataset(data, "val", train=False)
    assert (len(fit), len(tune)) == (15, 5) and set(opened) == {"train"}
    assert set(fit.indices).isdisjoint(tune.indices) and sorted(fit.indices + tune.indices) == list(range(20))
    whole = build_dataset(DataCfg(options=options), "train", train=False)
    image, mask = tune[0]
    assert torch.equal(mask, whole[tune.indices[0]][1]) and image.shape == whole[0][0].shape
    assert tune.class_names == whole.class_names
    final = DataCfg(options=options, carve=carve.model_copy(update={"score_on": "val"}))
    monkeypatch.setattr(SyntheticSegmentation, "__init__", real_init)
    assert (
        len(build_dataset(final, "train", train=True)) == 15 and build_dataset(final, "val", train=False).split == "val"
    )
