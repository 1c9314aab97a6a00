"""`studybench ui` serves the MLflow UI for our store on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_store_on_loopback_and_is_quiet(tmp_path):
    """The UI and its REST API answer on 127.0.0.1; a page view is dozens of requests: none may print a
    line, and no process may print a warning."""
    port = free_port()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "studybench.cli", "ui", "--tracking-uri", uri, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )
    fetched = 0
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not fetched:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    fetched += response.status == 200
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                time.sleep(1)
        bodies = []
        for _ in range(3):
            for path in ("/", "/api/2.0/mlflow/experiments/search?max_results=10"):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
                    fetched += response.status == 200
                    bodies.append(response.read().decode("utf-8", "replace"))
        assert "mlflow" in bodies[0].lower() and '"experiments"' in bodies[1], bodies[:2]
        time.sleep(1)  # let any log line reach the pipe before the server stops
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out = proc.communicate(timeout=60)[0].decode("utf-8", "replace")
    assert fetched == 7, out
    lines = out.splitlines()
    assert not [line for line in lines if "HTTP/1.1" in line or '"GET ' in line], out  # uvicorn's access log
    assert not [line for line in lines if "warning" in line.lower()], out
    assert not [line for line in lines if "job executor" in line.lower() or "huey" in line.lower()], out
    assert "MLflow UI on http://127.0.0.1" in out


def test_ui_links_open_each_study_on_its_runs_in_model_training_mode(tmp_path):
    from studybench.store import StudyWriter
    from studybench.store.layout import records_experiment
    from studybench.ui import study_links

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert study_links(uri, 5077) == []  # no store yet: nothing to link, nothing created
    assert not (tmp_path / "mlflow.db").exists()
    store = StudyWriter(uri, "tiny")
    exp_id = store.ensure_experiment()
    store.ensure_experiment(records_experiment("tiny"))
    links = study_links(uri, 5077)
    assert [name for name, _ in links] == ["tiny"]  # not MLflow's Default, not the records experiment
    url = links[0][1]
    assert url.startswith(f"http://127.0.0.1:5077/#/experiments/{exp_id}/runs?")
    assert "workflowType=machine_learning" in url and "orderByKey=metrics.%60miou%60&orderByAsc=false" in url
