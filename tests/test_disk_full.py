"""A full disk under the store and the checkpoints: clear message, true run states, nothing left behind."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from helpers import SMALL_BASE, invoke
from mlflow.tracking import MlflowClient

STUDY = (
    """\
study: full
seeds: [0]
"""
    + SMALL_BASE
    + """\
grid:
  method: [ce, dice]
"""
)


def can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.fixture
def small_disk(tmp_path):
    """A 40 MB tmpfs: room for the store, not for a U-Net checkpoint with its Adam state (~135 MB)."""
    if not can_mount():
        pytest.skip("needs root and mount(8) to create a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(disk)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_full_disk_fails_runs_cleanly_and_a_rerun_after_freeing_space_finishes(small_disk, tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(STUDY)
    uri = f"sqlite:///{small_disk / 'results' / 'mlflow.db'}"
    full = invoke("run", str(study), "--tracking-uri", uri, cwd=tmp_path)
    output = " ".join((full.stdout + full.stderr).split())
    assert full.returncode == 1, output
    assert f"no space left on {small_disk / 'results' / 'checkpoints' / 'full'}" in output
    assert "MB free" in output and "Traceback" not in output
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("full").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]  # both attempted, none left RUNNING
    assert not list(small_disk.rglob("*.tmp*"))

    subprocess.run(["mount", "-o", "remount,size=1g", str(small_disk)], check=True)
    again = invoke("run", str(study), "--tracking-uri", uri, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    finished = [r for r in client.search_runs([client.get_experiment_by_name("full").experiment_id])]
    assert sorted(r.info.status for r in finished) == ["FAILED", "FAILED", "FINISHED", "FINISHED"]
    assert not list(small_disk.rglob("*.tmp*"))
