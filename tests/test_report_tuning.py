"""The tuning section of a report, from a frame shaped as collect_runs returns it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from studybench.report.budget import expected_best
from studybench.report.tuning import (
    budget_curves,
    budget_figure,
    fold_summary,
    ranking_change,
    reported_split_evaluations,
    split_phases,
    tuning_tables,
)
from studybench.study.config import Study

STUDY = Study.model_validate(
    yaml.safe_load(
        """
study: t
baseline: ce
grid:
  method: [ce, {name: focal, loss: {name: focal}, tune: {loss.gamma: {low: 0.5, high: 5.0}}}]
tune: {budget: 3, space: {train.lr: {low: 1.0e-4, high: 1.0e-1, log: true}}}
"""
    )
)


def _frame():
    rows = []
    lrs = [0.003, 0.02, 0.0004]
    tuned = {"ce": [0.50, 0.55, 0.40], "focal": [0.45, 0.60, 0.52]}  # focal behind CE at defaults, ahead tuned
    for method, scores in tuned.items():
        for trial, (score, lr) in enumerate(zip(scores, lrs)):
            rows.append(
                {
                    "dataset": "synthetic",
                    "arch": "unet",
                    "method": method,
                    "seed": 0,
                    "phase": "tune",
                    "trial": trial,
                    "miou": score,
                    "wall_s": 36.0,
                    "param.train.lr": str(lr),
                    "param.loss.gamma": "2.0" if trial == 0 else str(1.0 + trial),
                }
            )
        for seed in (0, 1):
            rows.append(
                {
                    "dataset": "synthetic",
                    "arch": "unet",
                    "method": method,
                    "seed": seed,
                    "phase": "final",
                    "trial": -1,
                    "miou": 0.5,
                    "wall_s": 40.0,
                    "param.train.epochs": "3",
                    "param.train.eval_every": "2",
                }
            )
    return pd.DataFrame(rows)


def test_trials_are_kept_out_of_the_main_tables():
    trials, finals = split_phases(_frame())
    assert len(trials) == 6 and set(trials["phase"]) == {"tune"}
    assert len(finals) == 4 and "tune" not in set(finals["phase"])
    untuned = pd.DataFrame({"method": ["ce"], "miou": [0.5]})
    assert split_phases(untuned)[0].empty and len(split_phases(untuned)[1]) == 1


def test_the_summary_shows_default_and_chosen_setting_score_and_cost():
    trials, _ = split_phases(_frame())
    summary = fold_summary(trials, STUDY).set_index("method")
    assert summary.loc["focal", "chosen_trial"] == 1 and summary.loc["ce", "chosen_trial"] == 1
    assert summary.loc["focal", "default_miou"] == 0.45 and summary.loc["focal", "tuned_miou"] == 0.60
    assert summary.loc["focal", "default train.lr"] == "0.003" and summary.loc["focal", "chosen train.lr"] == "0.02"
    assert summary.loc["focal", "chosen loss.gamma"] == "2.0" and summary.loc["focal", "default loss.gamma"] == "2.0"
    assert "chosen loss.gamma" in summary.columns and summary.loc["ce", "trials"] == 3
    assert summary.loc["ce", "tuning_hours"] == pytest.approx(3 * 36 / 3600)


def test_a_comparison_that_changes_side_after_tuning_is_flagged():
    trials, finals = split_phases(_frame())
    change = ranking_change(fold_summary(trials, STUDY), "ce")
    row = change.iloc[0]
    assert (row["method"], row["at defaults"], row["tuned"], row["changed"]) == ("focal", "behind", "ahead", "yes")
    tables = tuning_tables(trials, finals, STUDY)
    assert [t.stem for t in tables] == ["tuning", "tuning_ranking"]
    assert "3 trials per (method, cell)" in tables[0].note and "test touched 8 times" in tables[0].note
    assert "1 of 1 comparisons change side" in tables[1].note


def test_budget_curves_and_the_count_of_reported_split_evaluations():
    trials, finals = split_phases(_frame())
    curves = budget_curves(trials)
    focal = curves[curves["method"] == "focal"].set_index("n")["expected_best"]
    assert focal[1] == pytest.approx(np.mean([0.45, 0.60, 0.52])) and focal[3] == pytest.approx(0.60)
    assert focal[2] == pytest.approx(expected_best([0.45, 0.60, 0.52], 2))
    assert reported_split_evaluations(finals) == 4 * 2  # 3 epochs, every 2nd and the last: 2 each


def test_an_ablation_fold_is_a_cell_of_its_own_compared_with_the_baselines_plain_cell():
    frame = _frame()
    ablated = frame[(frame["method"] == "focal") & (frame["phase"] == "tune")].copy()
    ablated["axis.train.weight_decay"] = 0.001  # an ablation with one value: only its runs have the axis
    ablated["miou"] = [0.40, 0.42, 0.58]  # behind CE at its default, ahead tuned (CE: 0.50 -> 0.55)
    trials, _ = split_phases(pd.concat([frame, ablated], ignore_index=True))
    summary = fold_summary(trials, STUDY)
    assert len(summary) == 3 and summary["trials"].tolist() == [3, 3, 3]
    assert sorted(summary["tuned_miou"]) == [0.55, 0.58, 0.60]
    change = ranking_change(summary, "ce")
    assert len(change) == 2 and change["changed"].tolist() == ["yes", "yes"]
    assert len(budget_curves(trials)) == 3 * 3
    table, ranking = tuning_tables(trials, split_phases(frame)[1], STUDY)
    assert "train.weight_decay" in table.display.columns and ranking.display["train.weight_decay"].tolist() == [
        "-",
        0.001,
    ]
    figure = budget_figure(budget_curves(trials))
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["synthetic · unet", "synthetic · unet · train.weight_decay=0.001"]
    assert [t.get_text() for t in figure.axes[-1].get_legend().get_texts()] == ["ce", "focal"]
