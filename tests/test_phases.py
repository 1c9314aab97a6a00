"""A tuned study's phases as RunSpecs: equal budgets, trial 0 = default, typed knobs, finals on the choice."""

from __future__ import annotations

import pytest
import yaml

from studybench.study.config import Study
from studybench.study.grid import expand
from studybench.study.phases import PHASE_FINAL, PHASE_TUNE, chosen_values, final_specs, fold_of, trial_specs
from studybench.study.spec import CarveCfg
from studybench.study.tuning import Knob, TuneCfg

STUDY = """\
study: phases
seeds: [0, 1]
base:
  data: {dataset: synthetic, options: {num_classes: 4, image_size: 32, train_images: 8, val_images: 4}}
  model: {arch: unet, encoder: resnet18}
  train: {epochs: 1, batch_size: 4, lr: 0.01}
grid:
  model.arch: [unet, fpn]
  method: [ce, {name: focal, loss: {name: focal, gamma: 2.0}}]
"""
TUNE = TuneCfg(budget=5, seed=3, space={"train.lr": Knob(low=1e-4, high=3e-2, log=True)})
GAMMA = {"loss.gamma": Knob(low=0.5, high=5.0)}


@pytest.fixture(scope="module")
def defaults():
    return expand(Study.model_validate(yaml.safe_load(STUDY)), check_data=False)


def test_every_fold_gets_the_budget_and_trial_zero_is_its_setting(defaults):
    first_seed = [s for s in defaults if s.seed == 0]
    trials = {fold_of(s): trial_specs(s, TUNE, GAMMA if s.method == "focal" else {}) for s in first_seed}
    assert len(trials) == 4 and all(len(t) == TUNE.budget for t in trials.values())
    for spec in first_seed:
        fold = trials[fold_of(spec)]
        assert [t.trial for t in fold] == list(range(TUNE.budget))
        assert all(t.phase == PHASE_TUNE and t.groups == ("tune",) and t.seed == 0 for t in fold)
        assert fold[0].config.train.lr == spec.config.train.lr
        assert all(t.config.data.carve == CarveCfg(fraction=0.2, score_on="carved") for t in fold)
        assert len({t.key for t in fold}) == TUNE.budget and spec.key not in {t.key for t in fold}
        assert " · t0 · s0" in fold[0].name
    focal = trials[fold_of(next(s for s in first_seed if s.method == "focal"))]
    assert focal[0].config.loss.params["gamma"] == 2.0
    assert all(isinstance(t.config.loss.params["gamma"], float) for t in focal)
    # the shared knob gets the same Sobol draws in every fold with the same knobs (same cell or not)
    ce = [t for s in first_seed if s.method == "ce" for t in trials[fold_of(s)]]  # unet, then fpn
    assert len(ce) == 10 and [t.config.train.lr for t in ce[:5]] == [t.config.train.lr for t in ce[5:]]


def test_the_trial_list_is_identical_across_expansions(defaults):
    again = expand(Study.model_validate(yaml.safe_load(STUDY)), check_data=False)
    one = [t.key for s in defaults for t in trial_specs(s, TUNE, {})]
    assert one == [t.key for s in again for t in trial_specs(s, TUNE, {})]


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({"loss.gama": Knob(low=0.5, high=5.0)}, "has no parameter 'gama'"),
        ({"train.epochs": Knob(low=1.2, high=1.8)}, "holds no integer"),
        ({"train.amp": Knob(low=0, high=1)}, "choices"),
    ],
)
def test_a_knob_the_run_does_not_have_or_cannot_take_is_refused(defaults, knobs, message):
    focal = next(s for s in defaults if s.method == "focal")
    with pytest.raises(ValueError, match=message):
        trial_specs(focal, TUNE, knobs)


def test_finals_take_the_chosen_setting_for_every_seed(defaults):
    ce = [s for s in defaults if s.method == "ce" and s.arch == "unet"]
    trials = trial_specs(ce[0], TUNE, {})
    scores = {t.key: [0.1 * t.trial] for t in trials}
    scores[trials[2].key] = [0.9]
    best, values = chosen_values(trials, scores, ["train.lr"])
    assert best == 2 and values == {"train.lr": trials[2].config.train.lr}
    finals = final_specs(ce, {fold_of(ce[0]): values}, carve=None)
    assert [f.seed for f in finals] == [0, 1] and all(f.phase == PHASE_FINAL for f in finals)
    assert all(f.config.train.lr == values["train.lr"] and f.config.data.carve is None for f in finals)
    unchanged = final_specs(ce, {fold_of(ce[0]): {"train.lr": ce[0].config.train.lr}}, carve=None)
    assert [f.key for f in unchanged] == [s.key for s in ce]  # the default chosen: the untuned runs, reused


