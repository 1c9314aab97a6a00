"""The report of a tuned study: what tuning chose, what it changed, what it cost, how it depends on budget.

Read from the store alone, like every section: trials are the runs tagged ``studybench.phase =
tune`` (score: mIoU on the tuning split carved from the training data), final seeds those
tagged ``final`` (score: the reported split). A reader should see (1) that every method got
the same number of trials, (2) how far each method's default was from its tuned setting, and
(3) whether the comparison with the baseline would have read differently at the defaults.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from studybench.report.budget import budget_curve
from studybench.report.collect import label
from studybench.store.layout import METRIC_WALL, PARAM_AXIS_PREFIX
from studybench.study.tuning import choose_trial, tuned_knobs

PHASE_TUNE, PHASE_FINAL = "tune", "final"


def split_phases(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(tuning trials, every other run): the main tables see final seeds (or an untuned study's runs) only."""
    phase = frame["phase"] if "phase" in frame else pd.Series("", index=frame.index)
    trials = phase == PHASE_TUNE
    return frame[trials].reset_index(drop=True), frame[~trials].reset_index(drop=True)


def cell_columns(frame: pd.DataFrame) -> list[str]:
    """What names a cell besides the method: dataset, arch and every other axis whose value varies.

    Absent counts as a value: an ablation with one value (``vary: {loss.radius: [5]}``) is a
    fold of its own beside the method's main-grid fold, whose runs lack that axis.
    """
    named = {f"{PARAM_AXIS_PREFIX}{k}" for k in ("method", "dataset", "model.arch")}  # columns of their own
    axes = [
        c
        for c in frame.columns
        if c.startswith(PARAM_AXIS_PREFIX) and c not in named and frame[c].nunique(dropna=False) > 1
    ]
    return ["dataset", "arch", *sorted(axes)]


def fold_summary(trials: pd.DataFrame, study: Any) -> pd.DataFrame:
    """One row per (cell, method): trials finished, default (trial 0) and chosen score and setting, cost."""
    rows = []
    cells = cell_columns(trials)
    for key, fold in trials.groupby([*cells, "method"], dropna=False, sort=False):
        scores = fold.groupby("trial")["miou"].mean()
        if scores.empty or scores.isna().all():
            continue
        chosen = choose_trial({int(t): list(s.dropna()) for t, s in fold.groupby("trial")["miou"]})  # as run chose
        knobs = tuned_knobs(study, fold["method"].iloc[0])
        row = dict(zip([*cells, "method"], key))
        row.update(
            trials=int(fold["trial"].nunique()),
            budget=int(study.tune.budget),
            chosen_trial=chosen,
            default_miou=float(scores.get(0, math.nan)),
            tuned_miou=float(scores[chosen]),
            tuning_hours=float(fold.get(METRIC_WALL, pd.Series(dtype=float)).sum()) / 3600.0,
        )
        for knob in knobs:
            column = f"param.{knob}"
            values = fold.set_index("trial")[column] if column in fold else pd.Series(dtype=object)
            row[f"default {knob}"] = label(values.get(0, math.nan))
            row[f"chosen {knob}"] = label(values.get(chosen, math.nan))
        rows.append(row)
    return pd.DataFrame(rows)


def ranking_change(summary: pd.DataFrame, baseline: str | None) -> pd.DataFrame:
    """Per (cell, method): ahead of or behind the baseline at the defaults, and after tuning (tuning-split scores)."""
    if summary.empty or not baseline or baseline not in set(summary["method"]):
        return pd.DataFrame()
    cells = [c for c in summary.columns if c in ("dataset", "arch") or c.startswith(PARAM_AXIS_PREFIX)]
    base = summary[summary["method"] == baseline]
    rows = []
    for _, row in summary[summary["method"] != baseline].iterrows():
        ref = _baseline_row(base, row, cells)
        if ref is None:
            continue
        before, after = _side(row["default_miou"] - ref["default_miou"]), _side(row["tuned_miou"] - ref["tuned_miou"])
        rows.append(
            {
                **{c: row[c] for c in cells},
                "method": row["method"],
                "at defaults": before,
                "tuned": after,
                "changed": "yes" if before != after else "no",
            }
        )
    return pd.DataFrame(rows)


