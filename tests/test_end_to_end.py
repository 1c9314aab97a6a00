"""The walking skeleton end to end on a real MLflow store, as a user meets it: ``make demo`` in a fresh
clone (the quickstart at smoke size, trained and reported by fresh processes), which must leave
``git status`` clean; then rerun, reported on and listed by ``studybench`` in this process
(``invoke``: no fresh imports)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, TINY_STUDY, invoke
from mlflow.tracking import MlflowClient


def runs_of(uri: str, study: str):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(study)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def quickstart_store(tmp_path_factory):
    """``make demo`` (``DEMO_FLAGS=--profile smoke``) in a fresh clone: (clone, its store's URI, make's output)."""
    if shutil.which("make") is None or shutil.which("git") is None:
        pytest.skip("needs make and git")
    clone = tmp_path_factory.mktemp("quickstart") / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    venv = Path(sys.prefix)  # this test's own environment: `-o` keeps make from reinstalling into it
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    make = ["make", "-o", f"{venv}/bin/studybench", "demo", f"VENV={venv}", "DEMO_FLAGS=--profile smoke"]
    done = subprocess.run(make, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    return clone, f"sqlite:///{clone / 'results' / 'mlflow.db'}", done


def test_make_demo_in_a_fresh_clone_leaves_the_checkout_clean(quickstart_store):
    clone, _, done = quickstart_store
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (clone / "results" / "reports" / "quickstart" / "main.csv").is_file()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True)
    assert status.stdout == "", f"make demo changed the checkout:\n{status.stdout}"


def test_quickstart_smoke_runs_and_tracks_everything(quickstart_store):
    _, uri, first = quickstart_store
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "studybench summary" in first.stdout
    runs = runs_of(uri, "quickstart")
    assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs)
    client = MlflowClient(tracking_uri=uri)
    for run in runs:
        m, p, t = run.data.metrics, run.data.params, run.data.tags
        for key in (
            "miou",
            "pixel_acc",
            "mean_acc",
            "wall_s",
            "train_s",
            "eval_s",
            "step_s",
            "loss_ms",
            "peak_mem_mb",
            "params_m",
            "iou/background",
        ):
            assert key in m and np.isfinite(m[key]), key
        assert 0.0 <= m["miou"] <= 1.0 and m["peak_mem_mb"] > 0 and m["params_m"] > 0
        assert p["model.arch"] in ("unet", "fpn") and p["data.dataset"] == "synthetic"
        assert t["studybench.study"] == "quickstart" and len(t["studybench.run_key"]) == 16
        assert t["studybench.git_commit"] and t["studybench.version"]
        history = client.get_metric_history(run.info.run_id, "val/miou")
        assert len(history) == 1  # smoke profile: one epoch
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"spec.yaml", "confusion_matrix.csv", "samples.npz"} <= artifacts


def test_rerun_starts_no_new_runs(quickstart_store):
    clone, uri, _ = quickstart_store
    before = {r.info.run_id for r in runs_of(uri, "quickstart")}
    again = invoke("run", "studies/quickstart.yaml", "--profile", "smoke", "--tracking-uri", uri, cwd=clone)
    assert again.returncode == 0, again.stderr
    assert "6 already finished, 0 to run" in again.stdout
    assert {r.info.run_id for r in runs_of(uri, "quickstart")} == before


def test_report_builds_from_the_store_alone(quickstart_store):
    clone, uri, _ = quickstart_store
    out = clone.parent / "report"
    result = invoke(
        "report", "studies/quickstart.yaml", "--profile", "smoke", "--tracking-uri", uri, "--out", str(out), cwd=clone
    )
    assert result.returncode == 0, result.stdout + result.stderr
    table = (out / "runs.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and " · s" in line]  # `ce · unet · s0`
    assert len(rows) >= 6, table
    assert (out / "runs.csv").exists()
    assert len(list(out.glob("*.png"))) >= 2


def test_status_lists_every_run(quickstart_store):
    clone, uri, _ = quickstart_store
    result = invoke("status", "studies/quickstart.yaml", "--profile", "smoke", "--tracking-uri", uri, cwd=clone)
    assert result.returncode == 0, result.stderr
    assert "6 done, 0 failed, 0 running, 0 pending" in result.stdout


def test_failing_run_is_recorded_and_others_still_run(tmp_path: Path):
    study = tmp_path / "fail.yaml"
    # 'bad' has class weights for 2 classes on a 4-class dataset: valid YAML, fails inside the run
    study.write_text(
        TINY_STUDY.replace(
            "method: [ce, dice]", "method: [ce, {name: bad, loss: {name: ce, class_weights: [1.0, 2.0]}}]"
        )
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = invoke("run", str(study), "--tracking-uri", uri)
    assert result.returncode == 1, result.stdout + result.stderr
    runs = {r.data.tags["studybench.method"]: r for r in runs_of(uri, "tiny")}
    assert runs["ce"].info.status == "FINISHED"
    assert runs["bad"].info.status == "FAILED"
    assert "class_weights" in runs["bad"].data.tags["studybench.error"]
    client = MlflowClient(tracking_uri=uri)
    assert "error.txt" in {a.path for a in client.list_artifacts(runs["bad"].info.run_id)}


def test_invalid_study_exits_2_and_writes_nothing(tmp_path: Path):
    study = tmp_path / "bad.yaml"
    study.write_text(TINY_STUDY.replace("method: [ce, dice]", "method: [ce, no-such-loss]"))
    db = tmp_path / "mlflow.db"
    result = invoke("run", str(study), "--tracking-uri", f"sqlite:///{db}")
    assert result.returncode == 2
    assert "no-such-loss" in result.stderr and "available:" in result.stderr
    assert not db.exists()
    valid = invoke("validate", str(study))
    assert valid.returncode == 2
