"""How much a run's score owes to the validation images drawn: a bootstrap over images.

A run's mIoU is measured on a finite validation set; another draw of images from the same
distribution would score it differently. Each run logs its per-image confusion counts
(``store.layout.ARTIFACT_IMAGE_COUNTS``; runs that predate them are skipped with a note).
Resampling the images with replacement ``REPS`` times (seed ``SEED``) and scoring the summed
counts by the rule of the logged metric (``counts.class_scores``: IoU from the summed counts,
classes absent from ground truth and prediction left out) gives:

* **per run**, the 2.5 / 97.5 % percentiles of the resampled mIoU: the data-sampling
  uncertainty of that one run (not the spread over seeds, which the main table gives);
* **per cell**, with one resample shared by every run of the cell (paired: the same images
  for all methods), each method's mean over its seeds; how often a method keeps the rank it
  has on the full set, how often its mean beats the baseline's, and the interval of its
  difference to the baseline. A ranking that flips under resampling rests on a few images.

It is small when the validation set is large, and it assumes the images are independent:
frames of one video or crops of one scene are not, and resampling them one by one understates
the uncertainty (resample sequences instead). A method that beats the baseline in 99 % of
resamples is robust to the choice of images, not to the choice of seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

import studybench.report.ranking as ranking
import studybench.report.tables as tables
from studybench.counts import ImageCounts, class_scores, class_totals, mean_present, read_image_counts
from studybench.report.tables import Table, pct
from studybench.store import StudyReader
from studybench.store.layout import ARTIFACT_IMAGE_COUNTS, TAG_IMAGE_COUNTS

REPS = 1000
SEED = 0
LEVEL = 0.95


# --------------------------------------------------------------------------- the bootstrap
def image_totals(counts: np.ndarray) -> np.ndarray:
    """Per-image ``(tp, gt, pred)`` per class, ``[images, 3, C]`` float64, from ``counts [images, C, C]``."""
    return np.stack(class_totals(counts), axis=1)


def resample_weights(images: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    """``[reps, images]``: how many times each image is drawn in each resample (with replacement)."""
    draws = rng.integers(0, images, size=(reps, images)) + images * np.arange(reps)[:, None]  # row r: bins of r
    return np.bincount(draws.ravel(), minlength=reps * images).reshape(reps, images).astype(np.float64)


def scored_miou(totals: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """mIoU of the images weighted by ``weights [reps, images]`` (None: each image once) from ``image_totals``.

    The totals of a set of images are the sums of theirs, so a resample is one weighted sum (exact:
    integer counts stay far below 2**53); ``einsum`` rather than BLAS, whose threads spin on a busy CPU
    (8x the CPU time for 1,000 resamples of 100 images at a load of 8 on 2 cores).
    """
    summed = totals.sum(axis=0) if weights is None else np.einsum("rn,n...->r...", weights, totals)
    return mean_present(class_scores(summed[..., 0, :], summed[..., 1, :], summed[..., 2, :])[0])


def percentile_interval(draws: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap ``draws`` (last axis)."""
    tail = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(draws, [tail, 100 - tail], axis=-1)
    return lo, hi


def run_interval(counts: np.ndarray, reps: int = REPS, seed: int = SEED) -> tuple[float, float, float]:
    """``(mIoU, lo, hi)`` of one run: its mIoU and the percentile interval over ``reps`` resamples of its images."""
    totals = image_totals(counts)
    weights = resample_weights(len(totals), reps, np.random.default_rng(seed))
    lo, hi = percentile_interval(scored_miou(totals, weights))
    return float(scored_miou(totals)), float(lo), float(hi)


