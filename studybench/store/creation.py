"""Creating a local SQLite store: whole or not at all, from a checked copy of a cached empty store.

A new store is made in a temporary file under a lock and renamed into place, so two
processes starting at once never race on MLflow's schema migration, and a kill at any
moment leaves no half-made store (the next ``run`` simply creates it again).

MLflow builds a schema by running its ~60 migrations (2-4 s of CPU), so the first creation
on a machine caches an empty store (``empty_store_template``) that later ones copy. The
cache is outside the project and anyone may have put anything there: a file of garbage, a
link, a FIFO, an older MLflow's schema, or a store holding a finished run (which would then
appear in every new study). So the template is checked before use and the copy checked
again (``template_problem``): a regular file, opened without following links, an SQLite
database at the installed MLflow's schema head, with no run and no experiment but
"Default". A bad template is rebuilt; a cache that cannot be used (read-only, its lock held
by a stopped process) only costs the migrations.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable
from contextlib import closing, contextmanager
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from studybench.store.base import SQLITE_HEADER, StoreError, check_store_file, local_path, quiet_mlflow

#: Seconds to wait for the cache's lock (a build takes seconds) before building without the cache.
CACHE_LOCK_TIMEOUT_S = 30.0
#: Seconds to wait for a store's creation lock before saying which lock file is held.
STORE_LOCK_TIMEOUT_S = 300.0

#: Tables of an empty MLflow store that hold rows: the schema version, "Default" and its workspace.
_FILLED_TABLES = {"alembic_version": None, "experiments": [(0, "Default")], "workspaces": None}


class LockTimeout(TimeoutError):
    """A creation lock stayed held longer than the caller waits (its holder may be stopped)."""


def ensure_store(uri: str) -> None:
    """Create the local store at ``uri`` if it does not exist (atomically); check it is writable."""
    path = local_path(uri)
    if path is None:
        return  # a tracking server owns its store
    path = path.resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(f"cannot create the store folder {path.parent}: {err.strerror}") from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise StoreError(f"the MLflow store {path} is not writable: fix its permissions or pass --tracking-uri")
    if path.exists():
        check_store_file(uri)
        return
    if not uri.startswith("sqlite:///"):
        return
    try:
        _create_once(path, lambda temp: _copy_empty_store(temp, path.parent), STORE_LOCK_TIMEOUT_S)
    except LockTimeout as err:
        raise StoreError(
            f"{err}: another process is creating the store {path} and has not finished "
            "(is it stopped, e.g. by Ctrl-Z? resume or end it); if no process uses the store, delete the lock file"
        ) from None
    except OSError as err:
        raise StoreError(f"cannot create the store {path}: {err}") from None


def _create_once(path: Path, make: Callable[[Path], None], timeout_s: float) -> None:
    """Create ``path`` by ``make(temporary path)`` and a rename, under a lock, unless another process did first."""
    with _locked(path.with_name(path.name + ".lock"), timeout_s):
        if path.exists():
            return  # another process created it while we waited
        _make_atomically(path, make)


def _make_atomically(path: Path, make: Callable[[Path], None]) -> None:
    """``make`` into a temporary file beside ``path``, then rename it over ``path`` (the caller holds the lock)."""
    for stale in path.parent.glob(path.name + ".creating-*"):
        stale.unlink(missing_ok=True)  # left by a process killed while creating
    temp = path.with_name(f"{path.name}.creating-{os.getpid()}")
    make(temp)
    os.replace(temp, path)


def _copy_empty_store(temp: Path, folder: Path) -> None:
    """A copy of the cached template, checked again after copying; MLflow's migrations when there is none."""
    template = empty_store_template()
    if template is None or not _copy_regular_file(template, temp) or template_problem(temp) is not None:
        temp.unlink(missing_ok=True)
        _build_schema(temp)
    _place_default_experiment(temp, folder)


