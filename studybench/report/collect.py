"""MLflow -> one tidy DataFrame (one row per run). Reads only: a report never trains."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from studybench.store import StudyReader
from studybench.store.history import metric_histories
from studybench.store.layout import (
    ARTIFACT_SAMPLES,
    CURVE_TRAIN_PREFIX,
    CURVE_VAL_MIOU,
    PARAM_AXIS_PREFIX,
    TAG_DATASET,
    TAG_DEVICE,
    TAG_ERROR,
    TAG_EVAL_LABELS,
    TAG_GIT_COMMIT,
    TAG_GROUPS,
    TAG_HOST,
    TAG_KEY,
    TAG_METHOD,
    TAG_PHASE,
    TAG_SEED,
    TAG_TORCH,
    TAG_TRIAL,
    TAG_VERSION,
)
from studybench.store.reader import Snapshot

#: Columns every report can rely on (NaN where a run did not log them).
ID_COLUMNS = ["run", "run_id", "run_key", "method", "arch", "encoder", "dataset", "seed", "groups", "status"]


def collect_runs(
    store: StudyReader, keys: Iterable[str] | None = None, finished_only: bool = True, snapshot: Snapshot | None = None
) -> pd.DataFrame:
    """The latest FINISHED MLflow run per run key (optionally only ``keys``), as a tidy frame.

    With ``finished_only`` (the default) a key's newest *finished* run is used, so a later
    duplicate of a finished run that is still running, failed or was killed (two processes on
    one study) neither hides the finished result nor enters the report; without it, the newest
    run of each key whatever its status.

    Columns: identity (``ID_COLUMNS``), ``axis.*`` (the grid values that named the run),
    the final metrics (``miou``, ``pixel_acc``, ``mean_acc``, ``iou/<class>``, costs), and
    every logged param under ``param.<dotted key>``. ``snapshot``: the store as already read (else
    it is read now).
    """
    wanted = set(keys) if keys is not None else None
    rows = []
    for key, run in (snapshot or store.snapshot()).by_key(finished_only).items():
        if wanted is not None and key not in wanted:
            continue
        rows.append(_row(key, run))
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=ID_COLUMNS)
    return frame.sort_values(["dataset", "method", "arch", "seed", "run"], kind="stable").reset_index(drop=True)


def _row(key: str, run: Any) -> dict[str, Any]:
    """One run as a flat row: identity, final metrics, ``param.*`` and ``axis.*`` columns."""
    tags, params = run.data.tags, run.data.params
    row = {
        "run": run.info.run_name,
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,  # the UI's run links need it (ui.run_url)
        "run_key": key,
        "method": tags.get(TAG_METHOD, params.get("method")),
        "arch": params.get("model.arch"),
        "encoder": params.get("model.encoder"),
        "dataset": tags.get(TAG_DATASET, params.get("data.dataset")),
        "seed": int(params.get("seed", tags.get(TAG_SEED, -1))),
        "groups": tags.get(TAG_GROUPS, ""),
        "phase": tags.get(TAG_PHASE, ""),  # a tuned study's "tune" trial or "final" seed; "" otherwise
        "trial": int(tags[TAG_TRIAL]) if tags.get(TAG_TRIAL, "").isdigit() else -1,
        "status": run.info.status,
        "error": tags.get(TAG_ERROR, ""),
        "start_time": run.info.start_time,
        "git_commit": tags.get(TAG_GIT_COMMIT, ""),
        "version": tags.get(TAG_VERSION, ""),
        "host": tags.get(TAG_HOST, ""),
        "eval_labels": tags.get(TAG_EVAL_LABELS, ""),
        "setup": setup_of(tags, params),
    }
    row.update(run.data.metrics)
    row.update({f"param.{k}": v for k, v in params.items() if not k.startswith(PARAM_AXIS_PREFIX)})
    row.update({k: v for k, v in params.items() if k.startswith(PARAM_AXIS_PREFIX)})
    return row


def setup_of(tags: dict[str, str], params: dict[str, str]) -> str:
    """What a run's float results depend on beyond its key: device, torch and, on a CPU, its thread count.

    One run key gives other numbers on another GPU or CPU vector ISA, another torch, or (on a
    CPU) another number of threads; on a GPU the threads only feed it. "" for runs that
    predate the device tag.
    """
    device = tags.get(TAG_DEVICE, "")
    if not device:
        return ""
    setup = f"{device} · torch {tags.get(TAG_TORCH, '?')}"
    on_cpu = " CPUs" in device  # writer.environment_tags: "<model> (<n> CPUs, <ISA>)" on a CPU
    if not on_cpu:
        return setup
    threads = params.get("train.threads", "?")
    return f"{setup} · {threads} thread{'' if threads == '1' else 's'}"


def in_group(frame: pd.DataFrame, group: str) -> pd.Series:
    """Rows whose ``studybench.groups`` tag names ``group`` (``main`` or an ablation)."""
    return frame["groups"].fillna("").map(lambda g: group in str(g).split(","))


def parse_value(text: Any) -> Any:
    """A logged param string back to its value (``"3"`` -> 3, ``"[1, 2]"`` -> [1, 2], ``"null"`` -> None)."""
    if not isinstance(text, str):
        return text
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):  # a param of [[[...: PyYAML recurses once per level
        return text


def label(value: Any) -> str:
    """Short, stable text for a param or axis value (dict axes show their ``name`` or ``arch``)."""
    value = parse_value(value)
    if isinstance(value, dict):
        for key in ("name", "arch", "encoder"):
            if isinstance(value.get(key), str):
                return value[key]
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, (dict, list)):
        return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return str(value)


def param_values(frame: pd.DataFrame, key: str) -> pd.Series:
    """Parsed values of the dotted config ``key`` (e.g. ``loss.radius``) for every row (None if absent)."""
    col = f"param.{key}"
    if col not in frame:
        return pd.Series([None] * len(frame), index=frame.index, dtype=object)
    return frame[col].map(parse_value)


def main_axes(frame: pd.DataFrame) -> list[str]:
    """Grid axes besides dataset, method and arch that name main-grid cells (``axis.*`` columns).

    An axis whose labels equal the arch (e.g. a ``model`` axis of ``{arch: unet, ...}`` entries)
    is already the ``arch`` column and is left out.
    """
    main = frame[in_group(frame, "main")]
    out = []
    for col in sorted(c for c in frame.columns if c.startswith(PARAM_AXIS_PREFIX)):
        if col.removeprefix(PARAM_AXIS_PREFIX) in ("dataset", "method") or main[col].isna().all():
            continue
        labels = main[col].map(label)
        if (labels == main["arch"].astype(str)).all():
            continue
        out.append(col)
    return out


def histories(
    store: StudyReader, run_ids: Iterable[str], prefixes: tuple[str, ...] = (CURVE_VAL_MIOU, CURVE_TRAIN_PREFIX)
) -> pd.DataFrame:
    """Per-epoch curves of the runs: long frame ``run_id, key, step, value`` for keys matching ``prefixes``
    (read in bulk: one query per curve name, see ``store.history``)."""
    wanted = {}
    for run_id in dict.fromkeys(run_ids):
        wanted[run_id] = [key for key in store.run(run_id).data.metrics if key.startswith(prefixes)]
    rows = list(metric_histories(store.client, wanted))
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])


def samples(store: StudyReader, run_id: str, artifact: str = ARTIFACT_SAMPLES) -> dict[str, np.ndarray]:
    """The ``samples.npz`` a run logged (image [N,3,H,W], target, pred, class_names, palette)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = store.client.download_artifacts(run_id, artifact, tmp)
        with np.load(Path(path), allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


__all__ = [
    "ID_COLUMNS",
    "TAG_KEY",
    "collect_runs",
    "histories",
    "in_group",
    "label",
    "main_axes",
    "param_values",
    "parse_value",
    "samples",
]
