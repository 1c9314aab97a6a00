"""What a researcher finds in the MLflow UI after `run` and `report` (real CLI, real MLflow store).

The experiment opens as model training, each run carries images the UI can show, run names tell
runs apart even where the runs table cuts them, and the report's provenance is not listed among
the training runs.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from helpers import invoke, run_study
from mlflow.tracking import MlflowClient
from PIL import Image

from studybench.store.layout import (
    ARTIFACT_CONFUSION_PNG,
    ARTIFACT_SAMPLES_PNG,
    EXPERIMENT_KIND_TRAINING,
    KIND_REPORT,
    TAG_EXPERIMENT_KIND,
    TAG_KIND,
    records_experiment,
)

STUDY = """\
study: ui
seeds: [0]
base:
  data: {dataset: synthetic, options: {num_classes: 3, image_size: 32, train_images: 4, val_images: 2}}
  model: {encoder: resnet18}
  train: {epochs: 1, batch_size: 4, lr: 0.01, threads: 1}
grid:
  model:
    - {arch: unet, options: {decoder_channels: [16, 16, 8, 8, 8]}}
    - {arch: fpn, options: {decoder_pyramid_channels: 32, decoder_segmentation_channels: 32}}
  method: [ce]
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ui")
    study, uri = run_study(root, STUDY)
    built = invoke("report", str(study), "--tracking-uri", uri, "--out", str(root / "report"), cwd=root)
    assert built.returncode == 0, built.stderr
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("ui")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    return {"client": client, "exp": exp, "runs": runs, "uri": uri}


def test_the_study_opens_as_model_training(store):
    assert store["exp"].tags.get(TAG_EXPERIMENT_KIND) == EXPERIMENT_KIND_TRAINING


def test_every_finished_run_has_png_images_the_ui_shows(store, tmp_path):
    client = store["client"]
    finished = [r for r in store["runs"] if r.info.status == "FINISHED"]
    assert len(finished) == 2
    for run in finished:
        listed = {f.path for f in client.list_artifacts(run.info.run_id)}
        assert {ARTIFACT_SAMPLES_PNG, ARTIFACT_CONFUSION_PNG} <= listed, listed
        for name, least in ((ARTIFACT_SAMPLES_PNG, (400, 300)), (ARTIFACT_CONFUSION_PNG, (250, 250))):
            path = client.download_artifacts(run.info.run_id, name, str(tmp_path))
            with open(path, "rb") as handle:
                image = Image.open(io.BytesIO(handle.read()))
                image.load()
            assert image.format == "PNG" and image.mode in ("RGB", "RGBA"), (name, image.format, image.mode)
            assert least[0] <= image.width <= 3000 and least[1] <= image.height <= 3000, (name, image.size)


def test_the_report_record_is_not_a_run_of_the_study(store):
    assert not [r.info.run_name for r in store["runs"] if TAG_KIND in r.data.tags]
    records = store["client"].get_experiment_by_name(records_experiment("ui"))
    kinds = [r.data.tags.get(TAG_KIND) for r in store["client"].search_runs([records.experiment_id])]
    assert KIND_REPORT in kinds


def test_run_names_are_distinct_and_say_method_arch_and_seed(store):
    names = sorted(r.info.run_name for r in store["runs"])
    assert names == ["ce · fpn · s0", "ce · unet · s0"]


def test_run_images_of_any_size_and_class_count():
    """Samples of different native sizes (one 1024 x 2048) and matrices of 3 to 150 classes, an absent
    class's empty row included, all give PNGs of a size the UI can show."""
    from studybench.engine.run_images import confusion_png, samples_png

    rng = np.random.default_rng(0)
    sizes = [(1024, 2048), (40, 60)]
    samples = {
        "image": [rng.normal(size=(3, h, w)).astype(np.float32) for h, w in sizes],
        "target": [np.full((h, w), 255) for h, w in sizes],
        "pred": [rng.integers(0, 19, (h, w)) for h, w in sizes],
    }
    names = [f"class {i}" for i in range(19)]
    for png in (samples_png(samples, names, None), samples_png(samples, names, [(i, 2 * i, 3 * i) for i in range(19)])):
        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG" and 400 <= image.width <= 1000 and image.height < 1000, image.size
    for n in (3, 20, 150):
        matrix = rng.integers(0, 100, (n, n))
        matrix[1] = 0  # a class absent from the labels
        image = Image.open(io.BytesIO(confusion_png(matrix, [f"c{i}" for i in range(n)])))
        assert image.format == "PNG" and 250 <= image.width <= 1600 and 250 <= image.height <= 1600, (n, image.size)


