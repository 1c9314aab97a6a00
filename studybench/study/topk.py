"""``tune.select: {top_k: K, seeds: [...]}``: each fold's K best trials re-run with extra seeds before choosing.

Why: the best of B single-seed trials is partly the luckiest one (the winner's curse): its seed
happened to suit it. Re-running the K best with more seeds and choosing by the mean over seeds
lets a lucky trial fall back. The re-runs are tuning runs like the trials (phase ``tune``, the
trial's index, trained and scored on the tuning split), so resume, claims and every executor
work on them; which trials are re-run is read from the store's scores, so a study killed during
the re-runs re-runs the same ones. ``tuning.choose_trial`` then lets only the trials with the most
seeds compete.
"""

from __future__ import annotations

import math
from typing import Any

from studybench.study.keys import keyed_spec
from studybench.study.spec import RunSpec


def top_trials(trials: list[RunSpec], scores: dict[str, list[float]], k: int) -> list[RunSpec]:
    """Each fold's ``k`` trials with the best finished score (ties: the lower index), in fold order."""
    folds: dict[str, list[RunSpec]] = {}
    for trial in trials:
        folds.setdefault(trial.fold, []).append(trial)
    out = []
    for members in folds.values():
        scored = [(t, _mean(scores.get(t.key, []))) for t in members]
        ranked = sorted((pair for pair in scored if math.isfinite(pair[1])), key=lambda p: (-p[1], p[0].trial))
        out += [t for t, _ in ranked[:k]]
    return out


def rerun_specs(select: Any, trials: list[RunSpec], scores: dict[str, list[float]]) -> list[RunSpec]:
    """The re-runs of each fold's ``select.top_k`` best trials, one per extra seed of ``select.seeds``.

    A seed equal to the trial's own is that trial (left out). ``scores``: run key -> finished scores
    of ``trials`` (the single-seed trials).
    """
    out = []
    for trial in top_trials(trials, scores, select.top_k):
        fields = {"study": trial.study, "method": trial.method, "axes": trial.axes, "named_by": trial.named_by}
        for seed in (s for s in select.seeds if s != trial.seed):
            out.append(
                keyed_spec(trial.config, seed, groups=trial.groups, phase=trial.phase, trial=trial.trial, **fields)
            )
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values and all(math.isfinite(v) for v in values) else math.nan
