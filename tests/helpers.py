"""Helpers shared by tests (import as ``from helpers import ...``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``studybench ARGS`` in a fresh process (as a user would)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "studybench.cli", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


#: A tiny but real study: two losses, synthetic data, one epoch (seconds per run).
TINY_STUDY = """\
study: tiny
description: two losses on tiny synthetic data
seeds: [0]
baseline: ce
base:
  data: {dataset: synthetic, options: {num_classes: 4, image_size: 32, train_images: 8, val_images: 4}}
  model: {arch: unet, encoder: resnet18, options: {decoder_channels: [32, 16, 16, 8, 8]}}
  train: {epochs: 2, batch_size: 4, lr: 0.01, threads: 1}
grid:
  method: [ce, dice]
"""


def invoke(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``studybench ARGS`` in this process (seconds faster than ``run_cli``: no fresh imports).

    For read-only commands and checks whose subject is not the process itself; returns the
    same shape as ``run_cli`` (``returncode``, ``stdout``, ``stderr``).
    """
    from typer.testing import CliRunner

    from studybench.cli import app

    before = Path.cwd()
    os.chdir(cwd or REPO)
    try:
        result = CliRunner().invoke(app, list(args), env={"MLFLOW_TRACKING_URI": None, "COLUMNS": "160"})
    finally:
        os.chdir(before)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def run_study(root: Path, text: str) -> tuple[Path, str]:
    """Write ``text`` as ``root/study.yaml`` and run it (in this process) into a fresh store under ``root``.

    Returns the study file and the store's tracking URI; fails the calling test if the run fails.
    """
    study = root / "study.yaml"
    study.write_text(text)
    uri = f"sqlite:///{root / 'results' / 'mlflow.db'}"
    ran = invoke("run", str(study), "--tracking-uri", uri, cwd=root)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return study, uri


#: The smallest real training run (32 px, 4 images, one epoch: seconds): the ``base`` of store tests.
SMALL_BASE = """\
base:
  data: {dataset: synthetic, options: {num_classes: 3, image_size: 32, train_images: 4, val_images: 2}}
  model: {arch: unet, encoder: resnet18, options: {decoder_channels: [16, 16, 8, 8, 8]}}
  train: {epochs: 1, batch_size: 4, lr: 0.01, threads: 1}
"""


#: A tiny tuned study: CE and focal (with its own gamma knob), 3 trials per fold, one seed, 32 px (seconds per run).
TINY_TUNED = """\
study: tinytuned
seeds: [0]
baseline: ce
base:
  data: {dataset: synthetic, options: {num_classes: 3, image_size: 32, train_images: 8, val_images: 2}}
  model: {arch: unet, encoder: resnet18, options: {decoder_channels: [16, 16, 8, 8, 8]}}
  train: {epochs: 1, batch_size: 4, lr: 0.01, threads: 1}
grid:
  method: [ce, {name: focal, loss: {name: focal, gamma: 2.0}, tune: {loss.gamma: {low: 0.5, high: 5.0}}}]
tune:
  budget: 3
  split: {fraction: 0.25}
  space:
    train.lr: {low: 1.0e-4, high: 3.0e-2, log: true}
"""


def wait_for(condition, timeout_s: float, what: str):
    """``condition()``'s first truthy value, polled every 0.1 s; AssertionError naming ``what`` after ``timeout_s``."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def survivors(processes) -> list[str]:
    """The command lines (cut to 120 characters) of those ``psutil.Process`` es still running (zombies count as gone)."""
    import psutil

    alive = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(" ".join(proc.cmdline())[:120])
        except psutil.Error:
            pass
    return alive


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a ``studybench`` subprocess: this checkout first, no tracking URI of the caller's,
    one OpenMP thread, warnings off; plus ``extra``."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **extra}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env
