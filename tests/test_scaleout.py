"""Crash safety and scale-out with real processes: kill -9 and resume, Ctrl-C, retries,
parallel workers over a local MLflow server (a real local Ray instance: tests/test_ray_loopback.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, invoke
from mlflow.tracking import MlflowClient

from studybench.engine import faults
from studybench.engine.faults import inject
from studybench.executors import is_transient
from studybench.runner import UsageError, parse_resources
from studybench.store import StudyWriter
from studybench.store.layout import TAG_HEARTBEAT, TAG_HOST, TAG_KEY, TAG_PID

#: Four seeds of one tiny run, three epochs each: a crash can land in the middle of a run.
RESUME_STUDY = """\
study: crash
seeds: [0, 1, 2, 3]
base:
  data: {dataset: synthetic, options: {num_classes: 4, image_size: 32, train_images: 8, val_images: 4}}
  model: {arch: unet, encoder: resnet18, options: {decoder_channels: [16, 16, 8, 8, 8]}}
  train: {epochs: 3, batch_size: 4, lr: 0.01, threads: 1}
grid:
  method: [ce]
"""
FINAL_KEYS = ("miou", "pixel_acc", "mean_acc", "iou/background", "steps")


def named(seed: int) -> str:
    """The run name of RESUME_STUDY's seed ``seed`` (what STUDYBENCH_FAULT's ``#RUN`` is matched against)."""
    return f"ce · unet · s{seed}"


