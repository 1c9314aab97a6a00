"""MLflow -> one tidy DataFrame (one row per run). Reads only: a report never trains."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from studybench.tracking import TAG_ERROR, TAG_KEY, StudyTracker

#: Columns every report can rely on (NaN where a run did not log them).
ID_COLUMNS = ["run", "run_key", "method", "arch", "encoder", "dataset", "seed", "groups", "status"]


def collect_runs(tracker: StudyTracker, keys: Iterable[str] | None = None, finished_only: bool = True) -> pd.DataFrame:
    """The latest MLflow run per run key (optionally only ``keys``), as a tidy frame.

    Columns: identity (``ID_COLUMNS``), ``axis.*`` (the grid values that named the run),
    the final metrics (``miou``, ``pixel_acc``, ``mean_acc``, ``iou/<class>``, costs), and
    every logged param under ``param.<dotted key>``.
    """
    wanted = set(keys) if keys is not None else None
    rows = []
    for key, run in tracker.latest_by_key().items():
        if wanted is not None and key not in wanted:
            continue
        if finished_only and run.info.status != "FINISHED":
            continue
        tags, params = run.data.tags, run.data.params
        row = {
            "run": run.info.run_name,
            "run_id": run.info.run_id,
            "run_key": key,
            "method": tags.get("studybench.method", params.get("method")),
            "arch": params.get("model.arch"),
            "encoder": params.get("model.encoder"),
            "dataset": tags.get("studybench.dataset", params.get("data.dataset")),
            "seed": int(params.get("seed", tags.get("studybench.seed", -1))),
            "groups": tags.get("studybench.groups", ""),
            "status": run.info.status,
            "error": tags.get(TAG_ERROR, ""),
            "start_time": run.info.start_time,
        }
        row.update(run.data.metrics)
        row.update({f"param.{k}": v for k, v in params.items() if not k.startswith("axis.")})
        row.update({k: v for k, v in params.items() if k.startswith("axis.")})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=ID_COLUMNS)
    return frame.sort_values(["dataset", "method", "arch", "seed", "run"], kind="stable").reset_index(drop=True)


__all__ = ["ID_COLUMNS", "TAG_KEY", "collect_runs"]
