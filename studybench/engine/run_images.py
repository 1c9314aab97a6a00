"""PNG images of one run's evaluation, for MLflow's UI (which shows PNGs, not ``.npz`` or CSV).

``samples_png``: rows = the kept validation images; columns = image, ground truth and
prediction, coloured with the dataset's palette, with a legend of the classes shown.
``confusion_png``: the row-normalised confusion matrix (each true class's pixels by predicted
class) as a heatmap with class names, and its percentages in the cells up to
``MAX_ANNOTATED`` classes.

Drawn with matplotlib's object-oriented API on the Agg canvas, never ``pyplot``: no global
backend switch and no figure registry in the training process (a worker may run many runs).
Big samples are subsampled to about the panel's pixels first, so a Cityscapes-sized one
costs little more than a small one. ``log_run_images`` never fails a run: the numbers come first.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from studybench import IGNORE_INDEX

#: Above this many classes the confusion heatmap carries no per-cell numbers (they would not fit).
MAX_ANNOTATED = 20
#: Width of one sample panel and the gap between panels (pixels), classes per legend row, resolution.
PANEL_PX = 180
GAP = 4
LEGEND_COLUMNS = 5
DPI = 100


def log_run_images(
    recorder: Any,
    samples: dict[str, list[np.ndarray]],
    matrix: np.ndarray,
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]] | None,
    names: tuple[str, str],
) -> None:
    """Log ``samples_png`` and ``confusion_png`` under ``names``; a drawing error is printed, not raised."""
    try:
        recorder.log_bytes(samples_png(samples, class_names, palette), names[0])
        recorder.log_bytes(confusion_png(matrix, class_names), names[1])
    except Exception as err:  # noqa: BLE001 - an image is a view of results already logged; never fail the run
        print(f"warning: run images not logged ({type(err).__name__}: {err})", file=sys.stderr)


def samples_png(
    samples: dict[str, list[np.ndarray]], class_names: Sequence[str], palette: Sequence[Sequence[int]] | None
) -> bytes:
    """Image / ground truth / prediction per kept sample (``evaluation.evaluate``'s lists), as PNG bytes.

    The panels are one pixel mosaic drawn 1:1 (``figimage``: no axes, no resampling), each
    sample scaled by an integer factor to about ``PANEL_PX`` wide, so labels stay crisp.
    """
    from matplotlib.patches import Patch

    rows = len(samples.get("pred", []))
    if rows == 0:
        raise ValueError("no samples to draw")
    lut = _colour_table(palette, len(class_names))
    up, down = _scale(samples["target"])
    mosaic = _mosaic(
        [
            (_display(image[:, ::down, ::down]), lut[target[::down, ::down]], lut[pred[::down, ::down]])
            for image, target, pred in zip(samples["image"], samples["target"], samples["pred"])
        ],
        up,
    )
    present = _present(samples)
    legend_rows = -(-len(present) // LEGEND_COLUMNS)
    legend_h = 8 + 15 * legend_rows  # pixels; the legend comes first: MLflow shows an image at its size,
    top, bottom = legend_h + 20, 2  # so what lies below the first rows needs scrolling
    height, width = mosaic.shape[0] + top + bottom, mosaic.shape[1]
    fig = _figure(width, height)
    fig.figimage(mosaic, xo=0, yo=bottom, origin="upper")
    panel = width / 3
    for j, title in enumerate(("image", "ground truth", "prediction")):
        fig.text((j + 0.5) * panel / width, 1 - (legend_h + 2) / height, title, ha="center", va="top", fontsize=9)
    handles = [
        Patch(facecolor=lut[c] / 255, edgecolor="black", linewidth=0.4, label=_class_name(c, class_names))
        for c in present
    ]
    columns = -(-len(handles) // legend_rows)
    fig.legend(handles=handles, loc="upper center", ncol=columns, fontsize=7, frameon=False, borderaxespad=0.2)
    return _png(fig)


def _scale(masks: list[np.ndarray]) -> tuple[int, int]:
    """Integer ``(up, down)`` factors that bring the largest mask to about ``PANEL_PX`` wide
    (and at most twice that tall): small samples drawn bigger, big ones subsampled."""
    h, w = max(m.shape[0] for m in masks), max(m.shape[1] for m in masks)
    return max(1, round(PANEL_PX / w)), max(1, -(-w // PANEL_PX), -(-h // (2 * PANEL_PX)))


def _mosaic(rows: list[tuple[np.ndarray, ...]], up: int) -> np.ndarray:
    """RGB ``uint8`` panels (``[H, W, 3]``) as one image, each enlarged ``up`` times: one row per
    sample, ``GAP`` white pixels between panels."""
    h = max(p.shape[0] for row in rows for p in row) * up
    w = max(p.shape[1] for row in rows for p in row) * up
    out = np.full((len(rows) * (h + GAP) - GAP, len(rows[0]) * (w + GAP) - GAP, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            scaled = panel.repeat(up, axis=0).repeat(up, axis=1)
            y, x = i * (h + GAP), j * (w + GAP)
            out[y : y + scaled.shape[0], x : x + scaled.shape[1]] = scaled
    return out


def confusion_png(matrix: np.ndarray, class_names: Sequence[str]) -> bytes:
    """The confusion matrix (rows = ground truth) normalised per row, as a PNG heatmap.

    Laid out in pixels from the number of classes and the longest name (no ``tight_layout``,
    which draws the figure twice): cells of 60 px for a few classes down to 7 px for 150.
    """
    from matplotlib.ticker import PercentFormatter

    counts = np.asarray(matrix, dtype=np.float64)
    n = counts.shape[0]
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(totals > 0, counts / totals, np.nan)  # a class absent from the labels: blank row
    labels = [_class_name(c, class_names) for c in range(n)]
    cell = int(np.clip(480 // max(n, 1), 7, 60))
    size = float(np.clip(cell * 0.55, 3.5, 9))  # points; 1 pt = DPI / 72 px
    margin = int(max(len(t) for t in labels) * size * 0.6 * DPI / 72) + 34
    left, bottom, top, right = margin, margin, 34, 80
    side = n * cell
    width, height = left + side + right, bottom + side + top
    fig = _figure(width, height)
    ax = fig.add_axes((left / width, bottom / height, side / width, side / height))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
    cax = fig.add_axes(((left + side + 12) / width, bottom / height, 12 / width, side / height))
    fig.colorbar(image, cax=cax, format=PercentFormatter(1.0, decimals=0))  # as the cells: percent
    cax.tick_params(labelsize=7)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=size)
    ax.set_yticks(range(n), labels, fontsize=size)
    ax.set_xlabel("prediction", fontsize=8)
    ax.set_ylabel("ground truth", fontsize=8)
    annotated = n <= MAX_ANNOTATED
    fig.text(
        0.5,
        1 - 8 / height,
        "confusion matrix, % of each true class" if annotated else "confusion matrix, share of each true class",
        ha="center",
        va="top",
        fontsize=9,
    )
    if annotated:
        for (r, c), value in np.ndenumerate(share):
            if np.isfinite(value) and round(100 * value) > 0:
                colour = "white" if value > 0.6 else "black"
                ax.text(c, r, f"{100 * value:.0f}", ha="center", va="center", fontsize=size * 0.9, color=colour)
    return _png(fig)


def _figure(width: int, height: int) -> Any:
    """An empty figure of ``width`` x ``height`` pixels on its own Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    # zlib's fastest level: these images are mostly flat colour, so they grow by a tenth and encode twice as fast
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, pil_kwargs={"compress_level": 1})
    return buf.getvalue()


