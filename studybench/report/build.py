"""Building a report: the stages of ``studybench.report`` run in order (see the package docstring)."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import studybench.report.aggregate as aggregate
import studybench.report.collect as collect
import studybench.report.images as images
import studybench.report.plots as plots
import studybench.report.ranking as ranking
import studybench.report.stats as stats
import studybench.report.tables as tables
import studybench.report.tuning as tuning
from studybench.names import file_stem
from studybench.report.collect import collect_runs, in_group, label, main_axes
from studybench.report.machine_load import load_warnings
from studybench.report.page import Figure, write_pages
from studybench.report.reference import check_reference
from studybench.report.scope import grid_scope, unequal_cells
from studybench.report.variance import variance_table
from studybench.store import StudyReader, StudyWriter
from studybench.store.layout import EVAL_CROP, PARAM_AXIS_PREFIX


@dataclass
class ReportResult:
    out_dir: Path
    runs: int
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # about the study's coverage (pending, left out, ...)
    report_run_id: str | None = None


def build_report(view: Any, store: StudyReader, out_dir: Path, log_to_mlflow: bool = True) -> ReportResult:
    """Build the report of ``view`` (an ``api.StudyView``: study definition + grid) from ``store``.

    Exactly the grid's runs are used (the newest FINISHED run of each key); what is missing
    or left out is returned in ``warnings`` and shown in the page's header.
    """
    study = view.study
    out_dir = Path(out_dir)
    keys = view.keys
    snapshot = store.snapshot()  # one read of the store feeds the scope and the tables
    scope = grid_scope(view.manifest, snapshot.latest, snapshot.finished)
    # a tuned study's trials: their own section
    trials, frame = tuning.split_phases(collect_runs(store, keys, snapshot=snapshot))
    result = ReportResult(out_dir=out_dir, runs=len(frame))
    if frame.empty:
        result.problems.append(
            f"no FINISHED runs of the {len(keys)} runs of study {study.study!r} in {store.uri}: run the study first"
        )
        return result
    scope.unequal = unequal_cells(frame, _cell_columns(frame))
    result.warnings = scope.warnings() + _deviations(frame) + load_warnings(frame)
    result.problems += check_reference(study.reference)
    if study.baseline and study.baseline not in set(frame["method"]):
        result.problems.append(f"baseline {study.baseline!r} has no finished run: no paired comparison")
    out_dir.mkdir(parents=True, exist_ok=True)

    built: list[tables.Table] = []
    builders: list[tuple[str, Callable[[], Any]]] = [
        ("main", lambda: tables.main_table(frame, study)),
        ("main_by_dataset", lambda: tables.by_dataset_table(frame, study)),
        ("ablations", lambda: tables.ablation_tables(frame, study)),
        ("costs", lambda: tables.costs_table(frame, study)),
        ("seeds_needed", lambda: tables.seeds_table(frame, study)),
        ("variance", lambda: variance_table(frame, study)),  # studies with seeds by source only
        ("per_class", lambda: tables.per_class_table(frame, study)),
        ("reference", lambda: tables.reference_table(frame, study)),
        ("runs", lambda: tables.runs_table(frame, study)),
        ("ranking", lambda: ranking.study_tables(frame, study)),  # none below 2 (dataset, arch, ...) cells
        ("images", lambda: images.image_tables(store, frame, study, snapshot)),  # runs with per-image counts
        ("tuning", lambda: tuning.tuning_tables(trials, frame, study) if study.tune is not None else None),
    ]
    for name, build in builders:
        made = _attempt(result, f"table {name}", build)
        for table in made if isinstance(made, list) else [made] if made is not None else []:
            result.files += tables.write_table(table, out_dir)
            built.append(table)

    figures: list[Figure] = []
    plan = [*_figure_plan(store, frame, study, {t.stem: t for t in built}), *_tuning_figures(trials)]
    for stem, caption, draw in plan:
        stem = file_stem(stem)  # names read from the store (a dataset tag) never leave out_dir
        fig = _attempt(result, f"figure {stem}", draw)
        if (
            fig is not None
            and _attempt(
                result, f"figure {stem} (saving)", lambda f=fig, s=stem: result.files.extend(plots.save(f, out_dir, s))
            )
            is not False
        ):
            figures.append(Figure(stem, caption))
    notes = [scope.header(), *result.warnings]
    result.files += write_pages(out_dir, study, frame, built, figures, result.problems, notes)
    if log_to_mlflow:
        result.report_run_id = _attempt(
            result,
            "logging the report to MLflow",
            lambda: StudyWriter(store.uri, study.study).log_report(out_dir, view.profile),
        )
    return result


def _tuning_figures(trials: pd.DataFrame):
    """A tuned study's budget curves: would fewer (or more) trials have changed the ranking?"""
    if trials.empty:
        return
    yield (
        "tuning_budget",
        "Expected best tuning mIoU against the number of trials per method (the unbiased estimator of Tang et al. "
        "2020 over the trials run): where the curves cross, the ranking depends on the tuning budget",
        lambda: tuning.budget_figure(tuning.budget_curves(trials)),
    )


