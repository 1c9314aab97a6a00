"""``--executor slurm`` against a real single-node Slurm (tests/services/slurm.sh; .ci/run installs it).

One scenario test covers a 2-run grid as a job array, ``scancel`` of a running job and the
rerun that resumes it from its epoch checkpoint (same final metrics as an uninterrupted run),
``status`` listing the jobs by id, and a job that reaches its 1-minute time limit, is
requeued by submitit and finishes. A second, cheap test checks the install hint.

The drivers of the first launches are real processes (the test kills and inspects them); the
``status``, the rerun and the reference run go through ``invoke`` (in this process, no fresh
imports); the reference trains while the rerun's job waits for Slurm.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import REPO, invoke, wait_for
from mlflow.tracking import MlflowClient

from studybench.executors.slurm import job_parameters
from studybench.store.layout import TAG_KEY, TAG_RESUMED_EPOCH
from studybench.study.config import Resources

SCRIPT = REPO / "tests" / "services" / "slurm.sh"

#: Two runs (an array of two jobs) of ten short epochs: long enough to cancel one between two checkpoints.
#: The node has a CPU for each of the three jobs (slurm.sh), so the second array task runs beside the
#: first and is still running (ten epochs) when the first is cancelled after its first.
GRID_STUDY = """\
study: slurmgrid
seeds: [0]
base:
  data: {dataset: synthetic, options: {num_classes: 4, image_size: 32, train_images: 8, val_images: 4}}
  model: {arch: unet, encoder: resnet18, options: {decoder_channels: [16, 16, 8, 8, 8]}}
  train: {epochs: 10, batch_size: 4, lr: 0.01, threads: 1}
grid:
  method: [ce, dice]
"""
#: One run longer than the 45 s its 1-minute job runs at most before Slurm's warning (USR2), however
#: fast the machine: each epoch stalls (sleeps) 5 s (LIMIT_FAULT), so the job waits on its time limit
#: without taking a CPU from the rest of the suite. Once requeued, the test raises the job's limit.
LIMIT_STUDY = """\
study: slurmlimit
resources: {time_min: 1}
base:
  data: {dataset: synthetic, options: {num_classes: 4, image_size: 32, train_images: 4, val_images: 4}}
  model: {arch: unet, encoder: resnet18, options: {decoder_channels: [16, 16, 8, 8, 8]}}
  train: {epochs: 14, batch_size: 4, lr: 0.01, threads: 1}
