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

from studybench.report import stats  # noqa: E402

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
        if series:
            ax.legend(title=" / ".join(c.removeprefix("axis.") for c in series), fontsize=7)
    fig.suptitle(f"mIoU per method (mean over seeds; {stats.interval_caption(summary['n'])})", fontsize=9)
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


def cost_scatter(summary: pd.DataFrame, methods: list[str], series: list[str] | None = None) -> plt.Figure:
    """mIoU against wall time and peak memory per cell; the Pareto front (cheaper and better) is a step line.

    Methods differ by marker and colour; the values of ``series`` (e.g. arch) by marker fill.
    """
    costs = [
        (c, name)
        for c, name in (("wall_s", "wall time per run (s)"), ("peak_mem_mb", "peak memory (MB)"))
        if c in summary
    ]
    series = [c for c in (series or []) if c in summary]
    keys = [_series_label(r, series) for _, r in summary.iterrows()] if series else [""] * len(summary)
    fills = {k: f for k, f in zip(dict.fromkeys(keys), cycle(FILLS))}
    fig, axes = plt.subplots(1, len(costs), figsize=(4.0 * len(costs), 3.2), squeeze=False, layout="constrained")
    style = {m: (mk, c) for m, mk, c in zip(methods, cycle(MARKERS), _colors(len(methods)))}
    for ax, (col, name) in zip(axes[0], costs):
        labelled: set[str] = set()
        for method in methods:
            for key, fill in fills.items():
                sub = summary[(summary["method"] == method).to_numpy() & (np.array(keys) == key)]
                if sub.empty:
                    continue
                mk, c = style[method]
                ax.errorbar(
                    sub[col],
                    100 * sub["miou"],
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
            what = " / ".join(c.removeprefix("axis.") for c in series)
            for key, fill in fills.items():
                ax.plot([], [], "o", color="grey", mec="black", mfcalt="white", fillstyle=fill, label=f"{what}: {key}")
        front = stats.pareto_front(summary[col], summary["miou"])
        pts = summary[front].sort_values(col)
        ax.step(
            pts[col], 100 * pts["miou"], where="post", color="black", linestyle="--", linewidth=1, label="Pareto front"
        )
        ax.scatter(pts[col], 100 * pts["miou"], s=120, facecolors="none", edgecolors="black", linewidths=1)
        ax.set_xlabel(name)
        ax.set_ylabel("mIoU (%, val)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle("accuracy against cost (each point: one cell, mean over seeds)", fontsize=9)
    return fig


# --------------------------------------------------------------------------- per class
def per_class(means: pd.DataFrame, row_cols: list[str], baseline: str | None) -> plt.Figure:
    """Heatmap of per-class IoU (rows: method, columns: class), and the difference to the baseline beside it."""
    classes = [c for c in means.columns if c.startswith("iou/")]
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
        ax.set_xticks(range(len(classes)), [c.removeprefix("iou/") for c in classes], rotation=45, ha="right")
        ax.set_yticks(range(len(rows)), rows)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, fraction=0.05)
    return fig


# --------------------------------------------------------------------------- curves
def curves(hist: pd.DataFrame, runs: pd.DataFrame, series: list[str]) -> plt.Figure:
    """Per-epoch val mIoU and training loss parts, mean over seeds with a 95 % t interval band, a line per ``series``."""
    keys = ["val/miou", *sorted(k for k in hist["key"].unique() if k.startswith("train/"))]
    merged = hist.merge(runs[["run_id", *series]], on="run_id")
    merged["series"] = [_series_label(r, series) for _, r in merged.iterrows()]
    names = list(dict.fromkeys(_series_label(r, series) for _, r in runs.iterrows()))
    all_steps = sorted(int(x) + 1 for x in merged["step"].unique())
    ncols = min(3, len(keys))
    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.5 * nrows), squeeze=False, layout="constrained")
    for ax, key in zip(axes.flat, keys):
        for name, marker, line, color in zip(names, cycle(MARKERS), cycle(LINES), _colors(len(names))):
            sub = merged[(merged["key"] == key) & (merged["series"] == name)]
            if sub.empty:
                continue
            steps = sorted(sub["step"].unique())
            by = [sub[sub["step"] == s]["value"].to_numpy() for s in steps]
            scale = 100.0 if key == "val/miou" else 1.0
            mean = np.array([v.mean() for v in by]) * scale
            ci = np.array([stats.t_interval(v) for v in by]) * scale
            x = np.array(steps) + 1
            ax.plot(x, mean, marker=marker, linestyle=line, color=color, ms=3, label=name)
            if np.isfinite(ci).any():
                ax.fill_between(x, ci[:, 0], ci[:, 1], color=color, alpha=0.2, linewidth=0)
        ax.set_title(key)
        ax.set_xlabel("epoch")
        if len(all_steps) <= 12:
            ax.set_xticks(all_steps)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("mIoU (%)" if key == "val/miou" else "loss (per-step mean)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    return fig


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