def _deviations(frame: pd.DataFrame) -> list[str]:
    """Runs that departed from the evaluation protocol or from one setup, which a reader of the tables must know."""
    out = []
    cropped = int((frame.get("eval_labels", pd.Series(dtype=str)) == EVAL_CROP).sum())
    if cropped:
        out.append(
            f"{cropped} run(s) were scored on resized, centre-cropped labels (data.eval_on: crop), not on the native "
            "label maps of the official protocol: compare them only with each other"
        )
    setups = frame.get("setup", pd.Series(dtype=str)).fillna("").replace("", "unknown (no device tag)").value_counts()
    if len(setups) > 1:
        listed = "; ".join(f"{setup} ({n} runs)" for setup, n in setups.items())
        out.append(
            f"the runs were computed on {len(setups)} setups: {listed}. One run gives other float results on another "
            "device, torch or CPU thread count (in the third decimal of mIoU at smoke scale), so a difference of that "
            "size between methods may come from the setups: rerun on one to compare"
        )
    return out


def _cell_columns(frame: pd.DataFrame) -> list[str]:
    """What names a cell (runs that differ by seed only): dataset, method, arch and every axis value."""
    return ["dataset", "method", "arch", *sorted(c for c in frame.columns if c.startswith(PARAM_AXIS_PREFIX))]


