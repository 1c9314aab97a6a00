"""Many writers on the documented cluster setup: ``mlflow server`` on a real PostgreSQL.

A private PostgreSQL cluster (``initdb``/``pg_ctl``, as the ``postgres`` user when we are
root) listens on 127.0.0.1 only; an MLflow server on it serves a shared artifact folder.
8 writer processes log a 16-run grid at once through ``StudyWriter``/``RunLogger`` (every
run and every metric step is counted afterwards), and one real ``studybench run`` (in this
process: what is tested is the server, not the CLI's process) trains over the same server.
"""

from __future__ import annotations

import contextlib
import glob
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import TINY_STUDY, invoke
from mlflow.tracking import MlflowClient

#: 8 processes at once, 16 runs x 3 metrics x 10 steps = 480 points (each step its own request).
WRITERS, STEPS = 8, 10
METRICS = ("train/loss", "val/miou", "lr")
#: 2 methods x 8 seeds = 16 runs, expanded into real RunSpecs (never trained here).
GRID_STUDY = TINY_STUDY.replace("study: tiny", "study: pgmany").replace("seeds: [0]", "seeds: [0, 1, 2, 3, 4, 5, 6, 7]")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return candidates[-1] if candidates else None


def postgres_missing() -> str | None:
    if not (postgres_bin("initdb") and postgres_bin("pg_ctl")):
        return "PostgreSQL is not installed: apt-get install postgresql (.ci/run does it)"
    if os.geteuid() == 0 and subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
        return "running as root without a 'postgres' user to run the server as"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed: pip install psycopg2-binary"
    return None


def as_owner(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run as ``postgres`` then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres_server():
    """An MLflow server on a private PostgreSQL (both on 127.0.0.1); yields its http URI."""
    reason = postgres_missing()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="sb-pg-"))
    data, db_port, http_port = root / "data", free_port(), free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    run = {"check": True, "capture_output": True, "timeout": 120}
    subprocess.run(
        as_owner([postgres_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]), **run
    )
    options = f"-c listen_addresses=127.0.0.1 -p {db_port} -k {root} -c fsync=off -c max_connections=100"
    pg_ctl = as_owner([postgres_bin("pg_ctl"), "-D", str(data), "-l", str(root / "postgres.log"), "-o", options])
    subprocess.run([*pg_ctl, "-w", "start"], **run)
    server = None
    try:
        subprocess.run(as_owner([postgres_bin("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(db_port), "-U", "postgres", "mlflow"]), **run)  # fmt: skip
        artifacts = root / "artifacts"  # the shared artifact store (a cluster: NFS, S3, ...)
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(http_port)]
        cmd += ["--backend-store-uri", f"postgresql+psycopg2://postgres@127.0.0.1:{db_port}/mlflow"]
        cmd += ["--artifacts-destination", str(artifacts), "--workers", "2"]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log = root / "mlflow-server.log"
        with open(log, "w") as out:
            server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        url = f"http://127.0.0.1:{http_port}"
        wait_healthy(url, server, log)
        yield url
    finally:
        if server is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the MLflow server on PostgreSQL exited at start:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the MLflow server on PostgreSQL did not answer within {timeout_s:.0f} s")


def write_runs(args: tuple[str, list, int]) -> int:
    """One writer process: log its share of the grid, STEPS steps of each metric per run.

    The specs come expanded from the parent (unpickling a RunSpec imports no torch), and the
    processes fork from a server that has imported MLflow once (``forkserver`` with a preload):
    the eight start in a second, not after eight imports of MLflow each, and write at the same time.
    """
    uri, specs, index = args
    from studybench.store import StudyWriter

    store = StudyWriter(uri, "pgmany")
    for spec in specs:
        logger = store.start_run(spec)
        for step in range(1, STEPS + 1):
            logger.log_metrics({name: step + index / 100 for name in METRICS}, step=step)
        logger.finish()
    return len(specs)


def test_eight_writers_on_postgresql_lose_no_run_and_no_metric_step(postgres_server, tmp_path):
    study_file = tmp_path / "many.yaml"
    study_file.write_text(GRID_STUDY)
    from studybench.store import StudyWriter
    from studybench.study.config import load_study
    from studybench.study.grid import expand

    specs = expand(load_study(study_file), check_data=False)
    StudyWriter(postgres_server, "pgmany").ensure_experiment()  # as `run` does before its workers start
    context = multiprocessing.get_context("forkserver")  # fresh processes (no torch threads), one import
    context.set_forkserver_preload(["mlflow.tracking", "studybench.store", "test_postgres"])
    with context.Pool(WRITERS) as pool:
        written = pool.map(write_runs, [(postgres_server, specs[i::WRITERS], i) for i in range(WRITERS)])
    assert sum(written) == 16

    client = MlflowClient(tracking_uri=postgres_server)
    exp = client.get_experiment_by_name("pgmany")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert len(runs) == 16 and {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["studybench.run_key"] for r in runs}) == 16
    steps = {
        (r.info.run_id, m): {p.step for p in client.get_metric_history(r.info.run_id, m)} for r in runs for m in METRICS
    }
    lost = {k: set(range(1, STEPS + 1)) - v for k, v in steps.items() if v != set(range(1, STEPS + 1))}
    assert not lost, f"lost metric steps: {lost}"
    assert sum(len(v) for v in steps.values()) == 16 * len(METRICS) * STEPS  # 480 points
    print(f"PostgreSQL: {len(runs)} runs, {sum(len(v) for v in steps.values())} metric points, 0 lost")


def test_studybench_run_over_the_postgresql_backed_server(postgres_server, tmp_path):
    study = TINY_STUDY.replace("study: tiny", "study: pgtiny").replace("epochs: 2", "epochs: 1")
    (tmp_path / "tiny.yaml").write_text(study)
    done = invoke("run", "tiny.yaml", "--only", "method=ce", "--tracking-uri", postgres_server, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    client = MlflowClient(tracking_uri=postgres_server)
    runs = client.search_runs([client.get_experiment_by_name("pgtiny").experiment_id])
    assert [(r.data.params["method"], r.data.params["seed"]) for r in runs] == [("ce", "0")]
    assert {r.info.status for r in runs} == {"FINISHED"} and all(r.data.metrics["miou"] >= 0 for r in runs)
    assert client.list_artifacts(runs[0].info.run_id)  # served through the server into the shared folder