TUNED = (
    STUDY
    + """\
tune:
  budget: 4
  seed: 0
  split: {fraction: 0.25}
  space:
    train.lr: {low: 1.0e-4, high: 3.0e-2, log: true}
"""
)


WITH_GAMMA = TUNED.replace(
    "[ce, {name: focal, loss: {name: focal, gamma: 2.0}}]",
    "[ce, {name: focal, loss: {name: focal, gamma: 2.0}, tune: {loss.gamma: {low: 0.5, high: 5.0}}}]",
)


def _tuned_with_gamma():
    """The tuned study with focal's own gamma knob: (study, default specs, trials)."""
    from studybench.study.phases import tuning_trials

    study = Study.model_validate(yaml.safe_load(WITH_GAMMA))
    defaults = expand(study, check_data=False)
    return study, defaults, tuning_trials(study, defaults, "s.yaml")


def _load(text: str, tmp_path):
    from studybench.study.config import StudyError, load_study

    path = tmp_path / "s.yaml"
    path.write_text(text)
    try:
        return expand(load_study(path), source=str(path), check_data=False)
    except StudyError as err:
        return str(err)


def test_a_tuned_study_validates_and_counts_its_trials_against_the_run_limit(monkeypatch, tmp_path):
    study, defaults, trials = _tuned_with_gamma()
    assert len(trials) == 4 * 4 and {t.trial for t in trials} == {0, 1, 2, 3}
    monkeypatch.setenv("STUDYBENCH_MAX_RUNS", str(len(defaults) + len(trials) - 1))
    assert "16 tuning trials" in _load(WITH_GAMMA, tmp_path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (("budget: 4", "budget: 0"), "tune.budget"),
        (("log: true}", "log: true, low2: 1}"), "low2"),
        (("{low: 1.0e-4, high: 3.0e-2, log: true}", "{low: 3.0e-2, high: 1.0e-4}"), "above high"),
        (("{low: 1.0e-4, high: 3.0e-2, log: true}", "{low: 0, high: 1.0, log: true}"), "above 0"),
        (("train.lr:", "train.lrr:"), "has no parameter 'lrr'"),
        (
            ("[ce, {", "[{name: ce, loss: {name: ce}, tune: {loss.gamma: {low: 1, high: 2}}}, {"),
            "has no parameter 'gamma'",
        ),
    ],
)
def test_bad_tuning_input_names_the_key(edit, message, tmp_path):
    result = _load(TUNED.replace(*edit), tmp_path)
    assert isinstance(result, str) and message in result, result


def test_method_knobs_without_a_tune_section_are_refused(tmp_path):
    text = STUDY.replace("[ce, {", "[{name: ce, loss: {name: ce}, tune: {train.lr: {low: 0.1, high: 1}}}, {")
    assert "grid.method[0].tune: tuned knobs need a study-level tune" in _load(text, tmp_path)
    profiled = text + "profiles:\n  tuned:\n    tune: {budget: 2}\n"  # a profile's tune: section counts
    assert not isinstance(_load(profiled, tmp_path), str)


def test_settings_are_chosen_per_fold_and_a_fold_without_a_finished_trial_is_named(tmp_path):
    from studybench.study.phases import choose_settings, final_carve

    study, defaults, trials = _tuned_with_gamma()
    scores = {t.key: [1.0 if t.trial == 3 else 0.5] for t in trials}
    choices = choose_settings(study, trials, scores)
    assert len(choices) == 4 and all(c.trial == 3 for c in choices.values())
    focal = next(t for t in trials if t.method == "focal" and t.trial == 3)
    assert choices[focal.fold].values == {
        "train.lr": focal.config.train.lr,
        "loss.gamma": focal.config.loss.params["gamma"],
    }
    finals = final_specs(defaults, {f: c.values for f, c in choices.items()}, final_carve(study.tune))
    assert len(finals) == len(defaults) and all(f.config.data.carve is None for f in finals)
    fit = final_carve(study.tune.model_copy(update={"final_train": "fit"}))
    assert fit.score_on == "val" and fit.fraction == 0.25
    del scores[focal.key]
    unfinished = {t.key: [] for t in trials if t.fold == focal.fold}
    with pytest.raises(ValueError, match=r"no tuning trial finished in 1 fold\(s\) \(focal · unet"):
        choose_settings(study, trials, {**scores, **unfinished})


ABLATED = (
    WITH_GAMMA.replace("  model.arch: [unet, fpn]\n", "")
    + """\
ablations:
  wd: {of: focal, vary: {train.weight_decay: [0.0, 1.0e-4, 1.0e-3]}}
"""
)


