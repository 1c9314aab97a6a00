"""Red team, the cached empty store: whatever sits at the cache path, a new store is a true empty store.

Every case puts something bad where ``empty-store-mlflow-<v>.db`` is cached (in a temporary
``XDG_CACHE_HOME``), creates a store as ``run`` does, and checks that the store works and is
empty, that the template was rebuilt (so the next ``run`` does not meet it again), and that
nothing outside the cache was touched. Processes are real where the process is the subject.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from studybench.store import StoreError, creation
from studybench.store.creation import empty_store_template, ensure_store, mlflow_schema_head, template_problem
from studybench.store.writer import RunLogger, StudyWriter


@pytest.fixture(scope="module")
def good_template(tmp_path_factory) -> Path:
    """One true empty store, built once for the module (2-4 s of MLflow migrations)."""
    folder = tmp_path_factory.mktemp("good")
    path = folder / "empty.db"
    creation._build_schema(path)
    assert template_problem(path) is None
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "studybench"
    folder.mkdir(parents=True)
    return folder


def _template_path(cache: Path) -> Path:
    import mlflow

    return cache / f"empty-store-mlflow-{mlflow.__version__}.db"


def _new_store_is_empty(tmp_path: Path, name: str = "study") -> Path:
    """Create a store as ``run`` does; assert it is usable, has no run and only "Default"; return it."""
    db = tmp_path / name / "mlflow.db"
    writer = StudyWriter(f"sqlite:///{db}", "s")
    writer.ensure_experiment()
    client = MlflowClient(f"sqlite:///{db}")
    names = sorted(e.name for e in client.search_experiments(view_type=3))
    assert names == ["Default", "s"]
    assert client.search_runs([e.experiment_id for e in client.search_experiments(view_type=3)]) == []
    return db


def _with_sql(good: Path, target: Path, sql: str) -> None:
    shutil.copyfile(good, target)
    with closing(sqlite3.connect(target)) as db, db:
        db.executescript(sql)


def _finished_run(good: Path, target: Path) -> None:
    """A template holding a FINISHED run with an mIoU, written by studybench's own writer."""
    shutil.copyfile(good, target)
    client = MlflowClient(f"sqlite:///{target}")
    exp = client.create_experiment("s")
    run_id = client.create_run(exp, run_name="fake").info.run_id
    logger = RunLogger(client, run_id)
    logger.log_metrics({"miou": 0.99})
    logger.finish()


def _registered_model(good: Path, target: Path) -> None:
    shutil.copyfile(good, target)
    MlflowClient(f"sqlite:///{target}").create_registered_model("planted")


