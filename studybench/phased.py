"""Running a tuned study: its tuning trials, the choice read back from the store, then its final seeds.

Why the choice is read from the store and not kept in memory: a study killed after its
trials (or run with ``--phase final`` on another day, or on another machine) must choose
exactly what an uninterrupted run would have chosen. Both phases go through the same
``execute`` as any study (claims, resume, every executor), so nothing here knows how runs run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from studybench.store.layout import METRIC_MIOU
from studybench.study.phases import choose_settings, final_carve, final_specs, tuning_trials
from studybench.study.spec import NAME_SEPARATOR, RunSpec

PHASES = ("tune", "final")
#: execute(specs to run, every spec the manifest should list) -> the runs' outcomes
Execute = Callable[[list[RunSpec], list[RunSpec]], list[Any]]


class PhaseError(RuntimeError):
    """The final phase cannot start: a fold has no finished trial (the message names them)."""


def run_phases(study: Any, defaults: list[RunSpec], source: str, phase: str | None, store: Any, execute: Execute):
    """Run ``phase`` (``tune``, ``final`` or both when ``None``) of a study with ``tune:``; the outcomes.

    ``defaults`` are the study's runs at their configured settings (``grid.expand``); ``store`` a
    ``StudyWriter`` (parent runs, the choice, the scores).
    """
    trials = tuning_trials(study, defaults, source)
    outcomes: list[Any] = []
    if phase in (None, "tune"):
        from studybench.data.carve import tuning_split_digest  # lists the training files (torch: datasets)

        digests: dict[str, str] = {}  # one listing per distinct data section
        for spec in (t for t in trials if t.trial == 0):
            section = spec.config.data.model_dump_json()
            if section not in digests:
                digests[section] = tuning_split_digest(spec.config.data)
            store.ensure_tune_parent(spec.fold, parent_name(spec), digests[section])
        outcomes += execute(trials, trials)
        if phase == "tune":
            return outcomes
    finals = choose_finals(study, defaults, trials, store)
    return outcomes + execute(finals, trials + finals)


def choose_finals(study: Any, defaults: list[RunSpec], trials: list[RunSpec], store: Any) -> list[RunSpec]:
    """The final seeds of every fold at the setting its finished trials chose (recorded on its parent run)."""
    try:
        choices = choose_settings(study, trials, finished_scores(store, trials))
    except ValueError as err:
        raise PhaseError(str(err)) from None
    for fold, choice in choices.items():
        store.record_choice(fold, choice.values, choice.trial)
    return final_specs(defaults, {fold: c.values for fold, c in choices.items()}, final_carve(study.tune))


def finished_scores(store: Any, specs: list[RunSpec]) -> dict[str, list[float]]:
    """run key -> [mIoU] of its newest FINISHED run (empty when it has none yet)."""
    latest = store.latest_by_key(finished_only=True)
    scores: dict[str, list[float]] = {}
    for spec in specs:
        run = latest.get(spec.key)
        value = run.data.metrics.get(METRIC_MIOU) if run is not None else None
        scores[spec.key] = [float(value)] if value is not None else []
    return scores


def parent_name(trial: RunSpec) -> str:
    """``focal · unet · tuning``: the trial's name without trial and seed."""
    return NAME_SEPARATOR.join([*trial.name.split(NAME_SEPARATOR)[:-2], "tuning"])
