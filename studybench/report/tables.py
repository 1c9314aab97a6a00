"""Tables of a report, each written as Markdown, CSV and LaTeX (booktabs).

Every table keeps two frames: ``data`` (numbers: means, stds, CI bounds, p-values, as
fractions) goes to CSV for further analysis; ``display`` (formatted text, accuracy in %) goes
to Markdown, LaTeX and the HTML page. Accuracy columns show ``mean ± std`` over seeds and the
95 % t interval of the mean (``stats``), named in the header and the note; a table whose cells
all have one seed has no interval column, a single cell with one seed shows ``n = 1: no
interval`` and an interval over two seeds carries ``stats.WIDE_MARK`` (uninformative).

Tables: ``main`` (every method of the grid, with its paired difference to the baseline),
``main_by_dataset`` (dataset rows x method columns of IoU and Acc, the Gonçalves et al.
layout), one ``ablation_<name>`` per ablation (a pivot when it varies two keys), combined
pivots of ablations that share a method (``<a>_x_<b>``) or a varied key (e.g. region size x
downsampling factor), ``costs``, ``per_class`` IoU, ``reference`` (paper values beside ours)
and ``runs`` (one row per run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import studybench.report.evidence as evidence
import studybench.report.stats as stats
from studybench.names import markdown_table
from studybench.report.collect import in_group, label, main_axes, param_values
from studybench.report.reference import match_reference
from studybench.store.layout import (
    METRIC_EXTRA_MEM,
    METRIC_INFER,
    METRIC_IOU_PREFIX,
    METRIC_LOSS,
    METRIC_LOSS_IQR,
    METRIC_LOSS_SHARE,
    METRIC_PARAMS,
    METRIC_PEAK_MEM,
    METRIC_STEP,
    METRIC_STEP_IQR,
    METRIC_TRAIN,
    METRIC_WALL,
    PARAM_AXIS_PREFIX,
)
from studybench.ui import run_url

ACCURACY = {"miou": "mIoU", "pixel_acc": "aAcc", "mean_acc": "mAcc"}
#: Cost metric -> (display name, scale applied to the logged value).
COSTS = {
    METRIC_WALL: ("wall (s)", 1.0),
    METRIC_TRAIN: ("train (s)", 1.0),
    METRIC_STEP: ("step (ms)", 1000.0),
    METRIC_STEP_IQR: ("step IQR (ms)", 1000.0),
    METRIC_LOSS: ("loss (ms)", 1.0),
    METRIC_LOSS_IQR: ("loss IQR (ms)", 1.0),
    METRIC_LOSS_SHARE: ("loss share (%)", 100.0),
    METRIC_PEAK_MEM: ("peak mem (MB)", 1.0),
    METRIC_EXTRA_MEM: ("extra mem (MB)", 1.0),
    METRIC_PARAMS: ("params (M)", 1.0),
    METRIC_INFER: ("infer (ms/img)", 1.0),
}
#: What the costs table compares: per-step medians, their within-run spread and the memory a run adds.
#: Totals (wall, train and eval time) and the process's absolute memory follow the machine's load and
#: what else the process held; they stay in the runs table.
COST_TABLE = [
    METRIC_STEP,
    METRIC_STEP_IQR,
    METRIC_LOSS,
    METRIC_LOSS_IQR,
    METRIC_LOSS_SHARE,
    METRIC_EXTRA_MEM,
    METRIC_PARAMS,
]


@dataclass
class Table:
    stem: str
    title: str
    data: pd.DataFrame  # numbers, for CSV
    display: pd.DataFrame  # formatted text, for Markdown / LaTeX / HTML
    note: str = ""


# --------------------------------------------------------------------------- formatting
def pct(x: float, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}"


def mean_std(mean: float, std: float, scale: float = 100.0, digits: int = 2) -> str:
    if mean is None or math.isnan(mean):
        return "-"
    text = f"{scale * mean:.{digits}f}"
    return text if std is None or math.isnan(std) else f"{text} ± {scale * std:.{digits}f}"


def ci(lo: float, hi: float, n: int, scale: float = 100.0, digits: int = 2, sign: bool = False) -> str:
    """``[lo, hi]`` scaled; ``stats.NO_CI`` for one seed, ``stats.WIDE_MARK`` appended for two."""
    if n < stats.MIN_N:
        return stats.NO_CI
    if math.isnan(lo):
        return "-"
    f = "+.{d}f" if sign else ".{d}f"
    text = f"[{scale * lo:{f.format(d=digits)}}, {scale * hi:{f.format(d=digits)}}]"
    return text + stats.WIDE_MARK if n <= stats.WIDE_N else text


def _add_interval_column(disp: pd.DataFrame, summary: pd.DataFrame, metric: str, name: str) -> None:
    """``<name> 95% t interval`` column, only when some cell has the seeds for one (never titled with one seed)."""
    if summary["n"].max() >= stats.MIN_N:
        disp[f"{name} {stats.INTERVAL_NAME}"] = [
            ci(lo, hi, n) for lo, hi, n in zip(summary[f"{metric}_lo"], summary[f"{metric}_hi"], summary["n"])
        ]


def p_value(p: float) -> str:
    if p is None or math.isnan(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _axis_cols(frame: pd.DataFrame) -> list[str]:
    return ["dataset", "arch", *main_axes(frame)]


def _labelled(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    out = frame.copy()
    for col in cols:
        if col.startswith(PARAM_AXIS_PREFIX):
            out[col] = out[col].map(label)
    return out


def _display_name(col: str) -> str:
    return col.removeprefix(PARAM_AXIS_PREFIX).rsplit(".", 1)[-1] if col.startswith(PARAM_AXIS_PREFIX) else col


def method_order(study: Any, methods: list[str]) -> list[str]:
    """Baseline first, then the order of the study's method axis, then the rest sorted."""
    declared = []
    for entry in (study.grid or {}).get("method", []) or []:
        declared.append(entry if isinstance(entry, str) else entry.get("name"))
    ordered = [m for m in [study.baseline, *declared] if m in methods]
    return list(dict.fromkeys(ordered + sorted(m for m in methods if m not in ordered)))


