"""The report: statistics, tables and figures rebuilt from a real MLflow store in a fresh process."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import run_cli, run_study
from scipy import stats as sps

from studybench.api import make_report, open_view
from studybench.report import stats
from studybench.report.collect import collect_runs
from studybench.report.reference import check_reference
from studybench.report.tables import ablation_tables
from studybench.store import StudyWriter
from studybench.store.layout import TAG_KEY, records_experiment
from studybench.study.config import Study

STUDY = """\
study: tinyreport
description: two losses and a focal ablation on tiny synthetic data, two seeds
seeds: [0, 1]
baseline: ce
base:
  data: {dataset: synthetic, options: {num_classes: 4, image_size: 32, train_images: 8, val_images: 4}}
  model: {arch: unet, encoder: resnet18, options: {decoder_channels: [32, 16, 16, 8, 8]}}
  train: {epochs: 2, batch_size: 4, lr: 0.01, threads: 1}
grid:
  method: [ce, focal]
ablations:
  focal-gamma: {of: focal, vary: {loss.gamma: [1.0, 2.0]}}
reference:
  - {method: ce, dataset: synthetic, arch: unet, miou: 0.5, pixel_acc: 0.9, note: "made up"}
  - {method: focal, dataset: synthetic, ablation: focal-gamma, loss.gamma: 1.0, miou: 0.4}
