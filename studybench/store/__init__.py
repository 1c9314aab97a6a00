"""The MLflow store of studybench: where it is, and the one layer that reads and writes it.

``layout`` names every tag, metric and artifact; ``reader`` reads runs and manifests (never
creates anything); ``writer`` creates experiments, training runs, manifests and report
records; ``liveness`` tells a live RUNNING run from one whose process died; ``claims``
makes sure one run key is trained by one process at a time; ``manifest`` is the expanded
grid a ``run`` was asked for, recorded so that ``report`` and ``status`` need nothing else.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path


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
    from studybench.store.creation import check_store_file  # a FIFO or garbage file: a message, not minutes of retries

    check_store_file(uri)


def quiet_mlflow() -> None:
    """No "View run at" lines and no alembic chatter in our output."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)


from studybench.store.reader import StudyReader  # noqa: E402 - after the helpers they use
from studybench.store.writer import RunLogger, StudyWriter  # noqa: E402

__all__ = [
    "RunLogger",
    "StoreError",
    "StoreMissing",
    "StudyReader",
    "StudyWriter",
    "default_tracking_uri",
    "local_path",
    "quiet_mlflow",
    "require_existing",
]