def _plant(case: str, good: Path, target: Path, outside: Path) -> None:
    """Put the bad entry ``case`` at ``target``; ``outside`` is a file of the user's beside the cache."""
    data = good.read_bytes()
    if case == "garbage":
        target.write_bytes(os.urandom(4096))
    elif case == "truncated":
        target.write_bytes(data[: len(data) // 3])
    elif case == "empty":
        target.write_bytes(b"")
    elif case == "header-only":
        target.write_bytes(b"SQLite format 3\x00" + b"\x00" * 1000)
    elif case == "other-schema":
        with closing(sqlite3.connect(target)) as db, db:
            db.execute("CREATE TABLE notes (text TEXT)")
    elif case == "older-mlflow-schema":
        _with_sql(good, target, "UPDATE alembic_version SET version_num = 'a8c4a736bde6'")
    elif case == "symlink-to-a-user-file":
        target.symlink_to(outside)
    elif case == "symlink-to-a-good-store":
        shutil.copyfile(good, outside)
        target.symlink_to(outside)
    elif case == "dangling-symlink":
        target.symlink_to(outside.parent / "nothing-here")
    elif case == "fifo":
        os.mkfifo(target)
    elif case == "directory":
        target.mkdir()
        (target / "inside.txt").write_text("x")
    elif case == "finished-run":
        _finished_run(good, target)
    elif case == "extra-experiment":
        _with_sql(
            good, target, "INSERT INTO experiments (experiment_id, name, lifecycle_stage) VALUES (7, 'x', 'active')"
        )
    elif case == "registered-model":
        _registered_model(good, target)
    elif case == "no-default-experiment":
        _with_sql(good, target, "DELETE FROM experiments")


CASES = [
    "garbage",
    "truncated",
    "empty",
    "header-only",
    "other-schema",
    "older-mlflow-schema",
    "symlink-to-a-user-file",
    "symlink-to-a-good-store",
    "dangling-symlink",
    "fifo",
    "directory",
    "finished-run",
    "extra-experiment",
    "registered-model",
    "no-default-experiment",
]


@pytest.fixture
def quick_rebuild(good_template, monkeypatch):
    """Rebuild by copying the module's MLflow-built empty store (the migrations once, not once per case);
    ``test_a_cache_holding_a_finished_run_is_rebuilt_by_mlflow`` runs the real migrations."""
    monkeypatch.setattr(creation, "_build_schema", lambda path: shutil.copyfile(good_template, path))


@pytest.mark.parametrize("case", CASES)
def test_a_bad_cached_template_is_rebuilt_never_copied(case, good_template, cache, tmp_path, quick_rebuild):
    target, outside = _template_path(cache), tmp_path / "users-file.txt"
    outside.write_text("mine")
    _plant(case, good_template, target, outside)
    before = outside.read_bytes()
    assert template_problem(target) is not None  # the check sees the problem
    _new_store_is_empty(tmp_path, "first")
    assert not target.is_symlink() and target.is_file() and template_problem(target) is None  # rebuilt
    assert outside.read_bytes() == before  # a link was never followed
    _new_store_is_empty(tmp_path, "second")  # and the next run copies the good one


def test_a_cache_holding_a_finished_run_is_rebuilt_by_mlflow(good_template, cache, tmp_path):
    _finished_run(good_template, _template_path(cache))
    db = _new_store_is_empty(tmp_path)
    assert db.is_file() and template_problem(_template_path(cache)) is None


def test_the_check_accepts_the_installed_mlflow_template_and_names_the_schema(good_template, tmp_path):
    older = tmp_path / "older.db"
    _with_sql(good_template, older, "UPDATE alembic_version SET version_num = 'a8c4a736bde6'")
    assert mlflow_schema_head() in template_problem(older) and "a8c4a736bde6" in template_problem(older)


def test_a_stale_half_built_template_is_cleaned(good_template, cache, tmp_path):
    stale = cache / (_template_path(cache).name + ".creating-999999")
    stale.write_bytes(b"half")
    _new_store_is_empty(tmp_path)
    assert not stale.exists() and template_problem(_template_path(cache)) is None


def _hold_lock_and_stop(lock: Path) -> subprocess.Popen:
    """A real child that takes ``lock`` and is then stopped (SIGSTOP): it never lets go by itself."""
    code = (
        "import fcntl, sys, time\n"
        f"h = open({str(lock)!r}, 'a'); fcntl.flock(h, fcntl.LOCK_EX); print('held', flush=True); time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    os.kill(child.pid, signal.SIGSTOP)
    return child


def _end(child: subprocess.Popen) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)


def test_a_cache_lock_held_by_a_stopped_process_does_not_hang(good_template, cache, tmp_path, monkeypatch):
    monkeypatch.setattr(creation, "CACHE_LOCK_TIMEOUT_S", 1.0)
    (cache / (_template_path(cache).name)).write_bytes(b"garbage")  # so the lock is needed
    child = _hold_lock_and_stop(cache / f"{_template_path(cache).name}.lock")
    try:
        started = time.monotonic()
        assert empty_store_template() is None  # gave up waiting: no cache this time
        _new_store_is_empty(tmp_path)  # built by MLflow's migrations instead
        assert time.monotonic() - started < 60
    finally:
        _end(child)
    assert empty_store_template() is not None  # the lock is free again: the cache is rebuilt


def test_a_store_lock_held_by_a_stopped_process_names_the_lock(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(creation, "STORE_LOCK_TIMEOUT_S", 1.0)
    db = tmp_path / "results" / "mlflow.db"
    db.parent.mkdir()
    child = _hold_lock_and_stop(db.with_name("mlflow.db.lock"))
    try:
        with pytest.raises(StoreError, match="mlflow.db.lock.*stopped"):
            ensure_store(f"sqlite:///{db}")
    finally:
        _end(child)
    assert not db.exists()


def test_a_cache_lock_that_is_a_fifo_does_not_hang(cache, tmp_path):
    os.mkfifo(cache / f"{_template_path(cache).name}.lock")
    _new_store_is_empty(tmp_path)  # no cache this time (the lock cannot be taken), but no hang


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare for a read-only mount")
def test_a_read_only_cache_builds_each_store_itself(cache, tmp_path):
    """A real process in its own mount namespace where the cache holds garbage and is mounted read-only."""
    _template_path(cache).write_bytes(b"garbage")
    db = tmp_path / "results" / "mlflow.db"
    code = (
        "from studybench.store.creation import empty_store_template, ensure_store\n"
        f"print(empty_store_template()); ensure_store('sqlite:///{db}'); print('created')"
    )
    script = f'mount --bind {cache} {cache} && mount -o remount,ro,bind {cache} && {sys.executable} -c "$0"'
    env = {**os.environ, "XDG_CACHE_HOME": str(cache.parent)}
    done = subprocess.run(["unshare", "-m", "sh", "-c", script, code], capture_output=True, text=True, env=env)
    if done.returncode != 0 and "mount" in done.stderr and "created" not in done.stdout:
        pytest.skip(f"no read-only mount here: {done.stderr.strip()}")
    assert done.stdout.split() == ["None", "created"], done.stdout + done.stderr
    assert _template_path(cache).read_bytes() == b"garbage"  # could not be replaced: not used either
    assert template_problem(db) is None  # MLflow's own empty store


@pytest.mark.parametrize("kind", ["fifo", "folder", "garbage"])
def test_a_store_that_is_no_sqlite_file_is_named_at_once(kind, tmp_path):
    """MLflow retried such a store for minutes (a FIFO: forever) before a traceback; now: exit 2 naming it."""
    from helpers import TINY_STUDY, invoke

    db = tmp_path / "results" / "mlflow.db"
    db.parent.mkdir()
    {"fifo": os.mkfifo, "folder": Path.mkdir, "garbage": lambda p: p.write_bytes(b"x" * 100)}[kind](db)
    (tmp_path / "study.yaml").write_text(TINY_STUDY)
    for command in ("status", "run"):
        started = time.monotonic()
        result = invoke(command, str(tmp_path / "study.yaml"), cwd=tmp_path)
        assert result.returncode == 2, result.stdout + result.stderr
        assert str(db) in result.stderr and "move this one aside" in result.stderr
        assert time.monotonic() - started < 30