"""
TABLES = ["main", "main_by_dataset", "ablation_focal-gamma", "costs", "seeds_needed", "per_class", "reference", "runs"]
FIGURES = [
    "miou_bars",
    "accuracy_vs_cost",
    "ablation_focal-gamma",
    "per_class_iou",
    "performance_profile",
    "training_curves",
    "samples",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """Train the study once (in this process), then build its report in a fresh one: it reads the store alone."""
    root = tmp_path_factory.mktemp("report")
    study, uri = run_study(root, STUDY)
    built = run_cli("report", str(study), "--tracking-uri", uri, "--out", str(root / "report"), cwd=root)
    assert built.returncode == 0, built.stdout + built.stderr
    return {"root": root, "study": study, "uri": uri, "out": root / "report", "stderr": built.stderr}


def test_every_table_and_figure_is_built(store):
    out: Path = store["out"]
    assert "failed" not in store["stderr"], store["stderr"]
    for stem in TABLES:
        for ext in ("md", "csv", "tex"):
            assert (out / f"{stem}.{ext}").stat().st_size > 0, f"{stem}.{ext}"
    tex = (out / "main.tex").read_text()
    assert "\\toprule" in tex and "\\caption{" in tex
    page = (out / "index.html").read_text()
    assert "Problems while building" not in page
    for stem in FIGURES:
        png, pdf = out / f"{stem}.png", out / f"{stem}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
        assert png.stat().st_size < 400_000, f"{png.name} is {png.stat().st_size} bytes"
        assert f'src="{stem}.png"' in page and f"]({stem}.png)" in (out / "README.md").read_text()
    assert "two losses and a focal ablation" in page and "git commit" in page
    assert f"{socket.gethostname()} (6 runs)" in page and "hardware (report machine)" in page


def test_cells_over_two_seeds_have_a_ci_containing_the_mean(store):
    main = pd.read_csv(store["out"] / "main.csv")
    assert sorted(main["method"]) == ["ce", "focal"]
    assert (main["n"] == 2).all()
    assert ((main["miou_lo"] <= main["miou"]) & (main["miou"] <= main["miou_hi"])).all()
    assert (main["miou_lo"] < main["miou_hi"]).all() or (main["miou_std"] == 0).any()
    base = main[main["method"] == "ce"].iloc[0]
    assert base["diff"] == 0 and base["p"] == 1.0 and base["test"] == "t-test"
    focal = main[main["method"] == "focal"].iloc[0]
    assert math.isclose(focal["diff"], focal["miou"] - base["miou"], abs_tol=1e-6)  # same seeds on both sides
    abl = pd.read_csv(store["out"] / "ablation_focal-gamma.csv")
    assert sorted(abl["loss.gamma"]) == [1.0, 2.0] and (abl["n"] == 2).all()
    costs = pd.read_csv(store["out"] / "costs.csv")  # per-step medians, their spread and extra memory; no wall time
    assert {"step_s", "step_s_iqr", "loss_ms", "loss_ms_iqr", "peak_extra_mb"} <= set(costs.columns)
    assert not {"wall_s", "peak_mem_mb"} & set(costs.columns) and (costs["step_s_iqr"] >= 0).all()
    ref = pd.read_csv(store["out"] / "reference.csv")
    assert (ref["n"] == 2).all() and ref["paper_miou"].tolist() == [0.5, 0.4]


def test_two_seed_report_names_its_intervals_and_marks_them_uninformative(store):
    """Every caption and note says which interval it shows (t, over 2 seeds) and that two seeds say little."""
    out: Path = store["out"]
    page, readme = (out / "index.html").read_text(), (out / "README.md").read_text()
    for text in (page, readme):
        assert "bootstrap" not in text and "95% CI" not in text
        assert text.count(f"{stats.INTERVAL_NAME} over 2 seeds") >= 4  # bars, cost whiskers, ablation band, curves
        assert "uninformative" in text and stats.TEST_NAME in text
    main = (out / "main.md").read_text()
    assert f"mIoU {stats.INTERVAL_NAME}" in main and stats.WIDE_MARK in main and stats.WIDE_NOTE in main


def test_main_table_gives_verdicts_and_the_seeds_needed(store):
    out: Path = store["out"]
    main = (out / "main.md").read_text()
    assert "P(> ce) [95%]" in main and "verdict (±0.5 pp)" in main and "Schuirmann" in main
    data = pd.read_csv(out / "main.csv").set_index("method")
    assert data.loc["focal", "verdict"] in {"better", "equivalent", "worse", "undecided"}
    assert (
        0 <= data.loc["focal", "p_superior_lo"] <= data.loc["focal", "p_superior"] <= data.loc["focal", "p_superior_hi"]
    )
    seeds = pd.read_csv(out / "seeds_needed.csv")
    assert seeds["method"].tolist() == ["focal"] and seeds["seeds_needed"].iloc[0] >= 2


def test_rebuild_is_identical_and_report_run_is_ignored(store):
    again = store["root"] / "again"
    result = make_report(*open_view(store["uri"], store["study"]), again)
    assert not result.problems, result.problems
    first = {p.name for p in store["out"].iterdir()}
    assert first == {p.name for p in again.iterdir()}
    for name in sorted(first):
        a, b = (store["out"] / name).read_bytes(), (again / name).read_bytes()
        if name in ("index.html", "README.md"):
            a, b = (b"\n".join(line for line in x.splitlines() if b"Generated" not in line) for x in (a, b))
        assert a == b, f"{name} differs between two builds"

    tracker = StudyWriter(store["uri"], "tinyreport")
    assert not [r for r in tracker.runs() if r.data.tags.get("studybench.kind")]  # records stay out of the runs table
    reports = [
        r for r in tracker.runs(records_experiment("tinyreport")) if r.data.tags.get("studybench.kind") == "report"
    ]
    assert len(reports) == 1 and TAG_KEY not in reports[0].data.tags  # reused, never a grid run
    names = {a.path for a in tracker.client.list_artifacts(reports[0].info.run_id, "report")}
    assert "report/index.html" in names and "report/main.csv" in names
    assert (
        len(tracker.latest_by_key()) == len(tracker.latest_by_key(finished_only=True)) == 6
    )  # 2 x 2 main + 1 x 2 ablation
    assert len(collect_runs(tracker)) == 6


def test_paired_test_of_a_method_against_itself():
    x = [0.61, 0.64, 0.58]
    res = stats.paired_test(x, x)
    assert res.diff == 0 and res.p == 1.0 and res.lo == 0 and res.hi == 0
    one = stats.paired_test([0.5], [0.4])
    assert one.n == 1 and math.isnan(one.lo) and math.isnan(one.p)


@pytest.mark.parametrize("n", [3, 5, 8])
def test_paired_test_against_textbook_formulas(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(0.6, 0.05, n), rng.normal(0.58, 0.05, n)
    res = stats.paired_test(a, b)
    d = [float(x) - float(y) for x, y in zip(a, b)]
    mean = sum(d) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1))
    assert math.isclose(res.diff, mean, rel_tol=1e-12)
    t = mean / (sd / math.sqrt(n))  # paired t test at every n: the same statistic as the interval
    assert res.test == "t-test" and math.isclose(res.p, 2 * sps.t.sf(abs(t), n - 1), rel_tol=1e-9)
    half = sps.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    assert math.isclose(res.lo, mean - half, rel_tol=1e-9) and math.isclose(res.hi, mean + half, rel_tol=1e-9)


def test_t_interval_properties():
    rng = np.random.default_rng(0)
    for n in (2, 3, 10):
        x = rng.uniform(0, 1, n)
        lo, hi = stats.t_interval(x)
        assert lo < x.mean() < hi and math.isclose((lo + hi) / 2, x.mean(), rel_tol=1e-12)
        if n <= 3:  # unlike a bootstrap, the t interval may (and at few seeds does) reach beyond the seeds' range
            assert lo < min(x) and hi > max(x)
    assert all(math.isnan(v) for v in stats.t_interval([0.5]))
    wide = np.diff(stats.t_interval(rng.normal(0, 1, 5)))[0]
    narrow = np.diff(stats.t_interval(rng.normal(0, 1, 500)))[0]
    assert narrow < wide


def test_pareto_front():
    mask = stats.pareto_front([1, 2, 3, 2.5], [0.5, 0.7, 0.6, 0.7])
    assert mask.tolist() == [True, True, False, False]


def test_reference_entries_are_checked():
    problems = check_reference(
        [{"method": "ce", "miou": 77.1}, {"miou": 0.7}, {"method": "rmi", "radius": 3, "loss.radius": 3}]
    )
    assert len(problems) == 3
    assert "fraction" in problems[0] and "'method' is required" in problems[1] and "unknown key 'radius'" in problems[2]
    assert check_reference([{"method": "ce", "dataset": "voc", "loss.radius": 3, "miou": 0.77, "note": "T1"}]) == []


def test_ablations_of_two_methods_over_one_key_make_a_pivot():
    """RMI layout: region size rows x downsampling factor columns, from two ablations sharing loss.radius."""
    study = Study.model_validate(
        yaml.safe_load(
            """
            study: pivot
            grid: {method: [rmi, rmi-f6]}
            ablations:
              region-f4: {of: rmi, vary: {loss.radius: [1, 2, 3]}}
              region-f6: {of: rmi-f6, vary: {loss.radius: [2, 3]}}
            """
        )
    )
    rows = []
    for method, factor, group, radii in (("rmi", 4, "region-f4", [1, 2, 3]), ("rmi-f6", 6, "region-f6", [2, 3])):
        for radius in radii:
            for seed in (0, 1):
                miou = 0.5 + 0.01 * radius + 0.001 * factor + 0.002 * seed
                rows.append(
                    {"method": method, "dataset": "voc", "arch": "deeplabv3", "seed": seed, "groups": group, "miou": miou,
                     "pixel_acc": 0.9, "mean_acc": 0.8, "param.loss.radius": str(radius), "param.loss.factor": str(factor),
                     "param.method": method}
                )  # fmt: skip
    made = {t.stem: t for t in ablation_tables(pd.DataFrame(rows), study)}
    pivot = made["ablation_region-f4_x_region-f6"].display
    assert list(pivot.columns) == ["dataset", "loss.radius", "factor=4", "factor=6"]
    assert pivot["loss.radius"].tolist() == ["1", "2", "3"]
    assert pivot.loc[0, "factor=6"] == ""  # R = 1 was not run at factor 6
    assert pivot.loc[1, "factor=4"] == "52.50 ± 0.14"  # mean of 0.521+0.004 and 0.523+0.004 over seeds
    assert made["ablation_region-f4"].data["n"].tolist() == [2, 2, 2]


def test_collect_uses_the_latest_finished_run_of_each_key(tmp_path):
    """A newer failed/running duplicate of a key neither hides its finished run nor enters the report."""
    tracker = StudyWriter(f"sqlite:///{tmp_path / 'mlflow.db'}", "collect")
    exp = tracker.ensure_experiment()

    def make(key: str, start: int, status: str, miou: float) -> None:
        run = tracker.client.create_run(
            exp, start_time=start, run_name=f"{key}-{start}", tags={TAG_KEY: key, "studybench.method": "ce"}
        )
        tracker.client.log_param(run.info.run_id, "seed", "0")
        tracker.client.log_metric(run.info.run_id, "miou", miou)
        if status != "RUNNING":
            tracker.client.set_terminated(run.info.run_id, status)

    make("a", 1000, "FINISHED", 0.1)
    make("a", 2000, "FINISHED", 0.2)  # newest finished: used
    make("a", 3000, "FAILED", 0.9)  # newer but failed: ignored
    make("b", 1000, "FINISHED", 0.3)
    make("b", 2000, "RUNNING", 0.8)  # in flight: ignored
    make("c", 1000, "KILLED", 0.5)  # never finished: absent
    frame = collect_runs(tracker)
    assert dict(zip(frame["run_key"], frame["miou"])) == {"a": 0.2, "b": 0.3}
    assert set(frame["status"]) == {"FINISHED"}
    everything = collect_runs(tracker, finished_only=False)
    assert dict(zip(everything["run_key"], everything["status"])) == {"a": "FAILED", "b": "RUNNING", "c": "KILLED"}
    assert collect_runs(tracker, keys=["b"])["run_key"].tolist() == ["b"]


def test_cost_scatter_tells_architectures_apart_and_wide_heatmaps_stack():
    """Cells of one method on two archs get different marker fills (named in the legend); many classes stack panels."""
    from studybench.report import plots

    rows = [
        {"dataset": "d", "arch": arch, "method": m, "miou": 0.3 + 0.01 * i, "miou_lo": math.nan, "miou_hi": math.nan,
         "step_s": 0.01 + 0.001 * i, "loss_ms": 1.0 + i, "peak_extra_mb": 100.0 + i, "n": 1}
        for i, (arch, m) in enumerate([("fpn", "ce"), ("fpn", "focal"), ("unet", "ce"), ("unet", "focal")])
    ]  # fmt: skip
    fig = plots.cost_scatter(pd.DataFrame(rows), ["ce", "focal"], ["arch"])
    labels = fig.axes[-1].get_legend_handles_labels()[1]
    assert {"arch: fpn", "arch: unet", "ce", "focal", "Pareto front"} <= set(labels)
    fills = {line.get_fillstyle() for line in fig.axes[0].get_lines() if line.get_xydata().size}
    assert {"full", "left"} <= fills
    plots.plt.close(fig)

    classes = {f"iou/c{k}": [0.5, 0.4] for k in range(12)}
    fig = plots.per_class(pd.DataFrame({"method": ["ce", "focal"], **classes}), ["method"], "ce")
    heatmaps = [ax for ax in fig.axes if ax.images]
    assert len(heatmaps) == 2 and heatmaps[0].get_position().y0 > heatmaps[1].get_position().y1  # one above the other
    plots.plt.close(fig)