def cell_stability(
    runs: dict[str, list[np.ndarray]], baseline: str | None, reps: int = REPS, seed: int = SEED
) -> pd.DataFrame:
    """Per method of one cell (``runs``: method -> each seed's per-image counts, same images in the same order):
    mean mIoU over seeds, its interval over images, its rank (1 = best), how often a resample keeps that rank,
    and against ``baseline`` how often the method's mean beats the baseline's (ties count one half) and the
    interval of the difference. Every run of the cell is scored on the same resample of images (paired)."""
    methods = list(runs)
    images = len(runs[methods[0]][0])
    weights = resample_weights(images, reps, np.random.default_rng(seed))
    full, draws = [], []
    for method in methods:
        totals = [image_totals(c) for c in runs[method]]
        full.append(np.mean([scored_miou(t) for t in totals]))
        draws.append(np.mean([scored_miou(t, weights) for t in totals], axis=0))
    full, draws = np.array(full), np.stack(draws, axis=1)  # [methods], [reps, methods]
    rank, ranks = sps.rankdata(-full), sps.rankdata(-draws, axis=1)
    lo, hi = percentile_interval(draws.T)
    out = pd.DataFrame(
        {
            "method": methods,
            "seeds": [len(runs[m]) for m in methods],
            "images": images,
            "miou": full,
            "miou_lo": lo,
            "miou_hi": hi,
            "rank": rank,
            "p_same_rank": (ranks == rank).mean(axis=0),
        }
    )
    if baseline in runs:
        base = methods.index(baseline)
        gap = draws - draws[:, [base]]
        out["p_beats_baseline"] = ((gap > 0) + 0.5 * (gap == 0)).mean(axis=0)
        out["diff"] = full - full[base]
        out["diff_lo"], out["diff_hi"] = percentile_interval(gap.T)
        out.loc[base, ["p_beats_baseline", "diff", "diff_lo", "diff_hi"]] = np.nan
    return out


# --------------------------------------------------------------------------- from the store to tables
def read_counts(store: StudyReader, frame: pd.DataFrame, snapshot) -> dict[str, ImageCounts]:
    """The per-image counts of the runs of ``frame`` that logged them (tagged ``TAG_IMAGE_COUNTS`` in ``snapshot``)."""
    out = {}
    for run_id in frame["run_id"]:
        run = snapshot.by_id.get(run_id)
        if run is not None and run.data.tags.get(TAG_IMAGE_COUNTS):
            out[run_id] = read_image_counts(store.read_bytes(run_id, ARTIFACT_IMAGE_COUNTS))
    return out


def image_tables(store: StudyReader, frame: pd.DataFrame, study, snapshot, reps: int = REPS) -> list[Table] | None:
    """The ``images`` (ranking stability per cell) and ``images_runs`` (interval per run) tables; None when
    no run of the main grid logged per-image counts (runs from before they were logged)."""
    values = ranking.cell_values(frame, "miou")
    values["run_id"] = frame.loc[values.index, "run_id"]
    values["run"] = frame.loc[values.index, "run"]
    counts = read_counts(store, frame.loc[values.index], snapshot)
    if not counts:
        return None
    skipped = _skipped(len(values) - len(counts))
    stability = _stability_table(values, counts, study, reps, skipped)
    if stability is None:
        skipped += " No cell has per-image counts of all its runs on the same images: no ranking stability."
    return [t for t in (stability, _runs_table(values, counts, study, reps, skipped)) if t is not None]


def _runs_table(values: pd.DataFrame, counts: dict[str, ImageCounts], study, reps: int, skipped: str) -> Table:
    rows = []
    for _, r in values[values["run_id"].isin(counts)].iterrows():
        miou, lo, hi = run_interval(counts[r["run_id"]].counts, reps)
        rows.append({"run": r["run"], "cell": r["cell"], "method": r["method"], "seed": r["seed"]})
        rows[-1].update(images=len(counts[r["run_id"]].ids), miou=miou, miou_lo=lo, miou_hi=hi)
    data = _in_method_order(pd.DataFrame(rows), study).sort_values(["cell", "seed"], kind="stable")
    data = data.reset_index(drop=True)
    disp = _with_scores(data[["run", "cell", "method", "seed", "images"]].copy(), data)
    disp["width (pp)"] = (data["miou_hi"] - data["miou_lo"]).map(pct)
    note = (
        f"Data-sampling uncertainty of each run: the mIoU of {reps:,} resamples of its validation images (with "
        "replacement, seed 0, scored from the summed per-image confusion counts as the logged mIoU is), "
        f"2.5-97.5 % percentiles. It is not the spread over seeds (main table). {_TRUST}{skipped}"
    )
    return Table("images_runs", "Bootstrap over validation images: each run's mIoU interval", data, disp, note)


