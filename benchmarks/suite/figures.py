"""Scaling figures of a bench run: time and memory vs image side, classes, RMI region R, LAD kernel."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .runner import BenchResult  # noqa: E402

MIB = 2**20


def _two_panels(title: str):
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    fig.suptitle(title)
    ax_t.set_ylabel("forward + backward (ms)")
    ax_m.set_ylabel("peak extra memory (MiB)")
    return fig, ax_t, ax_m


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _vs(
    losses: pd.DataFrame, axis: str, fixed: dict[str, int], title: str, path: Path, steps: pd.DataFrame
) -> Path | None:
    rows = losses
    for key, value in fixed.items():
        rows = rows[rows[key] == value]
    if rows[axis].nunique() < 2:
        return None
    fig, ax_t, ax_m = _two_panels(title)
    colors = plt.get_cmap("tab20").colors
    for i, (case, group) in enumerate(rows.groupby("case", sort=False)):
        group = group.sort_values(axis)
        style = {"color": "k", "ls": "--"} if case == "ce" else {"color": colors[i % 20], "ls": "-"}
        marker = "osD^v<>ph*"[i % 10]
        ax_t.plot(group[axis], group["ms"], marker=marker, ms=4, label=case, **style)
        if group["peak_extra_mib"].notna().any():
            ax_m.plot(group[axis], group["peak_extra_mib"], marker=marker, ms=4, label=case, **style)
    for key, value in fixed.items():
        steps = steps[steps[key] == value]
    unet = steps[steps["case"] == "unet-r18"].sort_values(axis)
    if len(unet):
        ax_t.plot(unet[axis], 1000 * unet["median_s"], "k:", lw=2, label="U-Net-r18 step")
        ax_t.plot(unet[axis], 50 * unet["median_s"], color="grey", ls=":", lw=1, label="5 % of that step")
    for ax in (ax_t, ax_m):
        ax.set_xlabel({"side": "image side (pixels)", "classes": "classes C"}[axis])
        ax.set_yscale("log")
        if axis == "side":
            ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(rows[axis].unique()), [str(v) for v in sorted(rows[axis].unique())])
        ax.grid(alpha=0.3)
    ax_t.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def _sweep(result: BenchResult, sweep: str, xlabel: str, path: Path) -> Path | None:
    rows = [r for r in result.sweeps if r["sweep"] == sweep]
    if len(rows) < 2:
        return None
    fig, ax_t, ax_m = _two_panels(f"{sweep} at {rows[0]['size']} (BxCxS)")
    x = [r["value"] for r in rows]
    ax_t.plot(x, [1000 * r["median_s"] for r in rows], marker="o", label=sweep.split("-")[0].upper())
    ax_t.axhline(1000 * rows[0]["ce_median_s"], color="k", ls="--", label="CE")
    mem = [result.memory.get((r["case"], r["size"]), math.nan) / MIB for r in rows]
    ax_m.plot(x, mem, marker="o", label=sweep.split("-")[0].upper())
    ce_mem = result.memory.get(("ce", rows[0]["size"]), math.nan)
    if not math.isnan(ce_mem):
        ax_m.axhline(ce_mem / MIB, color="k", ls="--", label="CE")
    for ax in (ax_t, ax_m):
        ax.set_xlabel(xlabel)
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def _shares(losses: pd.DataFrame, main: str, path: Path) -> Path | None:
    rows = losses[losses["size"] == main].sort_values("share_unet_r18")
    if rows.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(rows) + 1.2), layout="constrained")
    colors = ["tab:red" if s >= 0.05 else "tab:blue" for s in rows["share_unet_r18"]]
    ax.barh(rows["case"], 100 * rows["share_unet_r18"], color=colors)
    ax.axvline(5, color="k", ls="--", lw=1)
    ax.set_xlabel("loss forward + backward, % of a U-Net-resnet18 training step")
    ax.set_title(f"Loss cost at {main} (BxCxS); dashed: the 5 % goal")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def draw_figures(result: BenchResult, losses: pd.DataFrame, out: Path) -> list[Path]:
    main = result.machine["main_size"]
    batch, classes, side = (int(v) for v in main.split("x"))
    steps = pd.DataFrame(result.times)
    made = [
        _shares(losses, main, out / "share_unet.png"),
        _vs(
            losses,
            "side",
            {"batch": batch, "classes": classes},
            f"vs image side (B={batch}, C={classes})",
            out / "scaling_side.png",
            steps,
        ),
        _vs(
            losses,
            "classes",
            {"batch": batch, "side": side},
            f"vs classes (B={batch}, {side}²)",
            out / "scaling_classes.png",
            steps,
        ),
        _sweep(result, "rmi-radius", "RMI region size R (avg pool 4/4)", out / "scaling_rmi_radius.png"),
        _sweep(result, "lad-kernel", "LAD kernel (k = 3)", out / "scaling_lad_kernel.png"),
    ]
    return [p for p in made if p is not None]