def _attempt(result: ReportResult, what: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, or ``False`` after recording the failure as a problem (the report goes on)."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - one table or figure must not stop the report
        result.problems.append(f"{what} failed: {type(err).__name__}: {err}\n{traceback.format_exc(limit=4)}")
        return False if what.endswith("(saving)") else None


def _varying(frame: pd.DataFrame, cols: list[str]) -> list[str]:
    return [c for c in cols if c in frame and frame[c].nunique() > 1]


def _figure_plan(store: StudyReader, frame: pd.DataFrame, study: Any, by_stem: dict[str, tables.Table]):
    """(stem, caption, draw) for every figure the available tables support."""
    axes = ["arch", *main_axes(frame)]
    main = by_stem.get("main")
    if main is not None:
        summary = main.data.assign(**{c: main.data[c].map(str) for c in axes})
        methods = tables.method_order(study, list(summary["method"].unique()))
        yield (
            "miou_bars",
            f"mIoU per method, architecture and dataset (mean over seeds; {stats.interval_caption(main.data['n'])})",
            lambda: plots.bars(summary, methods, _varying(summary, axes) or ["arch"]),
        )
        costs = by_stem.get("costs")
        if costs is not None:
            cell = ["dataset", *axes, "method"]
            both = main.data[[*cell, "miou", "miou_lo", "miou_hi"]].merge(costs.data, on=cell)
            other = _varying(both, ["dataset", *axes])
            fill = (
                f" (marker: method, fill: {' / '.join(c.removeprefix(PARAM_AXIS_PREFIX) for c in other)})"
                if other
                else ""
            )
            yield (
                "accuracy_vs_cost",
                f"mIoU against the cost per training step (median step time, median loss time, memory above the "
                f"run's start; wall times are in the runs table){fill}; Pareto front dashed, on the loss's own costs "
                f"only and only where their gaps exceed the run-to-run spread (grey band from the cheapest cell); "
                f"{plots.cost_whiskers(both['n'])}",
                lambda: plots.cost_scatter(both, methods, other),
            )
    for name, abl in study.ablations.items():
        table = by_stem.get(f"ablation_{name}")
        if table is None or len(abl.vary) != 1:
            continue
        key = next(iter(abl.vary))
        order = list(dict.fromkeys([label(v) for v in abl.vary[key]] + sorted(table.data[key].unique())))
        series = _varying(table.data, ["dataset", *axes])
        yield (
            f"ablation_{name}",
            f"Ablation {name}: mIoU against {key} (method {abl.of}; {stats.interval_caption(table.data['n'])})",
            lambda d=table.data, k=key, o=order, s=series, n=name: plots.ablation(
                d, k, o, s, f"ablation {n}: mIoU against {k}\n({stats.interval_caption(d['n'])})"
            ),
        )
    per_class = by_stem.get("per_class")
    if per_class is not None:
        for ds in dict.fromkeys(per_class.data["dataset"]):
            sub = per_class.data[per_class.data["dataset"] == ds].dropna(axis=1, how="all")
            rows = ["method", *_varying(sub, axes)]
            stem = "per_class_iou" if per_class.data["dataset"].nunique() == 1 else f"per_class_iou_{ds}"
            yield (
                stem,
                f"Per-class IoU on {ds} and the difference to {study.baseline or 'the baseline'}",
                lambda s=sub, r=rows: plots.per_class(s, r, study.baseline),
            )
    if "ranking" in by_stem:
        cells = ranking.count_cells(frame)
        yield (
            "critical_difference",
            f"Average rank of each method over the {cells} cells of the main grid (1 = best); bars join methods "
            "that no pairwise Wilcoxon signed-rank test with Holm's correction separates (α = 0.05, Benavoli et al. "
            "2016; with fewer than 6 cells none can); the CD interval is Nemenyi's, drawn for scale (Demšar 2006)",
            lambda: ranking.cd_diagram(ranking.study_ranking(frame, study)),
        )
    values = ranking.cell_values(frame, "miou")
    if values["method"].nunique() > 1 and values["value"].notna().any():
        yield (
            "performance_profile",
            "Performance profile: fraction of each method's runs (every cell and seed of the main grid) whose mIoU "
            "exceeds τ (Agarwal et al. 2021); a curve above another is better at every threshold",
            lambda: plots.performance_profile(_profile(values, study)),
        )
    main_runs = frame[in_group(frame, "main")]
    series = ["method", *_varying(main_runs, axes)]
    yield (
        "training_curves",
        "Validation mIoU and training loss parts per epoch "
        f"(mean over seeds; {stats.interval_caption(main_runs.groupby(series).size())})",
        lambda: _curves(store, _by_method(main_runs, study, series), series),
    )
    for ds in dict.fromkeys(main_runs["dataset"]):
        stem = "samples" if main_runs["dataset"].nunique() == 1 else f"samples_{ds}"
        yield (
            stem,
            f"Validation images of {ds}: ground truth and each method's prediction (lowest seed)",
            lambda d=ds: _samples(store, main_runs[main_runs["dataset"] == d], study, series),
        )


def _profile(values: pd.DataFrame, study: Any) -> pd.DataFrame:
    scores = values["value"].dropna()
    taus = np.linspace(scores.min() - 0.01, scores.max() + 0.01, 200)
    return aggregate.profile(values, tables.method_order(study, list(values["method"].unique())), taus)


def _curves(store: StudyReader, runs: pd.DataFrame, series: list[str]):
    hist = collect.histories(store, runs["run_id"])
    if hist.empty:
        raise ValueError("no per-epoch metric history in the runs")
    return plots.curves(
        hist, runs.assign(**{c: runs[c].map(label) for c in series if c.startswith(PARAM_AXIS_PREFIX)}), series
    )


def _by_method(runs: pd.DataFrame, study: Any, series: list[str]) -> pd.DataFrame:
    """Runs in the study's method order (baseline first), then by the other series columns."""
    order = tables.method_order(study, list(runs["method"].unique()))
    ranked = runs.assign(_rank=runs["method"].map(order.index))
    return ranked.sort_values(["_rank", *series[1:]], kind="stable").drop(columns="_rank")


def _samples(store: StudyReader, runs: pd.DataFrame, study: Any, series: list[str]):
    runs = _by_method(runs[runs["seed"] == runs["seed"].min()], study, series)
    columns = [
        (" / ".join(label(r[c]) for c in series), collect.samples(store, r["run_id"])) for _, r in runs.iterrows()
    ]
    return plots.samples(columns)


__all__ = ["ReportResult", "build_report", "collect_runs"]
