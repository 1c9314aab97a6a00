"""The accuracy-vs-cost figure draws no Pareto front on cost gaps inside the run-to-run spread (issue 27)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest

from studybench.report.plots import cost_scatter, cost_spread


def _cells(loss_ms, loss_std, step_s=(0.12, 0.15, 0.11)):
    return pd.DataFrame(
        {
            "method": ["ce", "focal", "rmi"],
            "miou": [0.50, 0.52, 0.55],
            "miou_lo": [0.48, 0.50, 0.53],
            "miou_hi": [0.52, 0.54, 0.57],
            "n": [3, 3, 3],
            "step_s": list(step_s),
            "step_s_std": [0.02, 0.02, 0.02],
            "step_s_iqr": [0.03, 0.03, 0.03],
            "loss_ms": list(loss_ms),
            "loss_ms_std": [loss_std] * 3,
            "loss_ms_iqr": [0.1] * 3,
        }
    )


def _labels(fig):
    return [[line.get_label() for line in ax.get_lines()] + [ax.get_title()] for ax in fig.axes]


def test_the_spread_is_the_larger_of_seed_std_and_within_run_iqr():
    assert cost_spread(_cells([1.0, 2.0, 9.0], 0.5), "loss_ms") == pytest.approx(0.5)
    assert cost_spread(_cells([1.0, 2.0, 9.0], 0.05), "loss_ms") == pytest.approx(0.1)
    assert cost_spread(pd.DataFrame({"loss_ms": [1.0]}), "loss_ms") == 0.0


def test_a_front_only_on_the_loss_cost_and_only_when_gaps_exceed_the_spread():
    separated = _labels(cost_scatter(_cells([1.2, 2.0, 9.0], 0.3), ["ce", "focal", "rmi"]))
    step_panel, loss_panel = separated
    assert "Pareto front" not in step_panel and "context" in step_panel[-1]  # step time: context only
    assert "Pareto front" in loss_panel
    noisy = _labels(cost_scatter(_cells([1.2, 1.5, 1.9], 1.0), ["ce", "focal", "rmi"]))
    assert "Pareto front" not in noisy[1] and "within the run-to-run spread" in noisy[1][-1]