def _colour_table(palette: Sequence[Sequence[int]] | None, num_classes: int) -> np.ndarray:
    """RGB of every label value 0..255: the palette (a grey ramp without one); the ignore label and
    any label beyond the classes white."""
    table = np.full((256, 3), 255, np.uint8)
    if palette is not None and len(palette) >= num_classes:
        table[: len(palette)] = np.asarray(palette, np.uint8)[:255]
    else:
        table[:num_classes] = np.linspace(0, 230, max(num_classes, 2))[:num_classes, None].astype(np.uint8)
    table[IGNORE_INDEX] = 255
    return table


def _present(samples: dict[str, list[np.ndarray]]) -> list[int]:
    """Labels drawn in the ground-truth and prediction panels, ignore last."""
    counts = sum(
        np.bincount(np.asarray(m, np.int64).ravel(), minlength=256) for m in (*samples["target"], *samples["pred"])
    )
    found = np.flatnonzero(counts).tolist()
    return [c for c in found if c != IGNORE_INDEX] + ([IGNORE_INDEX] if IGNORE_INDEX in found else [])


def _class_name(label: int, class_names: Sequence[str]) -> str:
    if label == IGNORE_INDEX:
        return f"ignore ({IGNORE_INDEX})"
    return str(class_names[label]) if label < len(class_names) else str(label)


def _display(image: np.ndarray) -> np.ndarray:
    """``[C, H, W]`` network input (normalised or not) -> ``[H, W, 3]`` ``uint8``, stretched per image."""
    hwc = np.moveaxis(np.asarray(image, np.float32), 0, -1)
    if hwc.shape[-1] == 1:
        hwc = np.repeat(hwc, 3, axis=-1)
    lo, hi = float(hwc.min()), float(hwc.max())
    return ((hwc[..., :3] - lo) * (255 / (hi - lo + 1e-12))).astype(np.uint8)