"""
LIMIT_EPOCHS = 14
LIMIT_FAULT = "stall@train"
FINAL_KEYS = ("miou", "pixel_acc", "mean_acc", "iou/background", "steps")


def slurm_missing() -> str | None:
    """Why the private Slurm cannot run here (None: it can)."""
    missing = [cmd for cmd in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(cmd) is None]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "the private Slurm needs root (slurmd starts jobs as their user)"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed: pip install 'studybench[slurm]'"
    return None


@pytest.fixture(scope="session")
def slurm():
    """A private single-node Slurm for the session; SLURM_CONF points every client (and job) at it."""
    reason = slurm_missing()
    if reason:
        pytest.skip(reason)
    folder = tempfile.mkdtemp(prefix="sb-slurm-", dir="/tmp")  # short: munge's socket path has a length limit
    started = subprocess.run(["bash", str(SCRIPT), "start", folder], capture_output=True, text=True, timeout=120)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = f"{folder}/slurm.conf"
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield folder
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        subprocess.run(["bash", str(SCRIPT), "stop", folder], capture_output=True, timeout=60)


def studybench(*args: str, cwd: Path, fault: str | None = None) -> subprocess.Popen:
    """``studybench ARGS`` in a fresh process; its Slurm jobs inherit its environment, ``fault`` included."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    for name in ("MLFLOW_TRACKING_URI", "STUDYBENCH_FAULT", "STUDYBENCH_CHECKPOINTS"):
        env.pop(name, None)
    if fault:
        env["STUDYBENCH_FAULT"] = fault
    cmd = [sys.executable, "-m", "studybench.cli", *args]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def runs_of(uri: str, study: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(study)
    return client.search_runs([exp.experiment_id], max_results=1000, order_by=["attributes.start_time ASC"])


def first_job(jobs_file: Path) -> tuple[str, str] | None:
    """(run key, job id) of the grid's first array task, once the driver has recorded the jobs."""
    try:
        jobs = json.loads(jobs_file.read_text())
    except (OSError, ValueError):
        return None
    return next(((key, job["job_id"]) for key, job in jobs.items() if job["job_id"].endswith("_0")), None)


def checkpoint_epoch(path: Path) -> int:
    try:
        return int(json.loads(path.read_text())["epoch"] or 0)
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def test_slurm_grid_cancel_resume_status_and_time_limit(slurm, tmp_path):
    (tmp_path / "grid.yaml").write_text(GRID_STUDY)
    (tmp_path / "limit.yaml").write_text(LIMIT_STUDY)
    grid_uri, limit_uri = (
        f"sqlite:///{tmp_path / 'grid' / 'mlflow.db'}",
        f"sqlite:///{tmp_path / 'limit' / 'mlflow.db'}",
    )
    # the time-limited run first, in the background: it spends most of its time waiting for Slurm
    limit = studybench(
        "run", "limit.yaml", "--executor", "slurm", "--tracking-uri", limit_uri, cwd=tmp_path, fault=LIMIT_FAULT
    )
    grid = studybench("run", "grid.yaml", "--executor", "slurm", "--tracking-uri", grid_uri, cwd=tmp_path)
    watcher = ThreadPoolExecutor(1).submit(extend_after_first_requeue, tmp_path / "limit" / "slurm" / "slurmlimit")
    try:
        check_grid_and_cancel(tmp_path, grid, grid_uri)
        requeued = watcher.result(timeout=600)
        check_time_limit(tmp_path, limit, limit_uri, requeued)
    finally:
        for driver in (grid, limit):
            if driver.poll() is None:
                driver.kill()
                driver.wait()


def check_grid_and_cancel(tmp_path: Path, grid: subprocess.Popen, grid_uri: str) -> None:
    """2-run array; the first job cancelled after an epoch; status by job id; the rerun resumes it exactly."""
    folder = tmp_path / "grid" / "slurm" / "slurmgrid"
    key, job_id = wait_for(lambda: first_job(folder / "jobs.json"), 300, "the grid's jobs file")
    checkpoint = tmp_path / "grid" / "checkpoints" / "slurmgrid" / f"{key}.json"
    wait_for(lambda: checkpoint_epoch(checkpoint) >= 1, 180, "the first job's first epoch checkpoint")
    subprocess.run(["scancel", job_id], check=True, timeout=30)
    status = invoke("status", "grid.yaml", "--tracking-uri", grid_uri, cwd=tmp_path)
    array = job_id.split("_")[0]
    (other,) = [job for job in json.loads((folder / "jobs.json").read_text()).values() if job["job_id"] != job_id]
    assert other["job_id"] == f"{array}_1", other  # one array, task by task
    line = rf"^  {re.escape(other['job_id'])} (RUNNING|PENDING) {re.escape(other['name'])}$"
    assert re.search(line, status.stdout, re.M), status.stdout
    assert f"logs in {folder}" in status.stdout
    code, out = finish(grid)
    assert code == 1, out  # the cancelled run did not finish; the other did
    assert f"Slurm job {job_id} ended CANCELLED without a result" in out or f"Slurm job {job_id} left" in out, out
    finished = {r.data.tags[TAG_KEY] for r in runs_of(grid_uri, "slurmgrid") if r.info.status == "FINISHED"}
    assert len(finished) == 1 and key not in finished

    # the rerun resumes the cancelled run from its checkpoint and equals an uninterrupted run, trained
    # meanwhile in a store of its own (the cancelled run is the array's first: the study's first run)
    ref_uri = f"sqlite:///{tmp_path / 'ref' / 'mlflow.db'}"
    only = "method=ce,seed=0"
    reference_run = studybench("run", "grid.yaml", "--only", only, "--tracking-uri", ref_uri, cwd=tmp_path)
    rerun = invoke("run", "grid.yaml", "--executor", "slurm", "--tracking-uri", grid_uri, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "1 of them from a checkpoint" in rerun.stdout, rerun.stdout
    runs = runs_of(grid_uri, "slurmgrid")
    finished = {r.data.tags[TAG_KEY]: r for r in runs if r.info.status == "FINISHED"}
    assert len(finished) == 2 and len(runs) == 3  # + the cancelled one, reaped as KILLED
    resumed = finished[key]
    assert int(resumed.data.tags[TAG_RESUMED_EPOCH]) >= 1
    code, out = finish(reference_run)
    assert code == 0, out
    (reference,) = runs_of(ref_uri, "slurmgrid")
    assert reference.info.run_name == resumed.info.run_name
    assert reference.data.tags[TAG_KEY] == key
    for metric in FINAL_KEYS:
        assert resumed.data.metrics[metric] == reference.data.metrics[metric], metric


def job_logs(folder: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*_log.out"))


def extend_after_first_requeue(folder: Path) -> str:
    """Once the time limit has cut the job and submitit requeued it, give it 10 minutes; return its id."""
    job_id = wait_for(lambda: next(iter(json.loads((folder / "jobs.json").read_text()).values()), None)
                      if (folder / "jobs.json").exists() else None, 180, "the time-limited job")["job_id"]  # fmt: skip
    wait_for(lambda: "Requeued job" in job_logs(folder), 300, "the time limit's warning and requeue")
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "TimeLimit=10"], check=True, timeout=30)
    return job_id


def check_time_limit(tmp_path: Path, limit: subprocess.Popen, limit_uri: str, job_id: str) -> None:
    """The job cut by its time limit was signalled, requeued by submitit, resumed and finished."""
    code, out = finish(limit, timeout=600)
    assert code == 0, out
    runs = runs_of(limit_uri, "slurmlimit")
    *cut, final = runs  # a job cut while still importing has no MLflow run yet
    assert final.info.status == "FINISHED" and all(r.info.status == "KILLED" for r in cut), [
        r.info.status for r in runs
    ]
    client = MlflowClient(tracking_uri=limit_uri)
    if any(client.get_metric_history(r.info.run_id, "val/miou") for r in cut):  # it had finished an epoch
        assert int(final.data.tags[TAG_RESUMED_EPOCH]) >= 1
    logs = job_logs(tmp_path / "limit" / "slurm" / "slurmlimit")
    assert "this job is timed-out" in logs and f"Requeued job {job_id}" in logs, logs[-3000:]
    assert "Job completed successfully" in logs, logs[-3000:]
    history = client.get_metric_history(final.info.run_id, "val/miou")
    assert len({m.step for m in history}) == LIMIT_EPOCHS  # every epoch's curve, across the incarnations


def test_slurm_job_parameters_and_install_hint(monkeypatch, tmp_path):
    params = job_parameters(Resources(cpus=4, gpus=1, partition="gpu", time_min=60, mem_gb=16), "s")
    assert params["cpus_per_task"] == 4 and params["gpus_per_node"] == 1 and params["partition"] == "gpu"
    assert params["time"] == 60 and params["mem"] == "16384M" and 30 <= params["signal_delay_s"] < 60 * 60
    assert "time" not in job_parameters(Resources(), "s")  # the cluster's default limit
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if it were not installed
    from helpers import TINY_STUDY, invoke

    (tmp_path / "s.yaml").write_text(TINY_STUDY)
    result = invoke(
        "run", "s.yaml", "--executor", "slurm", "--tracking-uri", f"sqlite:///{tmp_path}/m.db", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "pip install 'studybench[slurm]'" in result.stdout + result.stderr
    assert not (tmp_path / "m.db").exists()  # nothing written
