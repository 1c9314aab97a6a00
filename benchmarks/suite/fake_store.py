"""A store of finished runs made without training, and a count of the requests made to a store:
for timing and counting what a report reads.

Each run is what ``run`` leaves behind for the report (the tags and params of ``StudyWriter``,
per-epoch curves, final metrics and costs), with made-up numbers, written with a few
``log_batch`` calls; the study's manifest is recorded as ``run`` records it. A 2,000-run store
takes a minute or so, where training it would take hours.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from studybench import api
from studybench.store import StudyWriter
from studybench.store.layout import (
    CURVE_EPOCH_TIME,
    CURVE_LR,
    CURVE_TRAIN_PREFIX,
    CURVE_VAL_MIOU,
    METRIC_IOU_PREFIX,
    METRIC_MIOU,
    TIMING_METRICS,
)
from studybench.store.writer import identity_tags, run_params

METHODS = ("ce", "dice")
CLASSES = ("background", "road", "car", "sky")
STUDY = """\
study: {name}
description: {runs} finished runs made without training (benchmarks/suite/fake_store.py)
seeds: {seeds}
baseline: ce
base:
  data: {{dataset: synthetic, options: {{num_classes: 4, image_size: 32, train_images: 8, val_images: 4}}}}
  model: {{arch: unet, encoder: resnet18}}
  train: {{epochs: {epochs}, batch_size: 4, lr: 0.01, threads: 1}}
grid:
  method: [{methods}]
"""


def fake_store(folder: Path, runs: int, epochs: int = 3, name: str = "scale") -> tuple[Path, str]:
    """Write a study of ``runs`` runs (2 methods x runs/2 seeds) and its finished runs into
    ``folder/mlflow.db``; returns ``(study file, tracking URI)``."""
    folder.mkdir(parents=True, exist_ok=True)
    study_path = folder / "study.yaml"
    seeds = list(range(max(1, runs // len(METHODS))))
    study_path.write_text(STUDY.format(name=name, runs=runs, seeds=seeds, epochs=epochs, methods=", ".join(METHODS)))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    study, specs, _ = api.load_runs(study_path, None, check_data=False)
    writer = StudyWriter(uri, study.study)
    api.record_manifest(writer, study, specs, None, study_path)
    experiment = writer.ensure_experiment()
    rng = np.random.default_rng(0)
    for spec in specs:
        fake_run(writer.client, experiment, spec, epochs, rng)
    return study_path, uri


def fake_run(client: Any, experiment: str, spec: Any, epochs: int, rng: np.random.Generator) -> str:
    """One FINISHED run of ``spec`` with made-up curves and results (3 store calls)."""
    from mlflow.entities import Metric, Param

    run_id = client.create_run(experiment, run_name=spec.name, tags=identity_tags(spec)).info.run_id
    params = run_params(spec)
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        params=[Param(k, str(v)[:500]) for k, v in sorted(params.items())][:100],
        metrics=[Metric(k, v, now, step) for k, v, step in _values(epochs, rng)],
    )
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _values(epochs: int, rng: np.random.Generator) -> list[tuple[str, float, int]]:
    """(name, value, step): per-epoch curves, then the final metrics and costs."""
    miou = float(rng.uniform(0.3, 0.6))
    out = []
    for epoch in range(epochs):
        share = (epoch + 1) / epochs
        out += [(CURVE_VAL_MIOU, miou * share, epoch), (f"{CURVE_TRAIN_PREFIX}loss", 2.0 - share, epoch)]
        out += [(CURVE_LR, 0.01 * (1 - share), epoch), (CURVE_EPOCH_TIME, 1.0, epoch)]
    out += [(METRIC_MIOU, miou, 0), ("pixel_acc", miou + 0.3, 0), ("mean_acc", miou + 0.1, 0)]
    out += [(f"{METRIC_IOU_PREFIX}{c}", float(rng.uniform(0.1, 0.9)), 0) for c in CLASSES]
    out += [(cost, float(rng.uniform(0.5, 1.5)), 0) for cost in TIMING_METRICS]
    return out


@contextmanager
def count_requests() -> Iterator[Counter]:
    """Within the block, count the calls into MLflow's client (outermost only: one per request the
    caller makes) and the bulk history queries the store module makes beside it, by name."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking import MlflowClient

    counts: Counter = Counter()
    inside = threading.local()
    names = [n for n, f in vars(MlflowClient).items() if not n.startswith("_") and inspect.isfunction(f)]
    targets = [(MlflowClient, n) for n in names] + [(SqlAlchemyStore, "get_metric_history_bulk")]
    originals = [(owner, name, vars(owner)[name]) for owner, name in targets]
    for owner, name, real in originals:
        setattr(owner, name, _counting(real, name, counts, inside))
    try:
        yield counts
    finally:
        for owner, name, real in originals:
            setattr(owner, name, real)


def _counting(real: Any, name: str, counts: Counter, inside: threading.local) -> Any:
    @functools.wraps(real)
    def call(*args: Any, **kwargs: Any) -> Any:
        outer = not getattr(inside, "depth", 0)
        counts[name] += outer
        inside.depth = getattr(inside, "depth", 0) + 1
        try:
            return real(*args, **kwargs)
        finally:
            inside.depth -= 1

    return call
