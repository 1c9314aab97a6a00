"""Running a tuned study: its tuning trials, the choice read back from the store, then its final seeds.

Why the choice is read from the store and not kept in memory: a study killed after its
trials (or run with ``--phase final`` on another day, or on another machine) must choose
exactly what an uninterrupted run would have chosen. Both phases go through the same
``execute`` as any study (claims, resume, every executor), so nothing here knows how runs run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from studybench.store.layout import METRIC_MIOU
from studybench.study.phases import choose_settings, final_carve, final_specs, tune_split_digests, tuning_trials
from studybench.study.spec import NAME_SEPARATOR, RunSpec

PHASES = ("tune", "final")
#: execute(specs to run, every spec the manifest should list) -> the runs' outcomes
Execute = Callable[[list[RunSpec], list[RunSpec]], list[Any]]


class PhaseError(RuntimeError):
    """The final phase cannot start: a fold has no finished trial (the message names them)."""


def run_phases(
    study: Any, defaults: list[RunSpec], source: str, phase: str | None, store: Any, execute: Execute, batch: int = 1
):
    """Run ``phase`` (``tune``, ``final`` or both when ``None``) of a study with ``tune:``; the outcomes.

    ``defaults`` are the study's runs at their configured settings (``grid.expand``); ``store`` a
    ``StudyWriter`` (parent runs, the choice, the scores); ``batch`` how many runs run at once
    (``--workers``): TPE asks that many settings per round.
    """
    trials = tuning_trials(study, defaults, source)  # TPE: each fold's trial 0 only
    outcomes: list[Any] = []
    tuning = phase in (None, "tune")
    if tuning:
        make_parents(study, trials, store)
        if study.tune.sampler == "tpe":
            trials, done = tpe_tuning(study, trials, source, store, execute, batch)
            outcomes += done
        else:
            outcomes += execute(trials, trials)
    elif study.tune.sampler == "tpe":
        trials = tpe_trials(study, trials, source, store)
    if study.tune.select is not None:  # the top K of each fold re-run with extra seeds (study.topk)
        from studybench.study.topk import rerun_specs

        reruns = rerun_specs(study.tune.select, trials, finished_scores(store, trials))
        trials = trials + reruns
        if tuning and reruns:
            outcomes += execute(reruns, trials)
    if phase == "tune":
        return outcomes
    finals = choose_finals(study, defaults, trials, store)
    return outcomes + execute(finals, trials + finals)


def make_parents(study: Any, trials: list[RunSpec], store: Any) -> None:
    """Each fold's parent run (made once), with the SHA-256 of its tuning split's image ids and the sampler."""
    firsts = [t for t in trials if t.trial == 0]
    digests = tune_split_digests(firsts)  # the same hash as the manifest's entries
    for spec in firsts:
        store.ensure_tune_parent(spec.fold, parent_name(spec), digests[spec.key], study.tune.sampler)


def tpe_tuning(
    study: Any, first: list[RunSpec], source: str, store: Any, execute: Execute, batch: int
) -> tuple[list[RunSpec], list[Any]]:
    """Every fold's ``tune.budget`` trials asked of TPE round by round; (all trials, the outcomes).

    A round first runs the trials asked before and never run by this launch (a rerun after a kill
    resumes those, so it asks next what an uninterrupted launch would); otherwise it asks each fold
    for its share of ``batch`` new settings. Between rounds every finished trial is told its tuning
    mIoU, read from the store. A trial whose run failed stays untold (pending to TPE) and is retried
    by the next launch, as a failed Sobol trial is.
    """
    from studybench.study.tpe import fold_searches, tpe_storage

    outcomes: list[Any] = []
    tried: set[str] = set()
    with _tpe_errors(), tpe_storage(store.uri, study.study) as storage:
        searches = fold_searches(storage, study, first, source)
        share = -(-max(1, batch) // len(searches))  # ceil: the round fills every worker
        while True:
            listed = [s for f in searches for s in f.specs()]
            for search in searches:
                search.tell(finished_scores(store, search.untold()))
            todo = [s for f in searches for s in f.untold() if s.key not in tried]
            if not todo:
                todo = [s for f in searches for s in f.ask(share)]
                listed = [s for f in searches for s in f.specs()]
            if not todo:
                return listed, outcomes
            todo = list({s.key: s for s in todo}.values())  # two settings TPE drew alike are one run
            outcomes += execute(todo, listed)
            tried.update(s.key for s in todo)


def tpe_trials(study: Any, first: list[RunSpec], source: str, store: Any) -> list[RunSpec]:
    """The TPE trials asked so far (``--phase final``: nothing is asked; finished trials are told)."""
    from studybench.study.tpe import fold_searches, tpe_storage

    with _tpe_errors(), tpe_storage(store.uri, study.study) as storage:
        searches = fold_searches(storage, study, first, source)
        for search in searches:
            search.tell(finished_scores(store, search.untold()))
        return [s for f in searches for s in f.specs()]


@contextmanager
def _tpe_errors() -> Iterator[None]:
    """A store TPE cannot use, or a launch already tuning: ``PhaseError`` (exit 2), nothing trained."""
    from studybench.study.tuning import TuneSamplerError

    try:
        yield
    except TuneSamplerError as err:
        raise PhaseError(str(err)) from None


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
