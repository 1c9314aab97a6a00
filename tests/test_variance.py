"""Variance by source (report/variance.py): the estimator by simulation and against statsmodels' ANOVA,
the report table, and one tiny study with seeds by source trained, reported and shown by ``status``."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import REPO, SMALL_BASE, invoke, run_study

from studybench.report.tables import main_table
from studybench.report.variance import RESIDUAL, components, variance_by_source, variance_table
from studybench.study.config import Study

DRAWS = 2000


def simulate(shape: tuple[int, ...], sds: tuple[float, ...], residual: float, seed: int) -> np.ndarray:
    """DRAWS x (one estimate per source, then the residual) from an additive random-effects model."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(DRAWS):
        y = rng.normal(0.0, residual, shape)
        for axis, (levels, sd) in enumerate(zip(shape, sds)):
            view = [1] * len(shape)
            view[axis] = levels
            y = y + rng.normal(0.0, sd, levels).reshape(view)
        found = components(y)
        out.append([found[str(a)] for a in range(len(shape))] + ([found[RESIDUAL]] if len(shape) > 1 else []))
    return np.array(out)


@pytest.mark.parametrize(
    ("shape", "sds", "residual"),
    [((3, 4), (1.0, 0.5), 0.3), ((2, 2, 3), (0.7, 0.0, 0.4), 1.0), ((3, 3), (0.0, 0.0), 0.5)],
)
def test_the_estimates_recover_known_variances_on_average(shape, sds, residual):
    """Unbiased: over 2,000 designs the mean estimate of each variance is within 4 standard errors of the
    truth (the standard error measured from the draws; a 4-SE miss happens by chance 6 times in 100,000)."""
    found = simulate(shape, sds, residual, seed=len(shape))
    truth = np.array([sd**2 for sd in sds] + [residual**2])
    se = found.std(axis=0, ddof=1) / math.sqrt(DRAWS)
    assert np.all(np.abs(found.mean(axis=0) - truth) < 4 * se + 1e-12), (found.mean(axis=0), truth, se)


def test_one_varying_source_is_the_sample_variance_of_its_runs():
    found = simulate((5,), (0.8,), 0.0, seed=0)
    assert abs(found.mean() - 0.64) < 4 * found.std(ddof=1) / math.sqrt(DRAWS)
    assert components(np.array([0.50, 0.52, 0.47])) == {"0": pytest.approx(np.var([0.50, 0.52, 0.47], ddof=1))}


def test_mean_squares_match_statsmodels_anova():
    """The method-of-moments estimates from statsmodels' two-way ANOVA table (an independent computation)."""
    sm = pytest.importorskip("statsmodels.formula.api")
    anova_lm = pytest.importorskip("statsmodels.stats.anova").anova_lm
    rng = np.random.default_rng(5)
    y = rng.normal(size=(3, 4)) + rng.normal(size=(3, 1)) + 0.5 * rng.normal(size=(1, 4))
    frame = pd.DataFrame([(i, j, y[i, j]) for i in range(3) for j in range(4)], columns=["a", "b", "y"])
    table = anova_lm(sm.ols("y ~ C(a) + C(b)", data=frame).fit())
    ms = table["sum_sq"] / table["df"]
    found = components(y)
    assert found["0"] == pytest.approx((ms["C(a)"] - ms["Residual"]) / 4)
    assert found["1"] == pytest.approx((ms["C(b)"] - ms["Residual"]) / 3)
    assert found[RESIDUAL] == pytest.approx(ms["Residual"])


