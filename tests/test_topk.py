"""``tune.select: {top_k, seeds}``: the best trials re-run with extra seeds, then the best mean over seeds."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml
from helpers import TINY_TUNED, invoke

from studybench.store import StudyReader
from studybench.store.layout import KIND_TUNE_PARENT, METRIC_MIOU, TAG_KIND, TAG_PHASE, TAG_TRIAL
from studybench.study.config import Study
from studybench.study.grid import expand
from studybench.study.phases import choose_settings, tuning_trials
from studybench.study.topk import rerun_specs, top_trials
from studybench.study.tuning import choose_trial

STUDY = TINY_TUNED.replace("study: tinytuned", "study: tinytopk").replace(
    "  budget: 3\n", "  budget: 3\n  select: {top_k: 2, seeds: [0, 11]}\n"
)


def _trials():
    study = Study.model_validate(yaml.safe_load(STUDY))
    return study, tuning_trials(study, expand(study, check_data=False), "s.yaml")


def test_the_top_k_of_each_fold_are_re_run_with_the_extra_seeds_only():
    study, trials = _trials()
    ranks = {0: 0.5, 1: 0.7, 2: 0.6}  # trial index -> its single-seed score, in both folds
    scores = {t.key: [ranks[t.trial]] for t in trials}
    top = top_trials(trials, scores, 2)
    assert sorted((t.method, t.trial) for t in top) == [("ce", 1), ("ce", 2), ("focal", 1), ("focal", 2)]
    reruns = rerun_specs(study.tune.select, trials, scores)
    # seed 0 is the trials' own seed: only seed 11 is a re-run
    assert sorted((r.method, r.trial, r.seed) for r in reruns) == [
        ("ce", 1, 11),
        ("ce", 2, 11),
        ("focal", 1, 11),
        ("focal", 2, 11),
    ]
    for rerun in reruns:
        same = next(t for t in trials if t.fold == rerun.fold and t.trial == rerun.trial)
        assert rerun.config == same.config and rerun.key != same.key and rerun.phase == "tune"
        assert rerun.fold == same.fold and " · t" in rerun.name and rerun.name.endswith("s11")
    # an unfinished trial is never in the top K; ties keep the lower index
    tied = {t.key: [0.5] for t in trials if t.trial != 2}
    assert sorted(t.trial for t in top_trials(trials, tied, 2) if t.method == "ce") == [0, 1]


def test_the_choice_is_the_best_mean_among_the_re_run_trials():
    study, trials = _trials()
    ranks = {0: 0.5, 1: 0.7, 2: 0.6}
    scores = {t.key: [ranks[t.trial]] for t in trials}
    reruns = rerun_specs(study.tune.select, trials, scores)
    second = {1: 0.3, 2: 0.62}  # trial 1 was the lucky one: its second seed falls back
    scores.update({r.key: [second[r.trial]] for r in reruns})
    choices = choose_settings(study, trials + reruns, scores)
    assert {c.trial for c in choices.values()} == {2}  # mean 0.61 beats trial 1's 0.50 and trial 0's single 0.5
    # a trial outside the top K cannot win on one lucky seed
    assert choose_trial({0: [0.9], 1: [0.7, 0.3], 2: [0.6, 0.62]}) == 2
    assert choose_trial({0: [0.5], 1: [0.7]}) == 1  # without re-runs: unchanged (best single score)


@pytest.mark.parametrize(
    "select, message",
    [
        ("{top_k: 4, seeds: [1]}", "above the budget"),
        ("{top_k: 2, seeds: [1, 1]}", "distinct"),
        ("{top_k: 0, seeds: [1]}", "top_k"),
        ("{top_k: 2, seeds: []}", "seeds"),
    ],
)
def test_bad_select_exits_2_naming_the_key(select, message, tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(STUDY.replace("{top_k: 2, seeds: [0, 11]}", select))
    result = invoke("validate", str(study))
    assert result.returncode == 2 and message in result.stdout + result.stderr, result.stdout + result.stderr
    assert "select" in result.stdout + result.stderr


def test_a_study_with_top_k_re_runs_them_as_tuning_runs_and_records_the_choice(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(STUDY)
    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    ran = invoke("run", str(study), "--tracking-uri", uri)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    runs = StudyReader(uri, "tinytopk").runs()
    tuning = [r for r in runs if r.data.tags.get(TAG_PHASE) == "tune" and r.info.status == "FINISHED"]
    assert Counter(r.data.tags["studybench.method"] for r in tuning) == {"ce": 3 + 2, "focal": 3 + 2}
    scores: dict[str, dict[int, list[float]]] = {}
    for r in tuning:
        by_trial = scores.setdefault(r.data.tags["studybench.method"], {})
        by_trial.setdefault(int(r.data.tags[TAG_TRIAL]), []).append(r.data.metrics[METRIC_MIOU])
    parents = {r.info.run_name.split(" · ")[0]: r for r in runs if r.data.tags.get(TAG_KIND) == KIND_TUNE_PARENT}
    for method, by_trial in scores.items():
        assert sorted(len(v) for v in by_trial.values()) == [1, 2, 2]  # the top two got a second seed
        assert parents[method].data.tags[TAG_TRIAL] == str(choose_trial(by_trial))
    finals = [r for r in runs if r.data.tags.get(TAG_PHASE) == "final"]
    assert len(finals) == 2 and all(r.info.status == "FINISHED" for r in finals)
    again = invoke("run", str(study), "--tracking-uri", uri)
    assert again.returncode == 0 and "0 to run" in again.stdout
    assert len(StudyReader(uri, "tinytopk").runs()) == len(runs)  # nothing new trained
    out = tmp_path / "report"
    report = invoke("report", str(study), "--tracking-uri", uri, "--out", str(out))
    assert report.returncode == 0, report.stdout + report.stderr
    assert "the 2 best trials were re-run with seeds 0, 11" in (out / "tuning.md").read_text()


def test_validate_counts_the_re_runs(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(STUDY)
    result = invoke("validate", str(study))
    assert result.returncode == 0 and "2 best trials re-run with seeds [11] (4 runs)" in result.stdout, result.stdout
