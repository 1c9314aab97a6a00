"""Figures of a report (seaborn); each figure is written as PNG and PDF."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are built headless
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402


def save(fig: plt.Figure, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=120, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None, "Producer": None, "Creator": None})
    plt.close(fig)
    return paths


def miou_by_method(frame: pd.DataFrame) -> plt.Figure:
    """Bars of mIoU per method, one hue per architecture (mean and 95% CI over seeds)."""
    with sns.axes_style("whitegrid"):
        fig, ax = plt.subplots(figsize=(max(5, 1.1 * frame["method"].nunique() + 2), 3.6))
        sns.barplot(data=frame, x="method", y="miou", hue="arch", errorbar=("ci", 95), palette="gray", edgecolor="black", ax=ax)
        ax.set_ylabel("mIoU (val)")
        ax.set_xlabel("method")
        ax.tick_params(axis="x", rotation=30)
        ax.legend(title="architecture", fontsize=8)
    return fig


def miou_vs_wall(frame: pd.DataFrame) -> plt.Figure:
    """mIoU against training wall time (s): what each method's accuracy costs."""
    with sns.axes_style("whitegrid"):
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        sns.scatterplot(data=frame, x="wall_s", y="miou", hue="method", style="arch", s=70, palette="colorblind", ax=ax)
        ax.set_xlabel("wall time per run (s)")
        ax.set_ylabel("mIoU (val)")
        ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    return fig
