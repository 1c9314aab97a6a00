"""Figures of a report, each written as PNG (small, dpi 100) and PDF, without timestamps.

Every figure is readable in grayscale: methods differ by marker, line style or hatch as well
as by colour, heatmaps carry their numbers. Intervals are the 95 % t intervals of ``stats``
(the same numbers as the tables; ``stats.interval_caption`` names them); cells with one seed
have none, so nothing is drawn for them. The drawing functions take the summary frames the
tables are built from, so a figure never computes statistics of its own (the per-epoch curves
call ``stats.t_interval`` on the seeds of each epoch).
"""

from __future__ import annotations

from itertools import cycle
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are built headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

import studybench.report.stats as stats  # noqa: E402
from studybench.store.layout import (  # noqa: E402
    CURVE_TRAIN_PREFIX,
    CURVE_VAL_MIOU,
    METRIC_EXTRA_MEM,
    METRIC_IOU_PREFIX,
    METRIC_LOSS,
    METRIC_STEP,
    PARAM_AXIS_PREFIX,
)

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
LINES = ["-", "--", ":", "-."]
HATCHES = ["", "//", "..", "xx", "\\\\", "oo", "--", "++"]
DPI = 100
plt.rcParams.update({"font.size": 8, "axes.titlesize": 9, "svg.hashsalt": "studybench"})