def runs_frame(drop: tuple[int, int] | None = None) -> pd.DataFrame:
    rows = []
    for method, shift in (("ce", 0.0), ("focal", 0.01)):
        for init in (0, 1, 2):
            for data in (0, 1):
                if drop == (init, data) and method == "focal":
                    continue
                rows.append(
                    {"method": method, "dataset": "synthetic", "arch": "unet", "groups": "main",
                     "seed": 0 if init == data == 0 else 2**32 + 10 * init + data,
                     "miou": 0.5 + shift + 0.02 * init + 0.005 * data + 0.001 * ((init * data) % 2),
                     "pixel_acc": 0.9, "mean_acc": 0.8, "param.seed.init": str(init), "param.seed.data": str(data),
                     "param.seed.aug": "0", "param.seed.method": "0"}
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_the_table_splits_each_method_and_names_an_incomplete_design():
    found, incomplete = variance_by_source(runs_frame(), ["dataset", "arch"])
    ce = found[found["method"] == "ce"].set_index("component")
    assert list(ce.index) == ["init", "data", RESIDUAL] and ce.loc["init", "levels"] == 3
    y = np.array([[0.5 + 0.02 * i + 0.005 * d + 0.001 * ((i * d) % 2) for d in (0, 1)] for i in (0, 1, 2)])
    assert ce.loc["init", "variance"] == pytest.approx(components(y)["0"]) and not incomplete
    _, incomplete = variance_by_source(runs_frame(drop=(2, 1)), ["dataset", "arch"])
    assert incomplete == ["synthetic · unet · focal: 5 of 6 runs"]
    study = Study.model_validate({"study": "v", "baseline": "ce", "grid": {"method": ["ce", "focal"]}})
    table = variance_table(runs_frame(), study)
    assert list(table.display.columns) == [
        "dataset", "arch", "method", "runs", "SD init (3 seeds)", "SD data (2 seeds)", "SD residual", "SD of all runs"
    ]  # fmt: skip
    assert table.display.loc[0, "SD init (3 seeds)"] == f"{100 * math.sqrt(ce.loc['init', 'variance']):.2f}"


def test_a_plain_seed_study_has_no_variance_table():
    plain = runs_frame().drop(columns=[c for c in runs_frame() if c.startswith("param.seed")])
    assert variance_table(plain, Study.model_validate({"study": "v"})) is None


def test_the_baseline_row_carries_no_verdict_and_no_seeds_needed():
    """main.csv compared the baseline with itself: verdict "equivalent", p_equivalent 0, 2 seeds needed."""
    frame = runs_frame().assign(seed=lambda f: f["param.seed.init"].astype(int) * 2 + f["param.seed.data"].astype(int))
    study = Study.model_validate({"study": "v", "baseline": "ce", "grid": {"method": ["ce", "focal"]}})
    data = main_table(frame, study).data.set_index("method")
    assert data.loc["ce", "verdict"] == "baseline"
    assert data.loc["ce", ["p_equivalent", "seeds_needed", "p_superior", "diff_sd"]].isna().all()
    assert data.loc["focal", "verdict"] == "better" and data.loc["focal", "seeds_needed"] == 2


def probe_status(root, uri: str) -> tuple[str, bool]:
    """``studybench status`` in a fresh interpreter through the light-commands probe: (its output, torch imported?)."""
    spec = importlib.util.spec_from_file_location("light_commands", REPO / "benchmarks" / "light_commands.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    command = json.dumps([["status", "study.yaml", "--tracking-uri", uri]])
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-c", bench.PROBE, command], cwd=root, capture_output=True, text=True, env=env
    )
    probe = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("PROBE "))[6:])
    assert probe["rc"] == 0, done.stdout + done.stderr
    return done.stdout, probe["torch"]


STUDY = f"""\
study: sources
seeds: {{init: [0, 1], data: [0, 1]}}
baseline: ce
{SMALL_BASE}grid:
  method: [ce, dice]
"""


@pytest.mark.slow
def test_a_study_with_seeds_by_source_trains_reports_and_sizes(tmp_path):
    """8 tiny runs: per-source params recorded, the (0, 0) run keyed as plain seed 0, variance.csv written,
    and ``status`` prints the seeds needed from the 4 pairs, without importing torch."""
    study, uri = run_study(tmp_path, STUDY)
    out = invoke("report", str(study), "--tracking-uri", uri, "--out", str(tmp_path / "report"), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    with open(tmp_path / "report" / "runs.csv") as f:
        names = sorted(row["run"] for row in csv.DictReader(f))
    assert names[:4] == ["ce · unet · i0.d0.a0.m0", "ce · unet · i0.d1.a0.m0", "ce · unet · i1.d0.a0.m0", "ce · unet · i1.d1.a0.m0"]  # fmt: skip
    with open(tmp_path / "report" / "variance.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted({(r["method"], r["component"]) for r in rows}) == [
        (m, c) for m in ("ce", "dice") for c in ("data", "init", RESIDUAL)
    ]
    assert all(r["runs"] == "4" and math.isfinite(float(r["variance"])) for r in rows)
    page = (tmp_path / "report" / "README.md").read_text()
    assert "Variance by source" in page and "seeds by source: init [0, 1] x data [0, 1] (others 0)" in page
    status, torch_loaded = probe_status(tmp_path, uri)
    assert not torch_loaded
    assert "seeds needed to detect 0.5 pp vs ce with 80% power" in status and "dice " in status
    assert "over 4 pairs" in status
    plain = yaml.safe_load(STUDY.replace("seeds: {init: [0, 1], data: [0, 1]}", "seeds: [0]"))
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(plain))
    listed = invoke("status", str(tmp_path / "plain.yaml"), "--tracking-uri", uri, cwd=tmp_path)
    assert "2 done" in listed.stdout  # plain seed 0 is the (0, 0, 0, 0) run already trained: nothing to redo