def test_an_ablation_point_is_a_fold_with_its_own_budget_and_choice():
    from studybench.study.phases import choose_settings, final_carve, tuning_trials

    study = Study.model_validate(yaml.safe_load(ABLATED))
    defaults = expand(study, check_data=False)
    trials = tuning_trials(study, defaults, "s.yaml")
    folds: dict[str, list] = {}
    for trial in trials:
        folds.setdefault(trial.fold, []).append(trial)
    # ce, focal (its weight_decay 0.0 point is the main run: one fold), focal at 1e-4 and at 1e-3
    assert len(folds) == 4 and all(sorted(t.trial for t in f) == [0, 1, 2, 3] for f in folds.values())
    decays = sorted(f[0].config.train.weight_decay for f in folds.values() if f[0].method == "focal")
    assert decays == [0.0, 1e-4, 1e-3]
    assert all(t.config.train.weight_decay == f[0].config.train.weight_decay for f in folds.values() for t in f)
    assert len({t.key for t in trials}) == len(trials)
    # each fold chooses on its own scores: fold i's best trial is i % 4
    best = {fold: i % 4 for i, fold in enumerate(folds)}
    scores = {t.key: [1.0 if t.trial == best[t.fold] else 0.5] for t in trials}
    choices = choose_settings(study, trials, scores)
    assert {fold: c.trial for fold, c in choices.items()} == best
    finals = final_specs(defaults, {f: c.values for f, c in choices.items()}, final_carve(study.tune))
    assert [f.groups for f in finals] == [d.groups for d in defaults]  # the ablation table still finds its runs
    for final, default in zip(finals, defaults):
        chosen = next(t for t in folds[final.fold] if t.trial == best[final.fold])
        assert final.config.train.lr == chosen.config.train.lr
        assert final.config.train.weight_decay == default.config.train.weight_decay  # the ablated value is kept


@pytest.mark.parametrize(
    "edit, names",
    [
        (
            ("vary: {train.weight_decay: [0.0, 1.0e-4, 1.0e-3]}", "vary: {train.lr: [0.01, 0.1]}"),
            ("ablations.wd.vary.train.lr: varies train.lr", "(tune.space.train.lr)"),
        ),
        (
            ("vary: {train.weight_decay: [0.0, 1.0e-4, 1.0e-3]}", "vary: {loss.gamma: [1.0, 3.0]}"),
            ("ablations.wd.vary.loss.gamma: varies loss.gamma", "(grid.method[1].tune.loss.gamma)"),
        ),
        (
            ("grid:\n", "grid:\n  train.lr: [0.01, 0.1]\n"),
            ("grid.train.lr: varies train.lr", "(tune.space.train.lr)"),
        ),
        (
            ("grid:\n", "grid:\n  loss: [{name: focal, gamma: 1.0}]\n"),
            ("grid.loss: varies loss.gamma", "(grid.method[1].tune.loss.gamma)"),
        ),
    ],
)
def test_an_ablation_or_axis_that_varies_a_tuned_knob_is_refused_naming_both(edit, names, tmp_path):
    result = _load(ABLATED.replace(*edit), tmp_path)
    assert isinstance(result, str) and all(n in result for n in names), result


def test_an_ablation_of_a_knob_only_another_method_tunes_is_allowed(tmp_path):
    ce_gamma = ABLATED.replace("vary: {train.weight_decay: [0.0, 1.0e-4, 1.0e-3]}", "vary: {loss.gamma: [1.0, 3.0]}")
    ce_gamma = ce_gamma.replace("[ce, {name: focal", "[{name: focal1, loss: {name: focal, gamma: 2.0}}, {name: focal")
    ce_gamma = ce_gamma.replace("{of: focal,", "{of: focal1,")
    specs = _load(ce_gamma, tmp_path)
    assert not isinstance(specs, str), specs
    assert sorted(s.config.loss.params["gamma"] for s in specs if s.method == "focal1") == [
        1.0,
        1.0,
        2.0,
        2.0,
        3.0,
        3.0,
    ]


def test_methods_that_differ_only_in_a_tuned_knob_are_refused(tmp_path):
    twins = WITH_GAMMA.replace("[ce, {", "[{name: focal1, loss: {name: focal, gamma: 1.0}}, {")
    twins = twins.replace("tune:\n  budget: 4", "tune:\n  budget: 4").replace(
        "space:\n", "space:\n    loss.gamma: {low: 0.5, high: 5.0}\n"
    )
    twins = twins.replace(", tune: {loss.gamma: {low: 0.5, high: 5.0}}", "")
    result = _load(twins, tmp_path)
    assert isinstance(result, str) and "are the same computation" in result, result