def save(fig: plt.Figure, out_dir: Path, stem: str) -> list[Path]:
    """``<stem>.png`` and ``<stem>.pdf`` with no creation date or software version in the metadata."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None, "Producer": None, "Creator": None})
    plt.close(fig)
    return paths


def _colors(n: int) -> list:
    return list(plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(n, 1))))


def _series_label(row: pd.Series, cols: list[str]) -> str:
    return " / ".join(str(row[c]) for c in cols)


def _yerr(summary: pd.DataFrame, metric: str, scale: float = 100.0) -> np.ndarray | None:
    lo, hi, mean = summary[f"{metric}_lo"], summary[f"{metric}_hi"], summary[metric]
    if lo.isna().all():
        return None
    return scale * np.vstack([(mean - lo).fillna(0).clip(lower=0), (hi - mean).fillna(0).clip(lower=0)])


# --------------------------------------------------------------------------- main comparison
def bars(summary: pd.DataFrame, methods: list[str], series: list[str]) -> plt.Figure:
    """mIoU bars per method (one hatch per ``series`` value, e.g. arch), one panel per dataset, t interval whiskers."""
    datasets = list(dict.fromkeys(summary["dataset"]))
    keys = list(dict.fromkeys(_series_label(r, series) for _, r in summary.iterrows())) if series else [""]
    fig, axes = plt.subplots(
        1,
        len(datasets),
        figsize=(max(3.2, 0.55 * len(methods) * len(keys) + 1.5) * len(datasets), 3.2),
        squeeze=False,
        layout="constrained",
    )
    width = 0.8 / len(keys)
    for ax, ds in zip(axes[0], datasets):
        sub = summary[summary["dataset"] == ds]
        for j, (key, color, hatch) in enumerate(zip(keys, _colors(len(keys)), cycle(HATCHES))):
            part = sub[[(_series_label(r, series) if series else "") == key for _, r in sub.iterrows()]]
            part = part.set_index("method").reindex([m for m in methods if m in set(part["method"])]).reset_index()
            x = np.array([methods.index(m) for m in part["method"]]) + (j - (len(keys) - 1) / 2) * width
            ax.bar(
                x,
                100 * part["miou"],
                width,
                yerr=_yerr(part, "miou"),
                capsize=2,
                color=color,
                hatch=hatch,
                edgecolor="black",
                linewidth=0.6,
                label=key or None,
            )
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
        ax.set_title(f"dataset: {ds}")
        ax.set_ylabel("mIoU (%, val)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"mIoU per method, mean over seeds\n{stats.interval_caption(summary['n'])}", fontsize=9)
    if series:  # below the panels, in a row: inside an axes it covers the tallest bars, beside one the title
        what = " / ".join(c.removeprefix(PARAM_AXIS_PREFIX) for c in series)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), title=what, fontsize=7)
    return fig


def ablation(summary: pd.DataFrame, key: str, order: list[str], series: list[str], title: str) -> plt.Figure:
    """mIoU against an ablation's varied value, a line per ``series`` (dataset, arch) with a t interval band."""
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    numeric = all(_is_number(v) for v in order)
    groups = summary.groupby(series, sort=False) if series else [("", summary)]
    for (name, sub), marker, line, color in zip(
        groups, cycle(MARKERS), cycle(LINES), _colors(summary[series].drop_duplicates().shape[0] if series else 1)
    ):
        sub = sub.set_index(key).reindex([v for v in order if v in set(sub[key])]).reset_index()
        x = sub[key].astype(float).to_numpy() if numeric else np.array([order.index(v) for v in sub[key]])
        y = 100 * sub["miou"].to_numpy()
        lab = " / ".join(map(str, name)) if isinstance(name, tuple) else str(name)
        ax.plot(x, y, marker=marker, linestyle=line, color=color, label=lab or None)
        if sub["miou_lo"].notna().any():
            ax.fill_between(
                x,
                100 * sub["miou_lo"],
                100 * sub["miou_hi"],
                color=color,
                alpha=0.2,
                hatch="//" if line != "-" else None,
                linewidth=0,
            )
    if numeric:
        ax.set_xticks([float(v) for v in order], order)
    else:
        ax.set_xticks(range(len(order)), order)
    ax.set_xlabel(key)
    ax.set_ylabel("mIoU (%, val)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7)
    return fig


def _is_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


#: Marker fill per value of the other series (e.g. arch): filled, left half filled (the colour stays visible), hollow, ...
FILLS = ["full", "left", "none", "bottom", "right", "top"]


#: Cost axes of ``cost_scatter``: (column, axis label, scale to the unit shown).
COST_AXES = [
    (METRIC_STEP, "training step (ms, median per run)", 1000.0),
    (METRIC_LOSS, "loss forward+backward (ms, median per run)", 1.0),
    (METRIC_EXTRA_MEM, "extra memory (MB, peak above run start)", 1.0),
]


def cost_scatter(summary: pd.DataFrame, methods: list[str], series: list[str] | None = None) -> plt.Figure:
    """mIoU against the per-step costs of each cell; the Pareto front (cheaper and better) is a step line.

    Costs are per-step medians and extra memory, never wall time (which follows the machine's
    load). The front is drawn only on the loss's own costs (its forward+backward time and
    extra memory, what differs between losses), and only where their gaps exceed the
    run-to-run spread, shaded grey from the cheapest cell; the step time is context. With
    two or more seeds the whiskers are the mIoU's t interval and the costs' std over seeds;
    with one seed there are none. Methods differ by marker and colour, the values of
    ``series`` (e.g. arch) by marker fill.
    """
    costs = [axis for axis in COST_AXES if axis[0] in summary and summary[axis[0]].notna().any()]
    if not costs:
        raise ValueError(f"no per-step costs ({', '.join(c for c, _, _ in COST_AXES)}) in the runs")
    series = [c for c in (series or []) if c in summary]
    keys = np.array([_series_label(r, series) for _, r in summary.iterrows()] if series else [""] * len(summary))
    fills = {k: f for k, f in zip(dict.fromkeys(keys), cycle(FILLS))}
    fig, axes = plt.subplots(1, len(costs), figsize=(3.6 * len(costs), 3.2), squeeze=False, layout="constrained")
    style = {m: (mk, c) for m, mk, c in zip(methods, cycle(MARKERS), _colors(len(methods)))}
    for ax, (col, name, scale) in zip(axes[0], costs):
        labelled: set[str] = set()
        for method in methods:
            for key, fill in fills.items():
                sub = summary[(summary["method"] == method).to_numpy() & (keys == key)]
                if sub.empty:
                    continue
                mk, c = style[method]
                ax.errorbar(
                    scale * sub[col],
                    100 * sub["miou"],
                    xerr=_xerr(sub, col, scale),
                    yerr=_yerr(sub, "miou"),
                    fmt=mk,
                    color=c,
                    mec="black",
                    mfcalt="white",
                    fillstyle=fill,
                    ms=6,
                    capsize=2,
                    label=None if method in labelled else method,
                )
                labelled.add(method)
        if len(fills) > 1:
            what = " / ".join(c.removeprefix(PARAM_AXIS_PREFIX) for c in series)
            for key, fill in fills.items():
                ax.plot([], [], "o", color="grey", mec="black", mfcalt="white", fillstyle=fill, label=f"{what}: {key}")
        _front_or_noise(ax, summary, col, scale)
        ax.set_xlabel(name)
        ax.set_ylabel("mIoU (%, val)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle(
        f"accuracy against cost per step (each point: one cell, mean over seeds)\n{cost_whiskers(summary['n'])}"
    )
    return fig


def cost_whiskers(ns: pd.Series) -> str:
    """What ``cost_scatter``'s whiskers are, for its title and caption (none with one seed)."""
    counts = [int(n) for n in ns if not pd.isna(n)]
    if not counts or max(counts) < stats.MIN_N:
        return stats.interval_caption(counts)
    return f"whiskers: mIoU {stats.interval_caption(counts)}, costs ± std over seeds"


def _xerr(summary: pd.DataFrame, col: str, scale: float) -> np.ndarray | None:
    """± the std over seeds of a cost (None where every cell has one seed: nothing is drawn)."""
    std = summary.get(f"{col}_std")
    if std is None or std.isna().all():
        return None
    return scale * std.fillna(0).to_numpy()


#: Costs that differ between losses (the step time is mostly the model's: context, never a front).
LOSS_COSTS = (METRIC_LOSS, METRIC_EXTRA_MEM)


def cost_spread(summary: pd.DataFrame, col: str) -> float:
    """The run-to-run spread of a cost: the larger of the median std over seeds and the median within-run IQR.

    Why: on a shared machine the same run's step time varies by tens of percent; a cost gap
    smaller than this is noise, and a Pareto front drawn through it ranks methods by chance.
    """
    parts = [summary.get(f"{col}_std"), summary.get(f"{col}_iqr")]
    found = [float(np.nanmedian(p.to_numpy(dtype=float))) for p in parts if p is not None and p.notna().any()]
    return max(found) if found else 0.0


def _front_or_noise(ax: plt.Axes, summary: pd.DataFrame, col: str, scale: float) -> None:
    """A Pareto front where cost gaps exceed the run-to-run spread; otherwise a band saying they do not."""
    spread = cost_spread(summary, col)
    lo = float(summary[col].min())
    if spread > 0:
        ax.axvspan(scale * lo, scale * (lo + spread), color="grey", alpha=0.15, lw=0, label="within run-to-run spread")
    if col not in LOSS_COSTS:
        ax.set_title("context: includes the model's own cost", fontsize=8)
        return
    if float(summary[col].max()) - lo <= spread:
        ax.set_title("no front: cost gaps within the run-to-run spread", fontsize=8)
        return
    _pareto(ax, summary, col, scale)


def _pareto(ax: plt.Axes, summary: pd.DataFrame, col: str, scale: float) -> None:
    """The cells no other cell beats on both cost and mIoU, joined by a dashed step line and circled."""
    front = stats.pareto_front(summary[col], summary["miou"])
    pts = summary[front].sort_values(col)
    x, y = scale * pts[col], 100 * pts["miou"]
    ax.step(x, y, where="post", color="black", linestyle="--", linewidth=1, label="Pareto front")
    ax.scatter(x, y, s=120, facecolors="none", edgecolors="black", linewidths=1)


# --------------------------------------------------------------------------- per class
def per_class(means: pd.DataFrame, row_cols: list[str], baseline: str | None) -> plt.Figure:
    """Heatmap of per-class IoU (rows: method, columns: class), and the difference to the baseline beside it."""
    classes = [c for c in means.columns if c.startswith(METRIC_IOU_PREFIX)]
    rows = [_series_label(r, row_cols) for _, r in means.iterrows()]
    values = 100 * means[classes].to_numpy(dtype=float)
    panels = [("IoU (%)", values, "Greys", (0, 100))]
    if baseline and (means["method"] == baseline).any():
        other = [c for c in row_cols if c != "method"]
        base = {
            tuple(r[other]): r[classes].to_numpy(dtype=float) for _, r in means[means["method"] == baseline].iterrows()
        }
        nan = np.full(len(classes), np.nan)
        diff = [100 * (r[classes].to_numpy(dtype=float) - base.get(tuple(r[other]), nan)) for _, r in means.iterrows()]
        d = np.array(diff)
        lim = max(1.0, float(np.nanmax(np.abs(d)))) if np.isfinite(d).any() else 1.0
        panels.append((f"IoU − {baseline} (pp)", d, "PuOr", (-lim, lim)))
    stacked = len(classes) > 10  # many classes: the two panels one above the other, not a very wide strip
    width, height = 0.55 * len(classes) + 2.2, 0.32 * len(rows) + 1.4
    fig, axes = plt.subplots(
        len(panels) if stacked else 1,
        1 if stacked else len(panels),
        figsize=(width, len(panels) * height) if stacked else (len(panels) * width, height),
        squeeze=False,
        layout="constrained",
    )
    for ax, (title, data, cmap, (lo, hi)) in zip(axes.flat, panels):
        im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
        for (i, j), v in np.ndenumerate(data):
            if np.isfinite(v):
                dark = (v - lo) / (hi - lo) > 0.6 if cmap == "Greys" else abs(v) / hi > 0.6
                ax.text(
                    j,
                    i,
                    f"{v:.0f}" if cmap == "Greys" else f"{v:+.0f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if dark else "black",
                )
        ax.set_xticks(
            range(len(classes)), [c.removeprefix(METRIC_IOU_PREFIX) for c in classes], rotation=45, ha="right"
        )
        ax.set_yticks(range(len(rows)), rows)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.05)
    return fig


