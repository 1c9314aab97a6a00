"""Report figures and the costs table, drawn from hand-made frames (no training, no store): fast."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.container import BarContainer, ErrorbarContainer

from studybench.data import synthetic
from studybench.data.synthetic import SyntheticSegmentation
from studybench.report import plots, stats
from studybench.report.tables import costs_table, runs_table
from studybench.study.config import Study
from studybench.study.keys import run_key
from studybench.study.spec import DataCfg, RunConfig

METHODS = ["ce", "rmi", "focal"]
STUDY = Study.model_validate({"study": "figs", "baseline": "ce", "grid": {"method": METHODS}})


def runs_frame(seeds: list[int]) -> pd.DataFrame:
    """Runs whose wall times say the opposite of their per-step costs (RMI's loss is 9x CE's, its wall time 1/20)."""
    rows = []
    for (i, method), arch, seed in itertools.product(enumerate(METHODS), ["unet", "fpn"], seeds):
        rows.append(
            {"run": f"{method}/{arch}/s{seed}", "run_id": f"{method}-{arch}-{seed}", "method": method, "arch": arch,
             "dataset": "synthetic", "seed": seed, "groups": "main", "miou": 0.80 + 0.05 * i + 0.01 * seed,
             "pixel_acc": 0.9, "mean_acc": 0.85, "wall_s": 115.9 if method == "ce" else 5.5, "train_s": 100.0,
             "peak_mem_mb": 1600.0 - i, "step_s": 0.020 + 0.004 * i + 0.001 * seed, "step_s_iqr": 0.002,
             "loss_ms": [0.59, 5.17, 0.8][i] + 0.01 * seed, "loss_ms_iqr": 0.05, "peak_extra_mb": 30.0 + 10 * i + seed,
             "params_m": 11.0}
        )  # fmt: skip
    return pd.DataFrame(rows)


def cost_summary(seeds: list[int]) -> pd.DataFrame:
    """What the report hands ``cost_scatter``: the costs table's numbers beside mIoU's t interval."""
    frame = runs_frame(seeds)
    miou = stats.summarise(frame, ["dataset", "arch", "method"], ["miou"])
    return miou.drop(columns="n").merge(costs_table(frame, STUDY).data, on=["dataset", "arch", "method"])


def figure_text(fig) -> str:
    fig.canvas.draw()
    return " ".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))


def error_bars(fig) -> int:
    """Whiskers and bands drawn anywhere in ``fig`` (error bar line segments, filled interval bands)."""
    found = 0
    for ax in fig.axes:
        for c in ax.containers:
            if isinstance(c, BarContainer) and c.errorbar is not None:
                found += 1
            if isinstance(c, ErrorbarContainer) and (c.has_xerr or c.has_yerr):
                found += 1
        found += sum(isinstance(c, (LineCollection, PolyCollection)) for c in ax.collections)
    return found


# --------------------------------------------------------------------------- costs
def test_costs_table_compares_per_step_medians_and_extra_memory_never_wall_time():
    table = costs_table(runs_frame([0, 1, 2]), STUDY)
    for col in ("step_s", "step_s_iqr", "loss_ms", "loss_ms_iqr", "peak_extra_mb", "step_s_std"):
        assert col in table.data, col
    for col in ("wall_s", "train_s", "peak_mem_mb"):
        assert not [c for c in table.data.columns if c.startswith(col)], col
    assert not [c for c in table.display.columns if "wall" in c or "peak mem" in c]
    rmi, ce = (table.data[(table.data["method"] == m) & (table.data["arch"] == "unet")].iloc[0] for m in ("rmi", "ce"))
    assert rmi["loss_ms"] == pytest.approx(5.18) and ce["loss_ms"] == pytest.approx(0.60)  # mean of the seeds' medians
    assert rmi["loss_ms_std"] == pytest.approx(0.01)  # spread across seeds
    shown = table.display.set_index(["arch", "method"]).loc[("unet", "rmi")]
    assert (
        shown["step (ms)"] == "25.00 ± 1.00"
        and shown["extra mem (MB)"] == "41 ± 1"
        and shown["loss IQR (ms)"] == "0.05"
    )
    assert "Wall times are in the runs table" in table.note


def test_runs_table_keeps_wall_time_and_its_columns():
    data = runs_table(runs_frame([0])).data
    assert list(data.columns[:7]) == ["run", "groups", "mIoU", "aAcc", "mAcc", "wall s", "peak MB"]
    assert {"step ms", "loss ms", "extra MB"} <= set(data.columns) and data["wall s"].max() == 115.9


def test_cost_figure_places_cells_by_per_step_cost_not_wall_time():
    summary = cost_summary([0, 1, 2])
    fig = plots.cost_scatter(summary, METHODS, ["arch"])
    labels = [ax.get_xlabel() for ax in fig.axes]
    assert len(labels) == 3 and "step" in labels[0] and "loss" in labels[1] and "extra memory" in labels[2]
    assert not [t for t in labels if "wall" in t or "peak memory" in t]
    loss_ax = fig.axes[1]
    xs = {c.get_label(): c.lines[0].get_xdata()[0] for c in loss_ax.containers if c.get_label() in METHODS}
    assert xs["rmi"] > 5 > 1 > xs["ce"]  # RMI's loss costs more, whatever the wall clock said
    assert error_bars(fig) > 0 and "costs ± std over seeds" in figure_text(fig)
    plots.plt.close(fig)


# --------------------------------------------------------------------------- intervals
@pytest.mark.parametrize("draw", ["bars", "cost_scatter"])
def test_one_seed_figures_name_no_interval_and_draw_no_error_bars(draw):
    one, three = cost_summary([0]), cost_summary([0, 1, 2])
    figs = [getattr(plots, draw)(s, METHODS, ["arch"]) for s in (one, three)]
    text = figure_text(figs[0])
    assert "CI" not in text and "95%" not in text and "95 %" not in text and "no interval" in text
    assert error_bars(figs[0]) == 0
    assert error_bars(figs[1]) > 0 and f"{stats.INTERVAL_NAME} over 3 seeds" in figure_text(figs[1])
    for fig in figs:
        plots.plt.close(fig)


def history(seeds: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-epoch curves of CE (loss ~2) and Dice (loss ~0.3) runs."""
    runs = pd.DataFrame(
        [{"run_id": f"{m}{s}", "method": m, "seed": s} for m, s in itertools.product(["ce", "dice"], seeds)]
    )
    rows = []
    for _, r in runs.iterrows():
        scale = 2.0 if r["method"] == "ce" else 0.3
        for epoch in range(3):
            rows.append((r["run_id"], "train/loss", epoch, scale / (1 + epoch) + 0.01 * r["seed"]))
            rows.append((r["run_id"], "val/miou", epoch, 0.3 + 0.1 * epoch))
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"]), runs


