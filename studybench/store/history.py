"""Per-epoch curves of many runs, read in bulk.

``MlflowClient.get_metric_history`` answers one run and one metric per request: a report of
500 runs with 6 curves each made 3,000 of them. A database store (SQLite, PostgreSQL) can
answer one metric for many runs in one query (``get_metric_history_bulk`` of MLflow's
SQLAlchemy store, ordered like the per-run history); a store behind a tracking server has no
such call in MLflow's client, so there the runs are read one by one as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

#: Runs per bulk query: well under SQLite's limit on the variables of one statement.
RUNS_PER_QUERY = 500
#: No limit in practice: every value of a metric of the runs of one query.
ALL_VALUES = 2**31 - 1


def metric_histories(client: Any, keys_by_run: dict[str, list[str]]) -> Iterator[tuple[str, str, int, float]]:
    """``(run_id, key, step, value)`` for every logged value of each run's ``keys`` (runs in the order
    given, then keys in sorted order, then the values in the order the run logged them)."""
    bulk = getattr(_tracking_store(client), "get_metric_history_bulk", None)
    if bulk is None:
        yield from _one_by_one(client, keys_by_run)
        return
    run_ids = list(keys_by_run)
    rank = {run_id: i for i, run_id in enumerate(run_ids)}
    rows: list[tuple[str, str, int, float]] = []
    for key in sorted({k for keys in keys_by_run.values() for k in keys}):
        for start in range(0, len(run_ids), RUNS_PER_QUERY):
            found = bulk(run_ids[start : start + RUNS_PER_QUERY], key, max_results=ALL_VALUES)
            rows += [(m.run_id, key, int(m.step), float(m.value)) for m in found if key in keys_by_run[m.run_id]]
    yield from sorted(rows, key=lambda row: rank[row[0]])  # stable: keys stay sorted, values in logging order


def _one_by_one(client: Any, keys_by_run: dict[str, list[str]]) -> Iterator[tuple[str, str, int, float]]:
    for run_id, keys in keys_by_run.items():
        for key in sorted(keys):
            for m in client.get_metric_history(run_id, key):
                yield run_id, key, int(m.step), float(m.value)


def _tracking_store(client: Any) -> Any:
    """The store object behind ``client`` (MLflow keeps it on its tracking client), or None."""
    return getattr(getattr(client, "_tracking_client", None), "store", None)