# --------------------------------------------------------------------------- curves
def curves(hist: pd.DataFrame, runs: pd.DataFrame, series: list[str]) -> plt.Figure:
    """Per-epoch val mIoU (one panel, a line per ``series``) and each method's training loss on its own panel.

    Losses of different methods live on different scales (CE starts near ln C, Dice below 1, RMI
    may be negative), so no two methods share a loss axis; a method's loss parts (``train/<part>``)
    share its panel, thinner and named at their ends, since they add up to its total. Lines are the
    mean over seeds with a t interval band where there are two seeds or more.
    """
    merged = hist.merge(runs[["run_id", *series]], on="run_id")
    merged["series"] = [_series_label(r, series) for _, r in merged.iterrows()]
    names = list(dict.fromkeys(_series_label(r, series) for _, r in runs.iterrows()))
    styles = {
        n: dict(marker=m, linestyle=ls, color=c)
        for n, m, ls, c in zip(names, cycle(MARKERS), cycle(LINES), _colors(len(names)))
    }
    methods = list(dict.fromkeys(runs["method"])) if "method" in runs else [None]
    ncols = min(3, 1 + len(methods))
    nrows = -(-(1 + len(methods)) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.3 * ncols, 2.5 * nrows + 0.3), squeeze=False, layout="constrained"
    )
    val = merged[merged["key"] == CURVE_VAL_MIOU]
    for name in names:
        _curve(axes.flat[0], val[val["series"] == name], 100.0, styles[name])
    _epoch_axis(axes.flat[0], merged, CURVE_VAL_MIOU, "mIoU (%)")
    lo, hi = axes.flat[0].get_ylim()
    axes.flat[0].set_ylim(max(lo, -2.0), min(hi, 102.0))  # bands (2 seeds) reaching past what mIoU can be: cut
    train = merged[merged["key"].str.startswith(CURVE_TRAIN_PREFIX)]
    for ax, method in zip(axes.flat[1:], methods):
        mine = train if method is None else train[train["run_id"].isin(runs.loc[runs["method"] == method, "run_id"])]
        _loss_panel(ax, mine, styles)
        _epoch_axis(ax, merged, f"training loss: {method}" if method else "training loss", "loss (raw, own axis)")
    for ax in list(axes.flat)[1 + len(methods) :]:
        ax.axis("off")
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside right upper", fontsize=8)  # readable
    seeds = runs.groupby(series).size() if series else [len(runs)]
    fig.suptitle(f"per epoch, mean over seeds; {stats.interval_caption(seeds)}")
    return fig


