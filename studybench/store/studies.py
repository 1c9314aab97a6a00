"""The studies a store holds: its experiments less MLflow's ``Default`` and the studies' records experiments."""

from __future__ import annotations

from typing import Any

from studybench.store.base import local_path, quiet_mlflow
from studybench.store.layout import records_experiment


def study_experiments(uri: str) -> list[Any]:
    """MLflow experiments of the studies in ``uri``, by name; none for a local store that does not exist (nothing created)."""
    path = local_path(uri)
    if path is not None and not path.exists():
        return []
    quiet_mlflow()
    from mlflow.tracking import MlflowClient

    experiments = MlflowClient(tracking_uri=uri).search_experiments(max_results=1000)
    records = {records_experiment(e.name) for e in experiments}
    return sorted((e for e in experiments if e.name not in records and e.name != "Default"), key=lambda e: e.name)


def studies_note(uri: str) -> str:
    """``"studies in this store: a, b"`` (or that it holds none), for messages about a study name."""
    names = [e.name for e in study_experiments(uri)]
    return f"studies in this store: {', '.join(names)}" if names else "this store holds no study yet"


def finished_already(uri: str, study: str, keys: list[str]) -> bool:
    """Whether every run key of ``study`` has a FINISHED run in ``uri`` (read only: a read-only store may say so)."""
    from studybench.store import StoreError, StudyReader

    try:
        finished = StudyReader(uri, study).newest_runs()[1]
    except (StoreError, OSError):
        return False
    return all(key in finished for key in keys)