def _sort_methods(frame: pd.DataFrame, order: list[str], by: list[str]) -> pd.DataFrame:
    rank = {m: i for i, m in enumerate(order)}
    frame = frame.assign(_rank=frame["method"].map(lambda m: rank.get(m, len(rank))))
    return frame.sort_values([*by, "_rank"], kind="stable").drop(columns="_rank").reset_index(drop=True)


# --------------------------------------------------------------------------- tables
def main_table(frame: pd.DataFrame, study: Any) -> Table:
    main = _labelled(frame[in_group(frame, "main")], _axis_cols(frame))
    cell = _axis_cols(frame)
    summary = stats.summarise(main, [*cell, "method"], list(ACCURACY))
    baseline = study.baseline
    if baseline:
        cmp = stats.compare_to_baseline(main, cell, baseline, "miou", min_effect(study))
        summary = summary.merge(cmp.drop(columns="n"), on=[*cell, "method"], how="left")
        summary = without_self_evidence(summary, baseline)
    summary = _sort_methods(summary, method_order(study, list(summary["method"].unique())), cell)
    refs = [match_reference(study.reference, row) for _, row in summary.iterrows()]
    summary["paper_miou"] = [r.get("miou", math.nan) if r else math.nan for r in refs]

    disp = pd.DataFrame({_display_name(c): summary[c] for c in cell})
    disp["method"] = summary["method"]
    disp["n"] = [n_text(n, k) for n, k in zip(summary["n"], summary["seeds"])]
    for metric, name in ACCURACY.items():
        disp[f"{name} (%)"] = [mean_std(m, s) for m, s in zip(summary[metric], summary[f"{metric}_std"])]
        if metric == "miou":
            _add_interval_column(disp, summary, "miou", "mIoU")
    if baseline:
        head = f"Δ mIoU vs {baseline} (pp)"
        disp[head] = [("baseline" if r["method"] == baseline else _diff(r)) for _, r in summary.iterrows()]
        disp["p"] = [("baseline" if r["method"] == baseline else p_value(r["p"])) for _, r in summary.iterrows()]
        if summary["n"].max() >= stats.MIN_N:
            _add_evidence_columns(disp, summary, baseline, 100 * min_effect(study))
    if summary["paper_miou"].notna().any():
        disp["paper mIoU (%)"] = summary["paper_miou"].map(pct)
    note = _note(summary["n"], baseline)
    if baseline and summary["n"].max() >= stats.MIN_N:
        note += " " + _evidence_note(min_effect(study))
    if (summary["n"] < summary["seeds"]).any():
        note += " n given as '2 of 3': a seed's run is missing or has no value; mean, interval and tests are over the values present."
    return Table("main", "Main comparison (val, mean ± std over seeds)", summary, disp, note)