def _loss_panel(ax: plt.Axes, train: pd.DataFrame, styles: dict[str, dict]) -> None:
    """The ``train/loss`` of each series in ``train`` and, thin, its parts, each part named once."""
    ends: dict[str, tuple[float, float]] = {}  # part -> end of its first line, where its name goes
    for name in dict.fromkeys(train["series"]):
        for key in sorted(train["key"].unique(), key=lambda k: (k != "train/loss", k)):
            sub = train[(train["series"] == name) & (train["key"] == key)]
            end = _curve(ax, sub, 1.0, styles[name], thin=key != "train/loss")
            if key != "train/loss" and end is not None:
                ends.setdefault(key.removeprefix(CURVE_TRAIN_PREFIX), end)
    if ends:
        _name_ends(ax, ends)


def _name_ends(ax: plt.Axes, ends: dict[str, tuple[float, float]]) -> None:
    """Write each name right of its line's end, moved up where it would sit on the one below it."""
    lo, hi = ax.get_ylim()
    gap, last = 0.07 * (hi - lo), -np.inf
    for name, (x, y) in sorted(ends.items(), key=lambda kv: kv[1][1]):
        last = max(y, last + gap)
        ax.annotate(name, (x, last), xytext=(4, 0), textcoords="offset points", fontsize=6, va="center")
    left, right = ax.get_xlim()
    ax.set_xlim(left, right + 0.15 * (right - left))  # room for the names


