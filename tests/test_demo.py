"""`make demo` in a fresh clone leaves `git status` clean: everything it writes is git-ignored."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("git") is None, reason="needs make and git")
def test_make_demo_in_a_fresh_clone_leaves_the_checkout_clean(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    venv = Path(sys.prefix)  # this test's own environment: `-o` keeps make from reinstalling into it
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    make = ["make", "-o", f"{venv}/bin/studybench", "demo", f"VENV={venv}", "DEMO_FLAGS=--profile smoke"]
    done = subprocess.run(make, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (clone / "results" / "reports" / "quickstart" / "main.csv").is_file()
    assert (clone / "results" / "mlflow.db").is_file()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True)
    assert status.stdout == "", f"make demo changed the checkout:\n{status.stdout}"