def test_a_profile_tune_section_tunes_the_study_under_that_profile_only():
    from studybench.study.phases import tuning_trials

    raw = yaml.safe_load(WITH_GAMMA)
    raw["profiles"] = {"tuned": {"tune": raw.pop("tune")}}
    study = Study.model_validate(raw)
    assert study.tune is None and study.profiles["tuned"].tune is not None
    plain = expand(Study.model_validate(yaml.safe_load(STUDY)), check_data=False)
    assert [s.key for s in expand(study, check_data=False)] == [s.key for s in plain]  # untuned runs unchanged
    tuned = study.under("tuned")
    assert tuned.tune == study.profiles["tuned"].tune and study.under(None) is study
    defaults = expand(study, "tuned", check_data=False)
    assert [s.key for s in defaults] == [s.key for s in plain]
    assert len(tuning_trials(tuned, defaults, "s.yaml")) == 4 * 4


def test_the_manifest_records_each_trials_tuning_split_hash():
    from studybench.data.carve import carve_fraction
    from studybench.store.manifest import MANIFEST_TUNE_SPLIT, build_manifest
    from studybench.study.phases import tune_split_digests

    study, defaults, trials = _tuned_with_gamma()
    manifest = build_manifest(study, trials + defaults, None, None, tune_split_digests(trials + defaults))
    expected = carve_fraction([str(i) for i in range(8)], 0.25).digest  # the synthetic training split's ids
    entries = {e["key"]: e for e in manifest["runs"]}
    assert {entries[t.key][MANIFEST_TUNE_SPLIT] for t in trials} == {expected}
    assert all(MANIFEST_TUNE_SPLIT not in entries[d.key] for d in defaults)  # the final seeds train on all of it
    assert carve_fraction([str(i) for i in range(8)], 0.5).digest != expected


@pytest.mark.parametrize(
    "edit, message",
    [
        (("split: {fraction: 0.25}", "split: {fraction: 0.6}"), "batch_size 4 is larger than the training set (3"),
        (("split: {fraction: 0.25}", "split: {by: city, count: 2}"), "tune.split: by: 'city': this dataset has no"),
    ],
)
def test_the_trials_are_checked_as_runs_with_their_carve(edit, message, tmp_path):
    from studybench.study.config import StudyError, load_study

    path = tmp_path / "s.yaml"
    path.write_text(TUNED.replace(*edit))
    with pytest.raises(StudyError, match=message.replace("(", r"\(")):
        expand(load_study(path), source=str(path), check_data=True)


PAPER_STUDIES = ("goncalves2022_mi_study", "guo2018_lad", "zhang2021_sr", "zhao2019_rmi_ablation")


@pytest.mark.slow  # 2-10 s each: the smoke grids' components built and checked with their trials
@pytest.mark.parametrize("name", PAPER_STUDIES)
def test_a_paper_studys_tuned_profile_keeps_its_runs_and_its_knobs_fit_the_smoke_runs(name):
    from collections import Counter
    from pathlib import Path

    from studybench.study.config import load_study
    from studybench.study.phases import tuning_trials

    path = Path(__file__).resolve().parents[1] / "studies" / f"{name}.yaml"
    study = load_study(path)
    tune = study.profiles["tuned"].tune
    assert tune is not None and study.tune is None and tune.budget >= 8 and "train.lr" in tune.space
    plain = expand(study, source=str(path), check_data=False)
    assert [s.key for s in expand(study, "tuned", str(path), check_data=False)] == [s.key for s in plain]
    # the tuned profile's knobs on the smoke runs, checked with the (synthetic) data: every trial a valid run
    smoke_tune = tune.model_copy(update={"budget": 2, "split": CarveCfg(fraction=0.25)})
    smoke = study.model_copy(update={"tune": smoke_tune})
    defaults = expand(smoke, "smoke", str(path), check_data=True)
    folds = Counter(t.fold for t in tuning_trials(smoke, defaults, str(path)))
    assert set(folds.values()) == {2} and len(folds) == len({s.fold for s in defaults})


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            ("    train.lr: {low: 1.0e-4, high: 3.0e-2, log: true}\n", "    train.epochs: {low: 1, high: 2}\n"),
            "draw the same setting",
        ),
        (("  space:\n    train.lr: {low: 1.0e-4, high: 3.0e-2, log: true}\n", ""), "method 'ce' tunes no knob"),
    ],
)
def test_trials_that_would_repeat_one_setting_are_refused(edit, message, tmp_path):
    result = _load(TUNED.replace(*edit), tmp_path)
    assert isinstance(result, str) and message in result, result
