"""Red team, claims: one key is trained by one process per store, and a planted claim never hangs or escapes.

Holders are real processes (a child that takes the claim, stopped or killed); the launches
are real ``studybench run`` calls with their own ``--checkpoint-dir``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, SMALL_BASE, invoke

from studybench.api import load_runs
from studybench.engine.checkpoint import Checkpoints
from studybench.executors.local import run_tracked
from studybench.store import StudyWriter
from studybench.store.claims import ClaimError, claim, claims_folder, claims_folders

STUDY = "study: claimed\nseeds: [0]\n" + SMALL_BASE + "grid:\n  method: [ce]\n"


@pytest.fixture
def one_run(tmp_path):
    """A one-run study file, its store URI and its spec."""
    path = tmp_path / "study.yaml"
    path.write_text(STUDY)
    _, _, specs = load_runs(path, None, check_data=False)
    return path, f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}", specs[0]


def _holder(folders: Path | list[Path], key: str, stop: bool = False) -> subprocess.Popen:
    """A real child holding the claim on ``key`` in ``folders`` (SIGSTOPped with ``stop``)."""
    paths = [str(f) for f in (folders if isinstance(folders, list) else [folders])]
    code = (
        "import time; from pathlib import Path; from studybench.store.claims import claim\n"
        f"with claim([Path(f) for f in {paths!r}], {key!r}) as mine:\n    print(mine, flush=True); time.sleep(600)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "True"
    if stop:
        os.kill(child.pid, signal.SIGSTOP)
    return child


def _end(child: subprocess.Popen) -> None:
    child.kill()
    child.wait(timeout=30)


def test_claims_follow_the_store_not_the_checkpoint_root(tmp_path):
    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    assert claims_folder(uri, "s", tmp_path / "a") == claims_folder(uri, "s", tmp_path / "b")
    assert claims_folder(uri, "s") == tmp_path / "results" / ".claims" / "mlflow.db" / "s"
    other = f"sqlite:///{tmp_path / 'results' / 'other.db'}"
    assert claims_folder(other, "s") != claims_folder(uri, "s")  # two stores in one folder: two sets of claims
    # a server store: under the checkpoint root (launches on one server share --checkpoint-dir)
    assert claims_folder("http://127.0.0.1:5000", "s", tmp_path / "a") == tmp_path / "a" / ".claims" / "s"
    assert claims_folder("http://127.0.0.1:5000", "s") is None


def test_a_server_store_is_claimed_on_this_machine_whatever_the_checkpoint_dir(tmp_path, monkeypatch):
    """Two launches on one machine against one server, with different --checkpoint-dir: the second one's claim
    fails on the machine-wide claim that a real child holds."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    uri = "http://127.0.0.1:5999"
    first, second = claims_folders(uri, "s", tmp_path / "a"), claims_folders(uri, "s", tmp_path / "b")
    assert first[0] == second[0] and first[0].is_relative_to(tmp_path / "cache")  # shared on this machine
    assert first[1] == tmp_path / "a" / ".claims" / "s" and second[1] == tmp_path / "b" / ".claims" / "s"
    assert claims_folders("http://other:5999", "s")[0] != first[0]
    holder = _holder(first, "k")
    try:
        with claim(second, "k") as mine:
            assert mine is False
    finally:
        _end(holder)
    with claim(second, "k") as mine:
        assert mine is True


def test_without_a_writable_cache_a_server_store_keeps_the_checkpoint_root_claim(tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    assert claims_folders("http://127.0.0.1:5999", "s", tmp_path / "a") == [tmp_path / "a" / ".claims" / "s"]


def test_a_launch_with_another_checkpoint_dir_leaves_a_claimed_key_to_its_holder(one_run, tmp_path):
    """The first launch (a real process, its checkpoints in a/) holds the key; `run --checkpoint-dir b` skips it."""
    study, uri, spec = one_run
    first = _holder(claims_folder(uri, spec.study, tmp_path / "a"), spec.key)
    try:
        second = invoke("run", str(study), "--tracking-uri", uri, "--checkpoint-dir", str(tmp_path / "b"), cwd=tmp_path)
    finally:
        _end(first)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "running in another process" in second.stdout
    assert StudyWriter(uri, spec.study).runs() == []  # not trained a second time


def test_a_claim_held_by_a_stopped_process_is_left_to_it_at_once(one_run, tmp_path):
    _, uri, spec = one_run
    holder = _holder(claims_folder(uri, spec.study), spec.key, stop=True)
    try:
        started = time.monotonic()
        outcome = run_tracked(spec, StudyWriter(uri, spec.study), checkpoints=Checkpoints(tmp_path / "c"))
        assert outcome.status == "RUNNING" and time.monotonic() - started < 30
    finally:
        _end(holder)


def _plant(kind: str, path: Path, outside: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dangling-link":
        path.symlink_to(outside)
    elif kind == "link-to-a-user-file":
        outside.write_text("mine")
        path.symlink_to(outside)


@pytest.mark.parametrize("kind", ["folder", "fifo", "dangling-link", "link-to-a-user-file"])
def test_a_planted_claim_fails_its_run_with_a_message(kind, one_run, tmp_path):
    _, uri, spec = one_run
    path, outside = claims_folder(uri, spec.study) / f"{spec.key}.claim", tmp_path / "outside.txt"
    _plant(kind, path, outside)
    before = outside.read_bytes() if outside.exists() else None
    started = time.monotonic()
    outcome = run_tracked(spec, StudyWriter(uri, spec.study))  # no hang on a FIFO
    assert time.monotonic() - started < 30
    assert outcome.status == "FAILED" and str(path) in outcome.error and "delete it" in outcome.error
    assert (outside.read_bytes() if outside.exists() else None) == before  # nothing created or written outside
    assert StudyWriter(uri, spec.study).runs() == []  # nothing trained under a claim not held


def test_a_claims_folder_that_is_a_file_is_named(tmp_path):
    folder = tmp_path / "claims"
    folder.write_text("")
    with pytest.raises(ClaimError, match="claims folder .*claims"), claim(folder, "k"):
        pass


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare for a read-only mount")
def test_a_read_only_claims_folder_is_a_message_not_a_traceback(tmp_path):
    """A real process in its own mount namespace, where the claims folder is mounted read-only (EROFS)."""
    folder = tmp_path / "claims"
    folder.mkdir()
    code = (
        "from pathlib import Path; from studybench.store.claims import ClaimError, claim\n"
        f"try:\n    with claim(Path({str(folder)!r}), 'k') as mine:\n        print('claimed', mine)\n"
        "except ClaimError as err:\n    print('refused:', err)"
    )
    script = f'mount --bind {folder} {folder} && mount -o remount,ro,bind {folder} && {sys.executable} -c "$0"'
    done = subprocess.run(["unshare", "-m", "sh", "-c", script, code], cwd=REPO, capture_output=True, text=True)
    if "mount" in done.stderr and done.returncode != 0 and "refused" not in done.stdout:
        pytest.skip(f"no read-only mount here: {done.stderr.strip()}")
    assert done.stdout.startswith("refused:"), done.stdout + done.stderr
    assert str(folder) in done.stdout and "not a writable folder" in done.stdout and "Traceback" not in done.stderr