def _stability_table(
    values: pd.DataFrame, counts: dict[str, ImageCounts], study, reps: int, skipped: str
) -> Table | None:
    parts, left_out = [], []
    for cell, rows in values.groupby("cell", sort=False):
        runs = _cell_runs(rows, counts)
        if runs is None:
            left_out.append(cell)
            continue
        parts.append(cell_stability(runs, study.baseline, reps).assign(cell=cell))
    if not parts:
        return None
    data = pd.concat(parts, ignore_index=True)
    data = _in_method_order(data[["cell", *(c for c in data.columns if c != "cell")]], study)
    disp = _with_scores(data[["cell", "method", "seeds", "images"]].copy(), data)
    disp["rank"] = data["rank"].map(lambda v: f"{v:g}")
    disp["P(same rank)"] = data["p_same_rank"].map(lambda v: f"{v:.2f}")
    if "p_beats_baseline" in data:
        is_base = data["method"] == study.baseline
        disp[f"P(> {study.baseline})"] = [_vs_base(b, f"{v:.2f}", v) for b, v in zip(is_base, data["p_beats_baseline"])]
        disp[f"Δ vs {study.baseline} over images (pp)"] = [
            _vs_base(b, f"{100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]", d)
            for b, d, lo, hi in zip(is_base, data["diff"], data["diff_lo"], data["diff_hi"])
        ]
    note = (
        f"Each cell's validation images resampled {reps:,} times (with replacement, seed 0), the same resample for "
        "every run of the cell; per method the mean mIoU over its seeds. Interval: 2.5-97.5 % percentiles; rank: on "
        "the full set (1 = best); P(same rank): share of resamples where the method keeps that rank; "
        f"P(> {study.baseline or 'baseline'}): share where its mean beats the baseline's (ties count one half). "
        "Only the images vary, the seeds are the ones run: a P(> baseline) near 1 says the gap does not hang on a "
        f"few images, not that other seeds would keep it (the main table judges that). {_TRUST}{skipped}"
    )
    if left_out:
        note += (
            f" Left out (a run without per-image counts, or runs scored on different images): {', '.join(left_out)}."
        )
    return Table("images", "Bootstrap over validation images: how stable is each cell's ranking?", data, disp, note)


def _in_method_order(data: pd.DataFrame, study) -> pd.DataFrame:
    """Rows by cell, then in the study's method order (baseline first)."""
    return tables._sort_methods(data, tables.method_order(study, list(data["method"].unique())), ["cell"])


def _with_scores(disp: pd.DataFrame, data: pd.DataFrame) -> pd.DataFrame:
    """``disp`` with the mIoU and its interval over images, in %."""
    disp["mIoU (%)"] = data["miou"].map(pct)
    intervals = zip(data["miou_lo"], data["miou_hi"])
    disp[f"{LEVEL:.0%} interval over images"] = [f"[{pct(lo)}, {pct(hi)}]" for lo, hi in intervals]
    return disp


def _vs_base(is_baseline: bool, text: str, value: float) -> str:
    """A cell of a column against the baseline: "baseline", "-" (no baseline in the cell) or ``text``."""
    return "baseline" if is_baseline else "-" if pd.isna(value) else text


def _cell_runs(rows: pd.DataFrame, counts: dict[str, ImageCounts]) -> dict[str, list[np.ndarray]] | None:
    """Method -> per-image counts of each of its runs in the cell, or None if a run lacks them or the runs
    did not score the same images in the same order (no paired resample then)."""
    if not rows["run_id"].isin(counts).all():
        return None
    ids = [counts[r].ids for r in rows["run_id"]]
    if any(i != ids[0] for i in ids):
        return None
    out: dict[str, list[np.ndarray]] = {}
    for method, run_id in zip(rows["method"], rows["run_id"]):
        out.setdefault(method, []).append(counts[run_id].counts)
    return out


_TRUST = (
    "It measures the uncertainty from the finite validation set, not from training; it is small when the set is "
    "large, and too small when images are correlated (frames of one video, crops of one scene)."
)


def _skipped(skipped: int) -> str:
    if not skipped:
        return ""
    return f" {skipped} run(s) logged no per-image counts (runs from before they were logged): left out."


__all__ = [
    "LEVEL",
    "REPS",
    "SEED",
    "cell_stability",
    "image_tables",
    "image_totals",
    "percentile_interval",
    "read_counts",
    "resample_weights",
    "run_interval",
    "scored_miou",
]