def _baseline_row(base: pd.DataFrame, row: pd.Series, cells: list[str]) -> pd.Series | None:
    """The baseline's fold that ``row`` is compared with: the same cell, where an axis the baseline's
    fold lacks (an ablation of another method) is ignored; of several, the one matching most axes."""
    best, matched = None, -1
    for _, ref in base.iterrows():
        same = [c for c in cells if _equal(ref[c], row[c])]
        if all(c in same or _missing(ref[c]) for c in cells) and len(same) > matched:
            best, matched = ref, len(same)
    return best


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _equal(a: Any, b: Any) -> bool:
    return (_missing(a) and _missing(b)) or (not _missing(a) and not _missing(b) and a == b)


def _side(delta: float) -> str:
    if delta is None or (isinstance(delta, float) and math.isnan(delta)):
        return "-"
    return "ahead" if delta > 0 else "behind" if delta < 0 else "tied"


def budget_curves(trials: pd.DataFrame) -> pd.DataFrame:
    """Expected best tuning mIoU of n trials (Tang et al.'s unbiased estimator), per (cell, method), n = 1..B."""
    rows = []
    cells = cell_columns(trials)
    for key, fold in trials.groupby([*cells, "method"], dropna=False, sort=False):
        scores = fold.groupby("trial")["miou"].mean().dropna().to_numpy()
        if scores.size == 0:
            continue
        for n, value in enumerate(budget_curve(scores), start=1):
            rows.append({**dict(zip([*cells, "method"], key)), "n": n, "expected_best": value})
    return pd.DataFrame(rows)


def reported_split_evaluations(finals: pd.DataFrame) -> int:
    """How many times the final seeds evaluated the reported split (one per evaluated epoch of each run)."""
    if finals.empty:
        return 0
    epochs = pd.to_numeric(finals.get("param.train.epochs"), errors="coerce").fillna(1)
    every = pd.to_numeric(finals.get("param.train.eval_every"), errors="coerce").fillna(1).clip(lower=1)
    return int(np.sum(np.ceil(epochs / every)))


def tuning_tables(trials: pd.DataFrame, finals: pd.DataFrame, study: Any) -> list[Any]:
    """The report's tuning tables: chosen setting and default vs tuned per (cell, method), ranking changes."""
    from studybench.report.tables import Table, pct

    summary = fold_summary(trials, study)
    if summary.empty:
        return []
    tune = study.tune
    touched = reported_split_evaluations(finals)
    note = (
        f"Every method got the same budget: {tune.budget} trials per (method, cell), {_sampler_text(tune)} "
        f"(seed {tune.seed}), trial 0 = the method's configured setting{_select_text(tune)}. Scores are mIoU on the tuning split "
        f"carved from the training data ({_split_text(tune.split)}); the final seeds train on "
        f"{'all of the training split' if tune.final_train == 'all' else 'the training split without it'} and are "
        f"the only runs scored on the reported split (test touched {touched} times). "
        "Tuned - default > 0: the default under-sold the method."
    )
    display = summary.astype(object).fillna("-")  # "-": a knob only another method tuned
    for column in ("default_miou", "tuned_miou"):
        display[column] = summary[column].map(pct)
    for column in (c for c in summary.columns if c.startswith(("default ", "chosen "))):
        display[column] = summary[column].map(_short_value)
    gain = (summary["tuned_miou"] - summary["default_miou"]).map(pct)
    display.insert(display.columns.get_loc("tuned_miou") + 1, "tuned - default", gain)
    display["tuning_hours"] = summary["tuning_hours"].map(lambda h: f"{h:.3f}")
    display["trials"] = [f"{t}/{b}" for t, b in zip(summary["trials"], summary["budget"])]
    display = _axis_headings(display.drop(columns=["budget"]).rename(columns=DISPLAY_NAMES))
    out = [Table("tuning", "Tuning: chosen setting, default vs tuned (tuning split)", summary, display, note)]
    change = ranking_change(summary, study.baseline)
    if not change.empty:
        changed = int((change["changed"] == "yes").sum())
        note = (
            f"Against the baseline {study.baseline!r} on the tuning split, at each method's default and after equal "
            f"tuning: {changed} of {len(change)} comparisons change side."
        )
        shown = _axis_headings(change.astype(object).fillna("-"))  # "-": a fold without that axis
        out.append(Table("tuning_ranking", "Did tuning change the comparison with the baseline?", change, shown, note))
    return out


