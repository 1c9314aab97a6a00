"""A real tiny study logs per-image counts, and its report bootstraps over validation images."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from helpers import TINY_STUDY, run_study
from mlflow.tracking import MlflowClient

from studybench.api import make_report, open_view
from studybench.counts import miou, read_image_counts
from studybench.store.layout import ARTIFACT_CONFUSION, ARTIFACT_IMAGE_COUNTS, TAG_IMAGE_COUNTS, TAG_STUDY


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("images")
    path, uri = run_study(root, TINY_STUDY.replace("seeds: [0]", "seeds: [0, 1]"))
    runs = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("tiny").experiment_id], f"tags.`{TAG_STUDY}` = 'tiny'"
    )
    return {"root": root, "path": path, "uri": uri, "runs": runs}


def _report(study: dict, out: str) -> tuple[object, dict[str, pd.DataFrame]]:
    view, reader = open_view(study["uri"], study["path"])
    result = make_report(view, reader, study["root"] / out, log_to_mlflow=False)
    assert not result.problems, result.problems
    csv = {p.stem: pd.read_csv(p) for p in result.files if p.suffix == ".csv"}
    return result, csv


def test_each_run_logs_its_images_counts_which_score_its_logged_mIoU(study):
    client = MlflowClient(study["uri"])
    assert len(study["runs"]) == 4
    for run in study["runs"]:
        assert run.data.tags[TAG_IMAGE_COUNTS] == "4"  # TINY_STUDY: 4 validation images
        stored = read_image_counts(_artifact(client, run.info.run_id, ARTIFACT_IMAGE_COUNTS, study["root"]))
        matrix = np.loadtxt(
            io.StringIO(_artifact(client, run.info.run_id, ARTIFACT_CONFUSION, study["root"]).decode()),
            delimiter=",",
            skiprows=1,
            usecols=range(1, 5),
        )
        assert stored.counts.shape == (4, 4, 4) and (stored.counts.sum(axis=0) == matrix).all()
        assert float(miou(stored.counts.sum(axis=0))) == run.data.metrics["miou"]


def _artifact(client: MlflowClient, run_id: str, name: str, root) -> bytes:
    with open(client.download_artifacts(run_id, name, str(root)), "rb") as f:
        return f.read()


def test_the_report_has_the_images_tables(study):
    result, csv = _report(study, "report")
    per_run, cell = csv["images_runs"], csv["images"]
    logged = {r.info.run_name: r.data.metrics["miou"] for r in study["runs"]}
    assert len(per_run) == 4 and (per_run["images"] == 4).all()
    assert list(per_run["miou"]) == pytest.approx([logged[r] for r in per_run["run"]], abs=1e-6)  # CSV: 6 digits
    assert (per_run["miou_lo"] <= per_run["miou"]).all() and (per_run["miou"] <= per_run["miou_hi"]).all()
    assert list(cell["method"]) == ["ce", "dice"] and (cell["seeds"] == 2).all()
    assert cell.loc[cell["method"] == "dice", "p_beats_baseline"].between(0, 1).all()
    page = (study["root"] / "report" / "README.md").read_text()
    assert "Bootstrap over validation images: how stable is each cell's ranking?" in page
    assert "P(same rank)" in page and "interval over images" in page


def test_runs_without_per_image_counts_are_left_out_with_a_note(study):
    """A run from before per-image counts were logged (its tag removed): skipped, said, never an error."""
    client = MlflowClient(study["uri"])
    first = study["runs"][0]
    client.delete_tag(first.info.run_id, TAG_IMAGE_COUNTS)
    try:
        result, csv = _report(study, "report_older")
        assert "images" not in csv and len(csv["images_runs"]) == 3  # the one cell lacks a run: no ranking
        text = (study["root"] / "report_older" / "images_runs.md").read_text()
        assert "1 run(s) logged no per-image counts" in text and "no ranking stability" in text
        for run in study["runs"][1:]:
            client.delete_tag(run.info.run_id, TAG_IMAGE_COUNTS)
        result, csv = _report(study, "report_oldest")
        assert not {"images", "images_runs"} & set(csv) and "main" in csv  # no section, the rest as before
    finally:
        for run in study["runs"]:
            client.set_tag(run.info.run_id, TAG_IMAGE_COUNTS, "4")