def _epoch_axis(ax: plt.Axes, merged: pd.DataFrame, title: str, ylabel: str) -> None:
    steps = sorted(int(x) + 1 for x in merged["step"].unique())
    if len(steps) <= 12:
        ax.set_xticks(steps)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _curve(ax: plt.Axes, sub: pd.DataFrame, scale: float, style: dict, thin: bool = False) -> tuple | None:
    """One series: the mean over its runs per epoch and, with ≥ 2 runs, the t interval band.

    ``thin`` (a loss part): a thin line, no band, no legend entry. Returns the line's last point.
    """
    if sub.empty:
        return None
    steps = sorted(sub["step"].unique())
    by = [sub[sub["step"] == s]["value"].to_numpy() for s in steps]
    mean = np.array([v.mean() for v in by]) * scale
    x = np.array(steps) + 1
    if thin:
        ax.plot(x, mean, linewidth=0.8, alpha=0.8, ms=2, **style)
        return float(x[-1]), float(mean[-1])
    ax.plot(x, mean, ms=3, label=sub["series"].iloc[0], **style)
    ci = np.array([stats.t_interval(v) for v in by]) * scale
    if np.isfinite(ci).any():
        ax.fill_between(x, ci[:, 0], ci[:, 1], color=style["color"], alpha=0.2, linewidth=0)
    return float(x[-1]), float(mean[-1])