def _sampler_text(tune: Any) -> str:
    return "settings asked of TPE (Optuna) one round after another" if tune.sampler == "tpe" else "Sobol points"


def _select_text(tune: Any) -> str:
    """How the setting was chosen when ``select`` re-ran the best trials with extra seeds."""
    if tune.select is None:
        return ""
    seeds = ", ".join(str(s) for s in tune.select.seeds)
    return (
        f"; the {tune.select.top_k} best trials were re-run with seeds {seeds} and the best mean over seeds "
        "chosen among them (against the winner's curse)"
    )


#: Column headings of the tuning table as a reader sees them (the CSV keeps the plain names).
DISPLAY_NAMES = {
    "chosen_trial": "chosen trial",
    "default_miou": "default mIoU (%)",
    "tuned_miou": "tuned mIoU (%)",
    "tuned - default": "tuned - default (pp)",
    "tuning_hours": "tuning hours",
}


def _axis_headings(frame: pd.DataFrame) -> pd.DataFrame:
    """``axis.train.weight_decay`` -> ``train.weight_decay``: the key as the study file spells it."""
    return frame.rename(columns=lambda c: c[len(PARAM_AXIS_PREFIX) :] if c.startswith(PARAM_AXIS_PREFIX) else c)


def _short_value(text: Any) -> str:
    """A knob value as a reader wants it: 4 significant digits for a float, as logged otherwise."""
    try:
        number = float(text)
    except (TypeError, ValueError):
        return "-" if text is None or text == "nan" else str(text)
    return "-" if math.isnan(number) else text if "." not in str(text) else f"{number:.4g}"


def _split_text(split: Any) -> str:
    if split.fraction is not None:
        return f"{100 * split.fraction:g}% of the images"
    return f"{split.count} whole {split.by} group(s)"


def budget_figure(curves: pd.DataFrame):
    """Expected best tuning mIoU against the number of trials, a panel per cell, a line per method."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cells = [c for c in curves.columns if c not in ("method", "n", "expected_best")]
    groups = list(curves.groupby(cells, dropna=False, sort=False)) if cells else [((), curves)]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), squeeze=False, sharey=True)
    colours = {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(curves["method"]))}  # one per method, every panel
    lines = {}
    for ax, (key, panel) in zip(axes[0], groups):
        for method, line in panel.groupby("method", sort=False):
            x, y = line["n"], 100 * line["expected_best"]
            lines[method] = ax.plot(x, y, marker="o", markersize=3, color=colours[method], label=method)[0]
        ax.set_title(_panel_title(cells, key if isinstance(key, tuple) else (key,)), fontsize=9)
        ax.set_xlabel("trials")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("expected best tuning mIoU (%)")
    ordered = [lines[m] for m in colours if m in lines]  # every method, in the study's order
    axes[0][-1].legend(handles=ordered, fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _panel_title(cells: list[str], values: tuple) -> str:
    """``synthetic · unet · train.weight_decay=0.001``: dataset and arch as they are, other axes named, absent ones left out."""
    parts = []
    for column, value in zip(cells, values):
        if column.startswith(PARAM_AXIS_PREFIX):
            if not _missing(value):
                parts.append(f"{column[len(PARAM_AXIS_PREFIX) :]}={label(value)}")
        else:
            parts.append(label(value))
    return " · ".join(parts)