def empty_store_template() -> Path | None:
    """The checked empty store of the installed MLflow, (re)built when missing or bad; None if it cannot be cached.

    The file is keyed by MLflow's version (an upgrade builds a new one) and lives in
    ``$XDG_CACHE_HOME/studybench`` (default ``~/.cache/studybench``).
    """
    import mlflow

    cache = cache_folder()
    template = cache / f"empty-store-mlflow-{mlflow.__version__}.db"
    if template_problem(template) is None:
        return template
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with _locked(cache / f"{template.name}.lock", CACHE_LOCK_TIMEOUT_S):
            if template_problem(template) is not None:  # not rebuilt by another process while we waited
                _remove(template)
                _make_atomically(template, _build_schema)
    except Exception:  # noqa: BLE001 - a read-only home, a held lock, a full disk: build each store itself
        return None
    return template if template_problem(template) is None else None


def cache_folder() -> Path:
    """studybench's folder in this machine's cache: ``$XDG_CACHE_HOME/studybench`` or ``~/.cache/studybench``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "studybench"


def _remove(path: Path) -> None:
    """Remove a bad template whatever it is, never following a link (a link is removed, not its target)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def template_problem(path: Path) -> str | None:
    """Why ``path`` is not an empty store of the installed MLflow; None if it is one."""
    handle = _open_regular(path)
    if handle is None:
        return "missing, or not a regular file (a link, a FIFO, a folder)"
    with handle:
        if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            return "not an SQLite database"
    try:
        return _schema_problem(path)
    except sqlite3.Error as err:
        return f"not a readable SQLite database ({err})"


def _schema_problem(path: Path) -> str | None:
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        if db.execute("PRAGMA quick_check").fetchone() != ("ok",):
            return "damaged"
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"alembic_version", "experiments"} <= tables:
            return "not an MLflow store"
        head = db.execute("SELECT version_num FROM alembic_version").fetchall()
        if head != [(mlflow_schema_head(),)]:
            return f"schema {head} is not the installed MLflow's ({mlflow_schema_head()})"
        if db.execute("SELECT experiment_id, name FROM experiments").fetchall() != _FILLED_TABLES["experiments"]:
            return "holds experiments beside Default"
        for table in sorted(tables - set(_FILLED_TABLES)):
            if db.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchone() is not None:
                return f"holds rows in {table}"
    return None


@lru_cache(maxsize=1)
def mlflow_schema_head() -> str:
    """The newest migration of the installed MLflow: the schema version an empty store of it has."""
    import mlflow.store
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(Path(mlflow.store.__file__).parent / "db_migrations")).get_current_head()


def _copy_regular_file(source: Path, target: Path) -> bool:
    """Copy ``source`` if it is a regular file (never through a link or from a FIFO); False otherwise."""
    handle = _open_regular(source)
    if handle is None:
        return False
    with handle, open(target, "xb") as out:
        shutil.copyfileobj(handle, out)
    return True


def _open_regular(path: Path) -> BinaryIO | None:
    """``path`` opened for reading if it is a regular file; None if missing, a link, a FIFO or a folder.

    ``O_NOFOLLOW`` refuses a link, ``O_NONBLOCK`` keeps a FIFO from blocking the open, and the
    type is checked on the open file itself (not on a name that could change in between).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def _build_schema(path: Path) -> None:
    quiet_mlflow()
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments(max_results=1)


def _place_default_experiment(store: Path, folder: Path) -> None:
    """Point MLflow's "Default" experiment of a new store at the store's own folder.

    MLflow puts it under the working directory of whoever built the schema; studybench never
    uses it, but someone logging there by hand should find the files beside the store.
    """
    location = (folder / "artifacts" / "Default").as_uri()
    with closing(sqlite3.connect(store)) as db, db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (location,))


@contextmanager
def _locked(lock_path: Path, timeout_s: float):
    """Hold an exclusive lock on ``lock_path``; ``LockTimeout`` after ``timeout_s`` (a stopped holder never lets go).

    The lock file is opened without following a link and without blocking on a FIFO.
    """
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{lock_path} is not a regular file: delete it")
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(f"the lock {lock_path} stayed held for {timeout_s:.0f} s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