# --------------------------------------------------------------------------- qualitative
def colorize(mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Label map [H,W] -> RGB via ``palette`` (grey ramp if none); the ignore label (255) is white."""
    n = int(mask[mask != 255].max(initial=0)) + 1
    pal = (
        palette
        if palette.size and len(palette) >= n
        else (np.linspace(0, 255, max(n, 2))[:, None].repeat(3, 1)).astype(np.uint8)
    )
    out = np.full((*mask.shape, 3), 255, np.uint8)
    valid = mask != 255
    out[valid] = pal[mask[valid]]
    return out


def samples(columns: list[tuple[str, dict[str, np.ndarray]]], max_rows: int = 3) -> plt.Figure:
    """Grid: rows = validation images; columns = image, ground truth, then each (label, samples.npz) prediction."""
    first = columns[0][1]
    n = min(max_rows, len(first["image"]))
    titles = ["image", "ground truth", *(name for name, _ in columns)]
    fig, axes = plt.subplots(n, len(titles), figsize=(1.25 * len(titles), 1.3 * n + 0.3), squeeze=False)
    for i in range(n):
        img = first["image"][i].transpose(1, 2, 0)
        lo, hi = float(img.min()), float(img.max())
        panels = [(img - lo) / (hi - lo + 1e-12), colorize(first["target"][i], first["palette"])]
        panels += [colorize(s["pred"][i], s["palette"]) for _, s in columns]
        for j, panel in enumerate(panels):
            axes[i, j].imshow(panel, interpolation="nearest")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(titles[j].replace(" / ", "\n"), fontsize=7)  # long labels: one part a line
    handles = _class_legend(first, [first["target"][:n], *(s["pred"][:n] for _, s in columns)])
    if handles:
        fig.legend(
            handles=handles,
            loc="lower center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=min(len(handles), max(3, len(titles))),
            fontsize=6,
            frameon=False,
            title="classes shown",
            title_fontsize=6,
        )
        rows_of_legend = -(-len(handles) // min(len(handles), max(3, len(titles))))
        fig.subplots_adjust(bottom=min(0.5, (0.25 + 0.14 * rows_of_legend) / fig.get_figheight()))
    return fig


def _class_legend(sample: dict[str, np.ndarray], masks: list[np.ndarray]) -> list:
    """Colour patches of the classes that appear in ``masks`` (names from ``samples.npz``), ignore label last."""
    from matplotlib.patches import Patch

    present = np.unique(np.concatenate([m.ravel() for m in masks]))
    names = [str(c) for c in sample.get("class_names", np.array([]))]
    n = int(present[present != 255].max(initial=0)) + 1
    palette = sample.get("palette", np.zeros((0, 3), np.uint8))
    if not palette.size or len(palette) < n:
        palette = (np.linspace(0, 255, max(n, 2))[:, None].repeat(3, 1)).astype(np.uint8)
    handles = [
        Patch(
            facecolor=palette[c] / 255.0, edgecolor="black", linewidth=0.4, label=names[c] if c < len(names) else str(c)
        )
        for c in present.tolist()
        if c != 255
    ]
    if 255 in present:
        handles.append(Patch(facecolor="white", edgecolor="black", linewidth=0.4, label="ignore (255)"))
    return handles


_DASHES = ("-", "--", ":", "-.")


def performance_profile(profile: pd.DataFrame, metric: str = "mIoU", scale: float = 100.0) -> plt.Figure:
    """Agarwal et al. (2021)'s performance profile: per method, the fraction of its runs scoring above τ.

    ``profile`` is ``aggregate.profile`` (τ index x method columns). A curve lying above another
    everywhere dominates it over every threshold, not only on average; line styles tell the
    methods apart in grayscale.
    """
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    for (method, col), color, dash in zip(profile.items(), _colors(profile.shape[1]), cycle(_DASHES)):
        ax.step(scale * profile.index.to_numpy(), col.to_numpy(), where="post", color=color, ls=dash, label=method)
    ax.set_xlabel(f"{metric} threshold τ" + (" (%)" if scale == 100.0 else ""))
    ax.set_ylabel("fraction of runs > τ")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return fig