def studybench(*args: str, cwd: Path, fault: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("STUDYBENCH_FAULT", None)
    if fault:
        env["STUDYBENCH_FAULT"] = fault
    cmd = [sys.executable, "-m", "studybench.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def runs_by_name(uri: str, study: str) -> dict[str, list]:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(study)
    out: dict[str, list] = {}
    for run in client.search_runs([exp.experiment_id], max_results=1000, order_by=["attributes.start_time ASC"]):
        out.setdefault(run.info.run_name, []).append(run)
    return out


def history(uri: str, run, key: str = "val/miou") -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient(tracking_uri=uri).get_metric_history(run.info.run_id, key))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The study run once without interruption (in this process): what every resumed run must equal."""
    tmp = tmp_path_factory.mktemp("reference")
    (tmp / "crash.yaml").write_text(RESUME_STUDY)
    uri = f"sqlite:///{tmp / 'ref.db'}"
    done = invoke("run", "crash.yaml", "--tracking-uri", uri, cwd=tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    return {name: (runs[0], history(uri, runs[0])) for name, runs in runs_by_name(uri, "crash").items()}


def test_kill_9_at_any_moment_then_rerun_loses_and_duplicates_nothing(tmp_path, reference):
    """Each launch is killed (SIGKILL) at another moment of another run; each rerun resumes the dead run."""
    (tmp_path / "crash.yaml").write_text(RESUME_STUDY)
    kills = [  # (fault, the run it hits, epochs its checkpoint holds when the process dies)
        ("kill@train:1#s0", named(0), 1),  # during an epoch
        ("kill@eval:2#s1", named(1), 2),  # during evaluation
        ("kill@log:1#s2", named(2), 1),  # between logging an epoch and its checkpoint
        ("kill@final#s3", named(3), 3),  # after the final metrics, before FINISHED
    ]
    for fault, _, _ in kills:  # the default store: results/mlflow.db under the working directory
        killed = studybench("run", "crash.yaml", cwd=tmp_path, fault=fault)
        assert killed.returncode == -9, killed.stdout + killed.stderr
    status = invoke("status", "crash.yaml", cwd=tmp_path)  # reads the store: no need for a fresh process
    assert "its process died" in status.stdout and "resumes after epoch 3" in status.stdout, status.stdout
    final = invoke("run", "crash.yaml", cwd=tmp_path)  # the rerun: in this process
    assert final.returncode == 0, final.stdout + final.stderr

    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    runs = runs_by_name(uri, "crash")
    for _, name, epochs_done in kills:
        statuses = [r.info.status for r in runs[name]]
        assert statuses == ["KILLED", "FINISHED"], (name, statuses)  # exactly one FINISHED per run key
        dead, resumed = runs[name]
        assert "runner died" in dead.data.tags["studybench.error"]
        assert resumed.data.tags["studybench.resumed_from_epoch"] == str(epochs_done)
        assert resumed.data.tags["studybench.resumed_from_run"] == dead.info.run_id
        ref_run, ref_history = reference[name]
        assert history(uri, resumed) == ref_history  # every epoch's curve, once, with the same values
        for key in FINAL_KEYS:
            assert resumed.data.metrics[key] == ref_run.data.metrics[key], (name, key)
    assert not list((tmp_path / "results" / "checkpoints").rglob("*.pt"))  # removed once FINISHED


def test_ctrl_c_marks_the_run_killed_and_says_how_to_resume(tmp_path, reference):
    (tmp_path / "crash.yaml").write_text(RESUME_STUDY)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    stopped = studybench("run", "crash.yaml", "--tracking-uri", uri, cwd=tmp_path, fault="interrupt@train:2#s1")
    assert stopped.returncode == 130, stopped.stdout + stopped.stderr
    assert "1 of 4 runs finished" in stopped.stdout
    assert f"{named(1)}: KILLED; resumes after epoch 2" in stopped.stdout
    assert f"Resume with: studybench run crash.yaml --tracking-uri {uri}" in stopped.stdout
    killed = runs_by_name(uri, "crash")[named(1)]
    assert [r.info.status for r in killed] == ["KILLED"]
    resumed = invoke("run", "crash.yaml", "--tracking-uri", uri, "--only", "seed=1", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    run = runs_by_name(uri, "crash")[named(1)][-1]
    assert run.data.tags["studybench.resumed_from_epoch"] == "2"
    assert run.data.metrics["miou"] == reference[named(1)][0].data.metrics["miou"]


def test_retries_a_transient_failure_from_its_checkpoint_but_not_a_deterministic_one(
    tmp_path, write_study, monkeypatch
):
    """Retries happen in the process that failed (in this one here: the faults fire once per process)."""
    study = write_study(RESUME_STUDY.replace("seeds: [0, 1, 2, 3]", "seeds: [0, 1]"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv(faults.ENV, "oom@train:1#s0,nan@train:0#s1")
    monkeypatch.setattr(faults, "_fired", set())
    done = invoke("run", str(study), "--tracking-uri", uri, "--retries", "2", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    runs = runs_by_name(uri, "crash")
    oom_first, oom_retry = runs[named(0)]
    assert (oom_first.info.status, oom_retry.info.status) == ("FAILED", "FINISHED")
    assert oom_first.data.tags["studybench.retry"].startswith("transient error (OutOfMemoryError): retried")
    assert oom_retry.data.tags["studybench.attempt"] == "2"
    assert oom_retry.data.tags["studybench.resumed_from_epoch"] == "1"
    (nan_run,) = runs[named(1)]  # not retried: a NaN comes back every time
    assert nan_run.info.status == "FAILED"
    assert nan_run.data.tags["studybench.retry"] == "deterministic error (NonFiniteLossError): not retried"


def test_two_workers_on_the_sqlite_default_track_every_run_and_metric(tmp_path, reference):
    """Two worker processes log through a local MLflow server; the numbers equal a sequential run."""
    (tmp_path / "crash.yaml").write_text(RESUME_STUDY)
    done = studybench("run", "crash.yaml", "--workers", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 workers" in done.stdout
    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    runs = runs_by_name(uri, "crash")
    assert sorted(runs) == sorted(reference) and all(len(r) == 1 for r in runs.values())
    pids = set()
    for name, (run,) in runs.items():
        assert run.info.status == "FINISHED"
        assert history(uri, run) == reference[name][1]
        for key in (*FINAL_KEYS, "wall_s", "peak_mem_mb", "loss_ms"):
            assert key in run.data.metrics, (name, key)
        assert run.data.metrics["miou"] == reference[name][0].data.metrics["miou"]
        pids.add(run.data.tags[TAG_PID])
    assert len(pids) == 2  # really two worker processes


def test_bad_option_combinations_exit_2_before_anything_is_written(tmp_path, write_study):
    study = write_study(RESUME_STUDY)
    db = tmp_path / "mlflow.db"
    for args, message in [
        (["--executor", "ray", "--workers", "2"], "--workers is for --executor local"),
        (["--ray-address", "10.0.0.1:6379"], "--ray-address needs --executor ray"),
        (["--executor", "ray", "--ray-address", "10.0.0.1:6379"], "start an MLflow tracking server"),
        (["--resources", "cpus=two"], "cpus must be a number"),
    ]:
        out = invoke("run", str(study), "--tracking-uri", f"sqlite:///{db}", *args, cwd=tmp_path)  # checks only
        assert out.returncode == 2, (args, out.stdout + out.stderr)
        assert message in " ".join(out.stderr.split()), (args, out.stderr)  # rich wraps long lines
    assert not db.exists()


def test_dead_runs_are_reaped_and_live_ones_left_alone(tracking_uri):
    """RUNNING runs: same host -> alive iff the pid lives; other host -> alive iff the heartbeat is fresh."""
    tracker = StudyWriter(tracking_uri, "reap")
    exp = tracker.ensure_experiment()
    client = tracker.client
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait()
    now = int(time.time())
    cases = {
        "alive-here": {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid())},
        "dead-here": {TAG_HOST: socket.gethostname(), TAG_PID: str(dead_pid.pid)},
        "fresh-elsewhere": {TAG_HOST: "node-7", TAG_PID: "1", TAG_HEARTBEAT: str(now - 60)},
        "stale-elsewhere": {TAG_HOST: "node-7", TAG_PID: "1", TAG_HEARTBEAT: str(now - 3600)},
    }
    for name, tags in cases.items():
        client.create_run(exp, run_name=name, tags={**tags, TAG_KEY: name})
    reaped = {run.info.run_name for run in tracker.reap_dead_runs(stale_after_s=900)}
    assert reaped == {"dead-here", "stale-elsewhere"}
    status = {run.info.run_name: run.info.status for run in tracker.runs()}
    assert status == {
        "alive-here": "RUNNING",
        "dead-here": "KILLED",
        "fresh-elsewhere": "RUNNING",
        "stale-elsewhere": "KILLED",
    }


def test_transient_errors_are_told_from_deterministic_ones():
    import torch

    from studybench.schemes.base import NonFiniteLossError

    assert is_transient(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_transient(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert is_transient(ConnectionError("tracking server unreachable"))
    assert not is_transient(NonFiniteLossError("loss is nan"))
    assert not is_transient(ValueError("training split has 3 images, fewer than batch_size=4"))
    assert not is_transient(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def test_fault_and_resource_specs_are_checked(monkeypatch):
    from studybench.study.config import Resources

    monkeypatch.setenv("STUDYBENCH_FAULT", "explode@train:1")
    with pytest.raises(ValueError, match="ACTION one of kill, interrupt, oom, nan, error"):
        inject("train", 1, "run")
    monkeypatch.setenv("STUDYBENCH_FAULT", "error@eval:3#dice")
    inject("eval", 3, "synthetic/ce/seed0")  # another run: nothing happens
    inject("eval", 2, "synthetic/dice/seed0")  # another epoch: nothing happens
    with pytest.raises(RuntimeError, match="injected"):
        inject("eval", 3, "synthetic/dice/seed0")
    inject("eval", 3, "synthetic/dice/seed0")  # raising faults fire once per process (a retry gets past)
    slept: list[float] = []
    monkeypatch.setattr(faults.time, "sleep", slept.append)
    monkeypatch.setenv("STUDYBENCH_FAULT", "stall@train#s1")
    for epoch in (1, 2):
        inject("train", epoch, "ce · unet · s1")
    inject("train", 1, "ce · unet · s0")
    assert slept == [faults.STALL_S, faults.STALL_S]  # a stall: every time its point comes, of its runs only
    assert parse_resources("cpus=4,gpus=1", Resources()) == Resources(cpus=4, gpus=1)
    assert parse_resources(None, Resources(cpus=2)) == Resources(cpus=2)
    with pytest.raises(UsageError, match="keys: cpus, gpus"):
        parse_resources("memory=4", Resources())


def test_docs_describe_the_cluster_setup():
    text = (REPO / "docs" / "scale-out.md").read_text()
    for needle in ("--ray-address", "mlflow server", "postgresql://", "--checkpoint-dir", "STUDYBENCH_FAULT"):
        assert needle in text, needle


def test_workers_that_lower_a_runs_threads_say_so(tmp_path, write_study):
    """Threads are not in the run key but change CPU float results: --workers warns when it lowers them."""
    study = write_study(RESUME_STUDY.replace("threads: 1}", "threads: 256}"))
    out = invoke("run", str(study), "--workers", "2", "--dry-run", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 run(s) ask for train.threads=256" in " ".join(out.stdout.split())
    quiet = invoke("run", str(write_study(RESUME_STUDY, "one.yaml")), "--workers", "2", "--dry-run", cwd=tmp_path)
    assert "train.threads" not in quiet.stdout
