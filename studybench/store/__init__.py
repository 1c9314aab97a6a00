"""The MLflow store of studybench: where it is, and the one layer that reads and writes it.

``layout`` names every tag, metric and artifact; ``reader`` reads runs and manifests (never
creates anything); ``writer`` creates experiments, training runs, manifests and report
records; ``liveness`` tells a live RUNNING run from one whose process died; ``claims``
makes sure one run key is trained by one process at a time; ``manifest`` is the expanded
grid a ``run`` was asked for, recorded so that ``report`` and ``status`` need nothing else.
"""

from __future__ import annotations

from studybench.store.base import (
    StoreError,
    StoreMissing,
    default_tracking_uri,
    local_path,
    quiet_mlflow,
    require_existing,
)
from studybench.store.reader import StudyReader
from studybench.store.writer import RunLogger, StudyWriter

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
