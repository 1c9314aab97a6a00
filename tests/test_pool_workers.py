"""`run --workers N`'s processes: forked warm from a forkserver, each with its own torch threads, gone with
their driver (kill -9), and stopped by Ctrl-C with the same promises as a sequential run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from helpers import REPO, cli_env, survivors, wait_for

TESTS = Path(__file__).resolve().parent


def probe(threads: int) -> dict:
    """In a pool worker: what it had to import itself, its torch threads after setting them, CUDA untouched."""
    start = time.process_time()  # a forked child starts at 0 CPU seconds
    import matplotlib.figure  # noqa: F401
    import mlflow.tracking  # noqa: F401
    import segmentation_models_pytorch  # noqa: F401
    import torch

    from studybench.executors import pool  # noqa: F401

    imports = time.process_time() - start
    cuda = torch.cuda.is_initialized()
    torch.set_num_threads(threads)
    x = torch.randn(256, 256)
    float((x @ x).sum())  # an op on the intra-op pool, after the fork
    return {"cpu_at_start": start, "import_cpu": imports, "threads": torch.get_num_threads(), "cuda": cuda}


def _python(code: str, **kwargs) -> subprocess.Popen:
    """A driver process (python -c: no __main__ for the workers to import) that can import this module."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]), "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, text=True, **kwargs)


PROBE_DRIVER = """
import json
from concurrent.futures import ProcessPoolExecutor
from studybench.executors import pool
import test_pool_workers as t
with ProcessPoolExecutor(2, mp_context=pool.worker_context()) as workers:
    print(json.dumps(list(workers.map(t.probe, [1, 2, 1, 2]))))
"""


def test_workers_fork_with_torch_smp_and_mlflow_imported_and_set_their_own_threads():
    driver = _python(PROBE_DRIVER, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err
    probes = json.loads(out)
    for threads, seen in zip([1, 2, 1, 2], probes, strict=True):
        # spawned, each worker spends ~5 CPU-s importing these; forked from the forkserver, nothing
        assert seen["import_cpu"] < 0.2, seen
        assert seen["cpu_at_start"] < 2.0, seen  # unpickling the task imports this test module, no more
        assert seen["threads"] == threads, seen  # torch's intra-op pool was not started before the fork
        assert seen["cuda"] is False


KILL_DRIVER = """
import time
from concurrent.futures import ProcessPoolExecutor
import os
from studybench.executors import pool
context = pool.worker_context()
init = (context.Queue(), context.RawValue("b", 0), context.Value("i", 0), os.getpid())
workers = ProcessPoolExecutor(2, mp_context=context, initializer=pool._worker_init, initargs=init)
for _ in range(2):
    workers.submit(time.sleep, 120)
print("started", flush=True)
time.sleep(120)
"""


def _kill_all(processes: list[psutil.Process]) -> None:
    for proc in processes:  # never leave a process behind on failure
        with contextlib.suppress(psutil.Error):
            proc.kill()


def test_kill_9_of_the_driver_ends_its_workers_and_the_forkserver():
    """A worker's parent is the forkserver, which lives while a worker holds its pipe: the workers watch the
    driver's pid themselves, and the forkserver follows them."""
    driver = _python(KILL_DRIVER, stdout=subprocess.PIPE)
    processes: list[psutil.Process] = []
    try:
        assert driver.stdout.readline().strip() == "started"
        parent = psutil.Process(driver.pid)
        # the forkserver (child of the driver) and both workers (children of the forkserver), asleep in a task
        processes = wait_for(lambda: _tree_with_workers(parent), 120, "the forkserver and two workers")
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        wait_for(lambda: not survivors(processes), 10, "workers and forkserver to exit")
    finally:
        if driver.poll() is None:
            driver.kill()
        _kill_all(processes)


def _tree_with_workers(driver: psutil.Process) -> list[psutil.Process] | None:
    forkservers = [p for p in driver.children() if "forkserver" in " ".join(p.cmdline())]
    workers = [w for f in forkservers for w in f.children()]  # forked: the same command line as their parent
    return [*forkservers, *workers] if len(forkservers) == 1 and len(workers) == 2 else None


#: Three epochs; every run stalls 5 s in its second epoch (STUDYBENCH_FAULT), with one epoch checkpointed.
CTRL_C_STUDY = """\
study: ctrlc
seeds: [0, 1, 2, 3]
base:
  data: {dataset: synthetic, options: {num_classes: 3, image_size: 32, train_images: 4, val_images: 2}}
  model: {arch: unet, encoder: resnet18, options: {decoder_channels: [8, 8, 8, 8, 8]}}
  train: {epochs: 3, batch_size: 4, lr: 0.01, threads: 1}
grid:
  method: [ce]
"""


def test_ctrl_c_kills_the_running_runs_starts_no_queued_one_and_the_rerun_resumes(tmp_path):
    from mlflow.tracking import MlflowClient

    (tmp_path / "study.yaml").write_text(CTRL_C_STUDY)
    env = cli_env()
    cmd = [sys.executable, "-m", "studybench.cli", "run", "study.yaml", "--workers", "2"]
    log = (tmp_path / "run.log").open("w")
    # its own process group, as a terminal's foreground job: Ctrl-C reaches the driver and every worker
    stalling = cli_env(STUDYBENCH_FAULT="stall@train:1")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=stalling, stdout=log, stderr=log, start_new_session=True)
    tree: list[psutil.Process] = []
    try:
        checkpoints = tmp_path / "results" / "checkpoints" / "ctrlc"
        wait_for(lambda: len(list(checkpoints.glob("*.pt"))) == 2 or proc.poll() is not None, 240, "two runs")
        assert proc.poll() is None, (tmp_path / "run.log").read_text()
        tree = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 130, (tmp_path / "run.log").read_text()
        wait_for(lambda: not survivors(tree), 10, "every process of the study to exit")
    finally:
        log.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _kill_all(tree)
    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("ctrlc").experiment_id
    stopped = client.search_runs([experiment])
    assert sorted(r.info.status for r in stopped) == ["KILLED", "KILLED"]  # the queued two never started
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    runs = client.search_runs([experiment], filter_string="attributes.status = 'FINISHED'")
    assert len(runs) == 4
    resumed = [r for r in runs if r.data.tags.get("studybench.resumed_from_epoch") == "1"]
    assert len(resumed) == 2  # from the checkpoints the Ctrl-C left