def without_self_evidence(summary: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """The baseline's rows with no verdict, P(A>B) or seeds needed: compared with itself they said
    "equivalent", p_equivalent 0 and 2 seeds needed (main.csv), which no comparison found."""
    out = summary.copy()
    own = out["method"] == baseline
    out.loc[own, [c for c in stats.EVIDENCE_COLUMNS if c != "verdict"]] = math.nan
    out["verdict"] = out["verdict"].astype(object)
    out.loc[own, "verdict"] = "baseline"
    return out


def min_effect(study: Any) -> float:
    """The study's smallest effect of interest as a fraction (``min_effect`` is in mIoU points)."""
    return float(getattr(study, "min_effect", evidence.MIN_EFFECT_PP)) / 100.0


def n_text(n: int, seeds: int) -> str:
    """``3``, or ``2 of 3`` when a seed has no value."""
    return str(n) if n >= seeds else f"{n} of {seeds}"


def _add_evidence_columns(disp: pd.DataFrame, summary: pd.DataFrame, baseline: str, delta_pp: float) -> None:
    """P(A > baseline) with its interval, and the verdict (with the seeds needed where no difference was found)."""
    base = summary["method"] == baseline
    disp[f"P(> {baseline}) [95%]"] = [
        "baseline" if b else _superiority(r) for b, (_, r) in zip(base, summary.iterrows())
    ]
    disp[f"verdict (±{delta_pp:g} pp)"] = [
        "baseline" if b else verdict_text(r) for b, (_, r) in zip(base, summary.iterrows())
    ]


def _superiority(row: pd.Series) -> str:
    if pd.isna(row.get("p_superior_lo")):
        return "-"
    return f"{row['p_superior']:.2f} [{row['p_superior_lo']:.2f}, {row['p_superior_hi']:.2f}]"


def verdict_text(row: pd.Series) -> str:
    """The verdict, and beside a non-significant difference the seeds that 80 % power would take."""
    if pd.isna(row.get("verdict")):
        return "-"
    text = str(row["verdict"])
    if not pd.isna(row.get("p")) and row["p"] >= 0.05:
        text += f"; no significant difference: {evidence.seeds_text(row['seeds_needed'])} seeds needed"
    return text


def _evidence_note(delta: float) -> str:
    return (
        evidence.SUPERIORITY_RULE
        + ". "
        + "V"
        + evidence.VERDICT_RULE.format(delta=f"{100 * delta:g}")[1:]
        + f"; seeds needed: the fewest seeds whose paired t test would detect a {100 * delta:g} pp difference with "
        "80% power at alpha = 0.05, from the sd of the per-seed differences observed (rough with 3 seeds)."
    )


def seeds_table(frame: pd.DataFrame, study: Any) -> Table | None:
    """Per cell and method: the sd of the paired differences to the baseline and the seeds 80 % power would take."""
    main = _labelled(frame[in_group(frame, "main")], _axis_cols(frame))
    cell, delta = _axis_cols(frame), min_effect(study)
    if not study.baseline or main.groupby([*cell, "method"])["seed"].nunique().max() < stats.MIN_N:
        return None
    cmp = stats.compare_to_baseline(main, cell, study.baseline, "miou", delta)
    cmp = _sort_methods(cmp[cmp["method"] != study.baseline], method_order(study, list(cmp["method"].unique())), cell)
    disp = pd.DataFrame({_display_name(c): cmp[c] for c in [*cell, "method"]})
    disp["n"] = cmp["n"]
    disp["sd of Δ (pp)"] = cmp["diff_sd"].map(lambda v: pct(v, 2))
    disp[f"Δ mIoU vs {study.baseline} (pp)"] = cmp["diff"].map(lambda v: "-" if pd.isna(v) else f"{100 * v:+.2f}")
    disp["p"] = cmp["p"].map(p_value)
    disp["verdict"] = cmp["verdict"]
    disp[f"seeds for {100 * delta:g} pp at 80% power"] = cmp["seeds_needed"].map(evidence.seeds_text)
    note = (
        f"Seeds a paired t test (alpha = 0.05, two-sided) needs to detect a true difference of min_effect = "
        f"{100 * delta:g} pp with 80% power, given the observed sd of the per-seed differences to {study.baseline} "
        "(noncentral t). The sd comes from the seeds run, so with few seeds the number is an order of size."
    )
    return Table("seeds_needed", "Seeds needed to detect the smallest effect of interest", cmp, disp, note)


def _diff(row: pd.Series) -> str:
    if "diff" not in row or pd.isna(row.get("diff")):
        return "-"
    d = f"{100 * row['diff']:+.2f}"
    return d if row["n"] <= 1 else f"{d} {ci(row['diff_lo'], row['diff_hi'], row['n'], sign=True)}"


def _note(ns: pd.Series, baseline: str | None) -> str:
    """The table's note: how the interval and the test are computed, and what few seeds mean for them."""
    parts = ["Accuracy in %, mean ± sample std over seeds."]
    counts = set(ns.astype(int)) if len(ns) else {1}
    if max(counts) < stats.MIN_N:
        parts.append(
            "n = 1: one seed per cell, so no interval and no test; run more seeds to tell a difference from noise."
        )
    else:
        parts.append(f"{stats.INTERVAL_NAME}: mean ± t(0.975, n-1) × s / sqrt(n) over the n seeds of a cell.")
        if min(counts) < stats.MIN_N:
            parts.append("Cells with one seed have no interval.")
        if any(n <= stats.WIDE_N for n in counts if n >= stats.MIN_N):
            parts.append(stats.WIDE_NOTE)
    if baseline:
        how = (
            f" with its {stats.INTERVAL_NAME}; p: two-sided {stats.TEST_NAME} (the interval excludes 0 exactly when p < 0.05)"
            if max(counts) >= stats.MIN_N
            else ""
        )
        parts.append(f"Δ: mean of per-seed differences to {baseline} (paired by seed){how}.")
    return " ".join(parts)


def by_dataset_table(frame: pd.DataFrame, study: Any) -> Table:
    """Dataset rows x method columns of mIoU and pixel accuracy (Gonçalves et al. layout)."""
    main = _labelled(frame[in_group(frame, "main")], _axis_cols(frame))
    rows = [c for c in _axis_cols(frame) if main[c].nunique() > 1 or c == "dataset"]
    summary = stats.summarise(main, [*rows, "method"], ["miou", "pixel_acc"])
    order = method_order(study, list(summary["method"].unique()))
    disp = summary[rows].drop_duplicates().reset_index(drop=True)
    disp.columns = [_display_name(c) for c in rows]
    for method in order:
        for metric, name in (("miou", "IoU"), ("pixel_acc", "Acc")):
            sub = summary[summary["method"] == method].set_index(rows)
            col = []
            for _, key in summary[rows].drop_duplicates().iterrows():
                idx = tuple(key) if len(rows) > 1 else key.iloc[0]
                col.append(mean_std(sub.at[idx, metric], sub.at[idx, f"{metric}_std"]) if idx in sub.index else "-")
            disp[f"{method} {name} (%)"] = col
    return Table(
        "main_by_dataset",
        "Per dataset: IoU and pixel accuracy of each method (%)",
        summary,
        disp,
        "mean ± std over seeds.",
    )


def ablation_tables(frame: pd.DataFrame, study: Any) -> list[Table]:
    """One table per ablation and one pivot per pair of related ablations."""
    out = []
    for name, abl in study.ablations.items():
        rows = frame[in_group(frame, name)]
        if rows.empty:
            continue
        keys = list(abl.vary)
        if len(keys) == 1:
            out.append(_ablation_one(rows, study, name, keys[0], abl.vary[keys[0]], frame))
        else:
            out.append(
                _pivot(rows, f"ablation_{name}", f"Ablation {name} of {abl.of}", keys[0], keys[1], abl.vary, frame)
            )
    names = list(study.ablations)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            A, B = study.ablations[a], study.ablations[b]
            ka, kb = list(A.vary), list(B.vary)
            if len(ka) != 1 or len(kb) != 1:
                continue
            rows = frame[in_group(frame, a) | in_group(frame, b)]
            if rows.empty:
                continue
            if A.of == B.of and ka != kb:  # one factor at a time around one method: a sparse cross table
                vary = {ka[0]: A.vary[ka[0]], kb[0]: B.vary[kb[0]]}
                out.append(_pivot(rows, f"ablation_{a}_x_{b}", f"{a} x {b} (of {A.of})", ka[0], kb[0], vary, frame))
            elif A.of != B.of and ka == kb:  # same key around two methods: key x what tells the methods apart
                key = ka[0]
                labelled = rows.assign(**{"param._setting": _method_labels(rows, key)})
                vary = {key: list(dict.fromkeys([*A.vary[key], *B.vary[key]]))}
                out.append(
                    _pivot(labelled, f"ablation_{a}_x_{b}", f"{a} x {b}: {key} by method", key, "_setting", vary, frame)
                )
    return out


def _method_labels(rows: pd.DataFrame, key: str) -> pd.Series:
    """Label each row's method by the params that differ between the methods (e.g. ``factor=6``)."""
    skip = {f"param.{key}", "param.method", "param.seed", "param.study"}
    params = [c for c in rows.columns if c.startswith("param.") and c not in skip]
    per_method = rows.groupby("method")[params].agg(lambda s: tuple(sorted(set(map(str, s.dropna())))))
    differing = [c for c in params if per_method[c].nunique() > 1 and per_method[c].map(len).eq(1).all()]
    if not differing:
        return rows["method"]
    return rows["method"].map(
        lambda m: ", ".join(f"{c.rsplit('.', 1)[-1]}={per_method.at[m, c][0]}" for c in differing[:2])
    )


def _order_key(values: list[Any] | None):
    order = {label(v): i for i, v in enumerate(values or [])}
    return lambda lab: (order.get(lab, len(order)), lab)


def _ablation_one(rows: pd.DataFrame, study: Any, name: str, key: str, values: list[Any], frame: pd.DataFrame) -> Table:
    panel = [c for c in _axis_cols(frame) if c in rows]
    rows = _labelled(rows, panel).assign(**{key: param_values(rows, key).map(label)})
    summary = stats.summarise(rows, [*panel, key], list(ACCURACY))
    okey = _order_key(values)
    summary = summary.iloc[
        sorted(range(len(summary)), key=lambda i: (tuple(summary.iloc[i][panel]), okey(summary.iloc[i][key])))
    ].reset_index(drop=True)
    of = study.ablations[name].of
    refs = [
        match_reference(study.reference, {**r, "method": of}, ablation=name, keys={key: r[key]})
        for _, r in summary.iterrows()
    ]
    summary["paper_miou"] = [r.get("miou", math.nan) if r else math.nan for r in refs]
    disp = pd.DataFrame({_display_name(c): summary[c] for c in panel})
    disp[key] = summary[key]
    disp["n"] = summary["n"]
    disp["mIoU (%)"] = [mean_std(m, s) for m, s in zip(summary["miou"], summary["miou_std"])]
    _add_interval_column(disp, summary, "miou", "mIoU")
    disp["aAcc (%)"] = [mean_std(m, s) for m, s in zip(summary["pixel_acc"], summary["pixel_acc_std"])]
    if summary["paper_miou"].notna().any():
        disp["paper mIoU (%)"] = summary["paper_miou"].map(pct)
    note = f"Method {of}, varying {key}; other settings as in the main grid. " + _note(summary["n"], None)
    return Table(f"ablation_{name}", f"Ablation {name}: {key} (of {of})", summary, disp, note)


def _pivot(
    rows: pd.DataFrame, stem: str, title: str, rkey: str, ckey: str, vary: dict[str, Any], frame: pd.DataFrame
) -> Table:
    """mIoU (mean ± std) with ``rkey`` values as rows and ``ckey`` values as columns; blank where not run."""
    panel = [c for c in _axis_cols(frame) if c in rows and rows[c].nunique() > 1 or c == "dataset"]
    rows = _labelled(rows, panel).assign(
        **{rkey: param_values(rows, rkey).map(label), ckey: param_values(rows, ckey).map(label)}
    )
    summary = stats.summarise(rows, [*panel, rkey, ckey], ["miou"])
    rsort, csort = _order_key(vary.get(rkey)), _order_key(vary.get(ckey))
    cols = sorted(summary[ckey].unique(), key=csort)
    index = sorted(
        {(*(r[c] for c in panel), r[rkey]) for _, r in summary.iterrows()}, key=lambda t: (t[:-1], rsort(t[-1]))
    )
    cells = {(*(r[c] for c in panel), r[rkey], r[ckey]): r for _, r in summary.iterrows()}
    records = []
    for idx in index:
        rec = {(_display_name(c)): v for c, v in zip([*panel, rkey], idx)}
        for col in cols:
            r = cells.get((*idx, col))
            rec[col if ckey.startswith("_") else f"{_display_name(ckey)}={col}"] = (
                mean_std(r["miou"], r["miou_std"]) if r is not None else ""
            )
        records.append(rec)
    disp = pd.DataFrame(records)
    note = f"mIoU (%) mean ± std over seeds; rows: {rkey}, columns: {ckey}; blank: not part of the study (one factor varied at a time)."
    return Table(stem, title, summary, disp, note)


def costs_table(frame: pd.DataFrame, study: Any) -> Table:
    """Per-step costs per cell: mean ± std over seeds of each run's median, and the mean within-run IQR."""
    main = _labelled(frame[in_group(frame, "main")], _axis_cols(frame))
    cell = _axis_cols(frame)
    metrics = [m for m in COST_TABLE if m in main]
    summary = _sort_methods(
        stats.summarise(main, [*cell, "method"], metrics), method_order(study, list(main["method"].unique())), cell
    )
    disp = pd.DataFrame({_display_name(c): summary[c] for c in cell})
    disp["method"] = summary["method"]
    disp["n"] = summary["n"]
    for m in metrics:
        name, scale = COSTS[m]
        digits = 0 if m == METRIC_EXTRA_MEM else 2
        spread = summary[f"{m}_std"] if not m.endswith("_iqr") else [math.nan] * len(summary)  # IQR: its mean alone
        disp[name] = [mean_std(v, s, scale, digits) for v, s in zip(summary[m], spread)]
    note = (
        "Per optimiser step: step = median time of a training step, loss = median time of the loss's forward+backward "
        "alone (both over the run's timed steps), IQR = their interquartile range within a run (mean over seeds), "
        "loss share = loss / step; extra mem = peak memory above what the process held at run start (CUDA allocator "
        "on GPU, sampled RSS on CPU). Mean ± std over seeds; timings depend on the machine. Wall times are in the runs table."
    )
    return Table("costs", "Costs per training step", summary, disp, note)


def per_class_table(frame: pd.DataFrame, study: Any) -> Table | None:
    classes = [c for c in frame.columns if c.startswith(METRIC_IOU_PREFIX)]
    if not classes:
        return None
    main = _labelled(frame[in_group(frame, "main")], _axis_cols(frame))
    cell = _axis_cols(frame)
    means = main.groupby([*cell, "method"], sort=True)[classes].mean().reset_index()
    means = _sort_methods(means, method_order(study, list(means["method"].unique())), cell)
    disp = pd.DataFrame({_display_name(c): means[c] for c in [*cell, "method"]})
    for c in classes:
        disp[c.removeprefix(METRIC_IOU_PREFIX)] = means[c].map(lambda x: pct(x, 1))
    return Table(
        "per_class",
        "Per-class IoU (%), mean over seeds",
        means,
        disp,
        "'-': class absent from both ground truth and prediction.",
    )


def reference_table(frame: pd.DataFrame, study: Any) -> Table | None:
    from studybench.report.reference import reference_rows

    data = reference_rows(frame, study)
    if data is None:
        return None
    disp = pd.DataFrame(
        {
            "method": data["method"],
            "dataset": data["dataset"],
            "arch": data["arch"],
            "setting": data["setting"],
            "paper mIoU (%)": data["paper_miou"].map(pct),
            "ours mIoU (%)": [mean_std(m, s) for m, s in zip(data["miou"], data["miou_std"])],
            "n": data["n"],
            "Δ (pp)": [
                ("-" if math.isnan(o) or math.isnan(p) else f"{100 * (o - p):+.2f}")
                for o, p in zip(data["miou"], data["paper_miou"])
            ],
            "paper aAcc (%)": data["paper_pixel_acc"].map(pct),
            "ours aAcc (%)": data["pixel_acc"].map(pct),
            "note": data["note"],
        }
    )
    note = "Paper values as declared under `reference:` in the study file; '-' under ours: no finished run matches (e.g. a smoke profile runs on other data)."
    return Table("reference", "Paper values beside ours", data, disp, note)


#: Per-run table: display name -> column in the collected frame.
RUN_COLUMNS = {
    "run": "run",
    "groups": "groups",
    "mIoU": "miou",
    "aAcc": "pixel_acc",
    "mAcc": "mean_acc",
    "wall s": METRIC_WALL,
    "peak MB": METRIC_PEAK_MEM,
    "step ms": "step_ms",
    "loss ms": METRIC_LOSS,
    "extra MB": METRIC_EXTRA_MEM,
}


def runs_table(frame: pd.DataFrame, study: Any = None) -> Table:
    """One row per run; the only table with wall time (the whole run: data, training, evaluation)."""
    if METRIC_STEP in frame:
        frame = frame.assign(step_ms=1000 * frame[METRIC_STEP])
    data = pd.DataFrame({name: frame[col] if col in frame else pd.NA for name, col in RUN_COLUMNS.items()})
    ids = zip(frame.get("run_id", []), frame.get("experiment_id", []))
    data["MLflow"] = [run_url(run, exp) for run, exp in ids] if "experiment_id" in frame else ""  # report as dashboard
    data = data.sort_values("run", kind="stable").reset_index(drop=True)
    digits = {"mIoU": 4, "aAcc": 4, "mAcc": 4, "wall s": 1, "peak MB": 0, "step ms": 2, "loss ms": 3, "extra MB": 0}
    return Table("runs", "All finished runs", data.drop(columns="MLflow"), data.round(digits))


# --------------------------------------------------------------------------- writing
def write_table(table: Table, out_dir: Path) -> list[Path]:
    """``<stem>.md``, ``<stem>.csv`` and ``<stem>.tex``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv, tex = (out_dir / f"{table.stem}.{ext}" for ext in ("md", "csv", "tex"))
    note = f"\n{table.note}\n" if table.note else ""
    md.write_text(f"**{table.title}**\n\n{markdown_table(table.display)}\n{note}")
    table.data.to_csv(csv, index=False, float_format="%.6g")
    tex.write_text(to_latex(table))
    return [md, csv, tex]


_TEX = {"±": r"$\pm$", "Δ": r"$\Delta$", "×": r"$\times$", "ç": r"\c{c}", "†": r"\dag{}"}


def to_latex(table: Table) -> str:
    """A booktabs ``table`` float with the title and note as caption."""
    body = table.display.astype(str).to_latex(index=False, escape=True)
    caption = _escape(table.title) + (". " + _escape(table.note) if table.note else "")
    for char, cmd in _TEX.items():
        body = body.replace(char, cmd)
    return f"\\begin{{table}}[t]\n\\centering\n\\caption{{{caption}}}\n\\label{{tab:{table.stem}}}\n\\small\n{body}\\end{{table}}\n"


def _escape(text: str) -> str:
    for char, rep in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
        ("$", r"\$"),
        ("`", ""),
    ):
        text = text.replace(char, rep)
    for char, cmd in _TEX.items():
        text = text.replace(char, cmd)
    return text