def test_training_curves_give_each_method_its_own_loss_axis():
    fig = plots.curves(*history([0, 1, 2]), ["method"])
    loss_axes = [ax for ax in fig.axes if ax.get_title().startswith("training loss")]
    assert [ax.get_title() for ax in loss_axes] == ["training loss: ce", "training loss: dice"]
    assert all("own axis" in ax.get_ylabel() for ax in loss_axes)
    tops = [max(line.get_ydata().max() for line in ax.get_lines()) for ax in loss_axes]
    assert tops[0] == pytest.approx(2.01) and tops[1] == pytest.approx(0.31)
    assert loss_axes[1].get_ylim()[1] < 1.0  # Dice is not squashed under CE's scale
    assert error_bars(fig) > 0 and f"{stats.INTERVAL_NAME} over 3 seeds" in figure_text(fig)
    plots.plt.close(fig)

    fig = plots.curves(*history([0]), ["method"])
    assert error_bars(fig) == 0 and "no interval" in figure_text(fig) and "95%" not in figure_text(fig)
    plots.plt.close(fig)


# --------------------------------------------------------------------------- layout and colours
def test_bars_legend_covers_no_bar_and_no_title():
    summary = cost_summary([0, 1, 2]).assign(miou=0.97)  # tall bars: where an inside legend would sit
    fig = plots.bars(summary, METHODS, ["arch"])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert len(legends) == 1
    box = legends[0].get_window_extent(renderer)
    bars = [p for ax in fig.axes for p in ax.patches]
    assert len(bars) == 6
    for bar in bars:
        assert not box.overlaps(bar.get_window_extent(renderer)), bar
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer))
        assert not box.overlaps(ax.title.get_window_extent(renderer))
    assert not box.overlaps(fig._suptitle.get_window_extent(renderer))
    plots.plt.close(fig)


def test_synthetic_palette_colours_are_far_apart():
    palette = np.array(SyntheticSegmentation(num_classes=len(synthetic._PALETTE)).palette, dtype=float)
    distances = [np.linalg.norm(a - b) for a, b in itertools.combinations(palette, 2)]
    assert min(distances) > 60, min(distances)
    assert np.linalg.norm(palette - 255, axis=1).min() > 60  # nor close to the ignore label's white
    names = SyntheticSegmentation().class_names
    blob, ring = (palette[names.index(n)] for n in ("blob", "ring"))
    assert np.linalg.norm(blob - ring) > 150  # alike in the images on purpose, never in the figures


def test_synthetic_palette_changes_neither_pixels_nor_run_keys(monkeypatch):
    before = SyntheticSegmentation(split="val", image_size=32, val_images=1)[0]
    key = run_key(RunConfig(data=DataCfg(dataset="synthetic")), 0)
    monkeypatch.setattr(synthetic, "_PALETTE", tuple((i, i, i) for i in range(12)))
    after = SyntheticSegmentation(split="val", image_size=32, val_images=1)
    assert after.palette[1] == (1, 1, 1)
    assert all(np.array_equal(a, b) for a, b in zip(before, after[0]))
    assert run_key(RunConfig(data=DataCfg(dataset="synthetic")), 0) == key
