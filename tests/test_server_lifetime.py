"""Nothing outlives a killed `run --workers N`: not the local MLflow server, its children, or the workers;
and the server starts no process of MLflow's that studybench does not use."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import psutil
from helpers import cli_env, survivors, wait_for

#: Long enough (many epochs) that the study is still running when it is killed.
STUDY = """\
study: lifetime
seeds: [0, 1]
base:
  data: {dataset: synthetic, options: {num_classes: 3, image_size: 32, train_images: 4, val_images: 2}}
  model: {arch: unet, encoder: resnet18, options: {decoder_channels: [8, 8, 8, 8, 8]}}
  train: {epochs: 200, batch_size: 4, lr: 0.01, threads: 1}
grid:
  method: [ce]
"""


def _server_port(driver: psutil.Process) -> int | None:
    """The port the driver's MLflow server (a descendant) listens on, once it listens."""
    for child in driver.children(recursive=True):
        try:
            for conn in child.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.ip == "127.0.0.1":
                    return conn.laddr.port
        except psutil.Error:
            continue
    return None


def _commands(processes: list[psutil.Process]) -> list[str]:
    found = []
    for proc in processes:
        try:
            found.append(" ".join(proc.cmdline()))
        except psutil.Error:  # exited meanwhile
            pass
    return found


def _listening(port: int) -> bool:
    return any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in psutil.net_connections("tcp"))


def test_kill_9_of_the_driver_takes_the_server_and_workers_with_it(tmp_path):
    (tmp_path / "study.yaml").write_text(STUDY)
    env = cli_env()
    cmd = [sys.executable, "-m", "studybench.cli", "run", "study.yaml", "--workers", "2"]
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    descendants: list[psutil.Process] = []
    try:
        driver = psutil.Process(proc.pid)
        port = wait_for(lambda: _server_port(driver) or proc.poll() is not None, 240, "the MLflow server to listen")
        assert proc.poll() is None, (tmp_path / "run.log").read_text()
        checkpoints = tmp_path / "results" / "checkpoints" / "lifetime"
        wait_for(lambda: len(list(checkpoints.glob("*.pt"))) == 2, 240, "both workers to be training")
        descendants = driver.children(recursive=True)
        commands = _commands(descendants)
        assert any("mlflow" in cmd and "server" in cmd for cmd in commands), commands
        # MLflow 3's server would also start a job runner and Huey consumers (GenAI jobs we never use),
        # each a process importing MLflow: CPU taken from the runs beside it
        assert not [cmd for cmd in commands if "_job_runner" in cmd or "huey" in cmd], commands
        # the workers' parent: it must end too, though the workers held its pipe open
        assert any("multiprocessing.forkserver" in cmd for cmd in commands), commands
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone; everything else must follow it
        proc.wait(timeout=10)

        def all_gone() -> bool:
            return not survivors(descendants) and not _listening(port)

        try:
            wait_for(all_gone, 10, "every child of the killed driver to exit and the port to close")
        except AssertionError as err:
            raise AssertionError(f"{err}: {survivors(descendants)}, port {port} open: {_listening(port)}") from None
    finally:
        log.close()
        leftovers = list(descendants)
        with contextlib.suppress(psutil.Error):
            leftovers += psutil.Process(proc.pid).children(recursive=True)
        if proc.poll() is None:
            proc.kill()
        for child in leftovers:  # never leave a process behind on failure
            with contextlib.suppress(psutil.Error):
                child.kill()


#: A driver that starts the guard over a command which itself starts a child (as mlflow server starts uvicorn).
DRIVER = """
import subprocess, sys, time
guard = sys.argv[1]
grandchild = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"
subprocess.Popen([sys.executable, guard, str(__import__("os").getpid()), sys.executable, "-c", grandchild],
                 start_new_session=True)
time.sleep(120)
"""


def test_the_guard_ends_its_whole_process_group_when_the_driver_dies():
    """Without MLflow (seconds): kill -9 of the driver ends the guarded command and the child it started."""
    from studybench.executors import server

    driver = subprocess.Popen([sys.executable, "-c", DRIVER, server.__file__])
    descendants: list[psutil.Process] = []
    try:
        parent = psutil.Process(driver.pid)
        wait_for(lambda: len(parent.children(recursive=True)) >= 3, 30, "guard, command and its child")
        descendants = parent.children(recursive=True)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        wait_for(lambda: not survivors(descendants), 5, "the guard's process group to end")
    finally:
        if driver.poll() is None:
            driver.kill()
        for proc in descendants:  # never leave a process behind on failure
            with contextlib.suppress(psutil.Error):
                proc.kill()