def test_a_drawing_error_never_fails_the_run(capsys):
    from studybench.engine.run_images import log_run_images

    class Recorder:
        def log_bytes(self, data: bytes, name: str) -> None:
            raise AssertionError("nothing to log")

    log_run_images(Recorder(), {"image": [], "target": [], "pred": []}, None, [], None, ("a.png", "b.png"))
    assert "warning: run images not logged (ValueError: no samples to draw)" in capsys.readouterr().err


class Browser:
    """The requests the UI's pages send (REST/ajax endpoints), against ``studybench ui`` in a process of its own."""

    def __init__(self, uri: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION")}
        argv = [sys.executable, "-m", "studybench.cli", "ui", "--tracking-uri", uri, "--port", str(self.port)]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )

    def get(self, path: str, data: dict | None = None) -> tuple[int, bytes]:
        body = None if data is None else json.dumps(data).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def wait(self) -> None:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                self.get("/")
                return
            except OSError:
                assert self.proc.poll() is None, self.stop()
                time.sleep(0.5)
        raise AssertionError(self.stop())

    def stop(self) -> str:
        os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.communicate(timeout=60)[0].decode("utf-8", "replace")


def test_browsing_a_run_page_and_an_artifact_preview_leaves_the_server_quiet(store):
    """The run page (run, its metric history, its artifact list), an artifact preview (the UI asks for a
    presigned URL first, then downloads it) and the Assistant panel beside a runs search: every answer
    right, and the server prints no traceback, no ERROR, no warning and no request line."""
    run = next(r for r in store["runs"] if r.info.status == "FINISHED")
    run_id, exp_id = run.info.run_id, store["exp"].experiment_id
    browser = Browser(store["uri"])
    try:
        browser.wait()
        status, page = browser.get("/")
        assert status == 200 and b"mlflow" in page.lower()
        status, body = browser.get(f"/ajax-api/2.0/mlflow/runs/get?run_id={run_id}")
        assert status == 200 and json.loads(body)["run"]["info"]["run_name"] == run.info.run_name
        status, body = browser.get(f"/ajax-api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=miou")
        assert status == 200 and json.loads(body)["metrics"][-1]["value"] == pytest.approx(run.data.metrics["miou"])
        status, body = browser.get(f"/ajax-api/2.0/mlflow/artifacts/list?run_id={run_id}")
        assert ARTIFACT_SAMPLES_PNG in {f["path"] for f in json.loads(body)["files"]}
        status, _ = browser.get(
            "/ajax-api/2.0/mlflow/artifacts/presigned-download-url", {"run_id": run_id, "path": ARTIFACT_SAMPLES_PNG}
        )
        assert status >= 400  # a local store has no presigned URLs: the UI then downloads directly
        status, png = browser.get(f"/get-artifact?path={ARTIFACT_SAMPLES_PNG}&run_uuid={run_id}")
        assert status == 200 and png.startswith(b"\x89PNG")
        panel = [("/ajax-api/3.0/mlflow/assistant/config", None), ("/ajax-api/3.0/mlflow/assistant/providers", None)]
        requests = [("/ajax-api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id]})] + panel * 3
        answers: list[int] = []
        threads = [threading.Thread(target=lambda r=r: answers.append(browser.get(*r)[0])) for r in requests]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers.count(200) == len(requests), answers
        time.sleep(1)  # let any log line reach the pipe before the server stops
    finally:
        out = browser.stop()
    lines = out.splitlines()
    assert f"MLflow UI on http://127.0.0.1:{browser.port}" in out
    for bad in ("traceback", "error", "warning", "http/1.1", '"get ', "huey", "job executor"):
        assert not [line for line in lines if bad in line.lower()], out
