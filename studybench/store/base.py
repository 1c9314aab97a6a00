"""Where a store is and what can go wrong with it: the helpers every store module uses.

Why a module of their own: the store's modules import them, and the package imports its
modules; kept in ``__init__`` they closed an import cycle (``store`` -> ``writer`` -> ``store``).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

#: The first bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"


class StoreError(RuntimeError):
    """A store that cannot be used; the message names it and what to do."""


class StoreMissing(StoreError):
    """A read found no store at the URI (nothing was created)."""


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or ``sqlite:///<cwd>/results/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path.cwd() / 'results' / 'mlflow.db').resolve()}"


def local_path(uri: str) -> Path | None:
    """The file or folder of a local store (``sqlite:///`` or ``file:``), else None (a server)."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("file:"):
        return Path(uri.removeprefix("file://").removeprefix("file:"))
    if "://" not in uri:
        return Path(uri)
    return None


def require_existing(uri: str) -> None:
    """Raise ``StoreMissing`` when ``uri`` is a local store that does not exist (and create nothing)."""
    path = local_path(uri)
    if path is not None and not path.exists():
        raise StoreMissing(
            f"no MLflow store at {path} (tracking URI {uri}): run the study first "
            "(`studybench run STUDY.yaml`) from the folder that holds results/, or pass --tracking-uri "
            "(or set MLFLOW_TRACKING_URI) to the store the study was run with"
        )
    check_store_file(uri)  # a FIFO or garbage file: a message, not minutes of retries


def quiet_mlflow() -> None:
    """No "View run at" lines and no alembic chatter in our output."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # its ERROR repeats, traceback and all, an exception that reaches us anyway (and is said once: a full disk)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def check_store_file(uri: str) -> None:
    """``StoreError`` when an existing SQLite store is no SQLite file (MLflow would retry it for minutes).

    A link to a store is followed (a user may keep the store elsewhere); a FIFO is not waited on.
    """
    path = local_path(uri)
    if path is None or not uri.startswith("sqlite:///") or not os.path.lexists(path):
        return
    fix = "point --tracking-uri (or MLFLOW_TRACKING_URI) at the store, or move this one aside for `run` to create anew"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise StoreError(f"cannot open the MLflow store {path}: {err.strerror}; {fix}") from None
    try:
        head = os.read(fd, len(SQLITE_HEADER)) if stat.S_ISREG(os.fstat(fd).st_mode) else None
    finally:
        os.close(fd)
    if head is None:
        raise StoreError(f"the MLflow store {path} is not a file (a folder, FIFO or device); {fix}")
    if head and head != SQLITE_HEADER:
        raise StoreError(f"the MLflow store {path} is not an SQLite database; {fix}")
