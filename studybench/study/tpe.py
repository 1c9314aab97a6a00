"""``sampler: tpe``: each fold's trials asked of Optuna's TPE, told the scores of the trials before them.

Why ask-and-tell and not Optuna's ``optimize``: studybench's own runs are the trials. A trial is a
``RunSpec`` with a canonical key like a Sobol trial, run by the same ``execute`` (claims, resume,
every executor); Optuna only proposes settings and keeps what it proposed and what it was told.

Why the settings are read back from Optuna's storage: a rerun after ``kill -9`` re-creates the
trials asked before the kill with the same values, hence the same run keys, so nothing trains
twice. Each ask uses a sampler seeded from ``tune.seed``, the fold's search and the trial's number,
so a trial's setting depends only on the seed and on the trials told before it (and how many were
pending): a resumed study asks what an uninterrupted one would have asked.

Storage sits next to the MLflow store: a journal file beside a SQLite store (one per study), or a
schema of its own in the PostgreSQL database of a database store (``mlflow`` and ``optuna`` both
keep an ``alembic_version`` table, so they cannot share one schema). An http tracking server
hides its database from the driver: TPE is refused there.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from studybench.study.spec import RunSpec
from studybench.study.tuning import Knob, TuneCfg, TuneSamplerError

#: PostgreSQL schema that holds Optuna's tables in a database store (beside MLflow's).
OPTUNA_SCHEMA = "studybench_optuna"


class TpeError(TuneSamplerError):
    """TPE cannot run here (a store whose database the driver cannot reach, a launch already tuning)."""


def distribution(knob: Knob, kind: type) -> Any:
    """The Optuna distribution that draws ``knob``'s values of the declared type ``kind``."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if knob.choices is not None:
        return CategoricalDistribution(knob.choices)
    if kind is int:
        return IntDistribution(math.ceil(knob.low), math.floor(knob.high), log=knob.log)
    return FloatDistribution(float(knob.low), float(knob.high), log=knob.log)


# --------------------------------------------------------------------------- storage next to the MLflow store


def journal_path(uri: str, study: str) -> Path | None:
    """``<store folder>/optuna/<store file>/<study>.journal`` for a local store; None for a server."""
    from studybench.names import file_stem
    from studybench.store.base import local_path

    path = local_path(uri)
    if path is None:
        return None
    return path.resolve().parent / "optuna" / path.name / f"{file_stem(study)}.journal"


@contextmanager
def tpe_storage(uri: str, study: str) -> Iterator[Any]:
    """Optuna's storage for ``study``, held by this launch alone while it asks and tells.

    Beside a SQLite store: a journal file, and an ``flock`` on its sibling ``.driver-lock`` (dropped
    by the kernel when the process dies, so a kill never blocks the rerun); a second launch that
    finds it held is refused. A PostgreSQL store: Optuna's tables in their own schema.
    """
    journal = journal_path(uri, study)
    if journal is not None:
        journal.parent.mkdir(parents=True, exist_ok=True)
        with _driver_lock(journal.with_suffix(".driver-lock"), study):
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            yield JournalStorage(JournalFileBackend(str(journal)))
        return
    yield _database_storage(uri)


@contextmanager
def _driver_lock(path: Path, study: str) -> Iterator[None]:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TpeError(
                f"{study}: another launch is tuning this study with TPE now (it holds {path}); TPE asks each "
                "setting after the scores before it, so one launch drives it: wait for that one, or give it "
                "more --workers"
            ) from None
        yield
    finally:
        os.close(fd)


def _database_storage(uri: str) -> Any:
    """Optuna's ``RDBStorage`` in the schema ``OPTUNA_SCHEMA`` of a PostgreSQL store (created if missing)."""
    scheme = uri.split("://", 1)[0].lower()
    if scheme.split("+")[0] != "postgresql":
        raise TpeError(
            f"sampler: tpe keeps Optuna's trials next to the MLflow store, which the driver must reach: a SQLite "
            f"file or a PostgreSQL database URI; {scheme}:// is neither (an http tracking server hides its "
            "database). Use --tracking-uri sqlite:///... or postgresql://..., or sampler: sobol"
        )
    import sqlalchemy
    from optuna.storages import RDBStorage

    engine = sqlalchemy.create_engine(uri)
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"CREATE SCHEMA IF NOT EXISTS {OPTUNA_SCHEMA}"))
    finally:
        engine.dispose()
    options = {"connect_args": {"options": f"-csearch_path={OPTUNA_SCHEMA}"}}
    return RDBStorage(uri, engine_kwargs=options)


# --------------------------------------------------------------------------- one fold's search


def search_name(trial0: RunSpec, knobs: dict[str, Knob], seed: int) -> str:
    """The Optuna study of one fold: its id plus a digest of what defines the search (the configured
    setting's run key, the knobs, the seed), so a changed space starts a new search, not a mixed one.
    The budget is left out: raising it continues the same search."""
    what = {"key": trial0.key, "knobs": {k: v.model_dump() for k, v in knobs.items()}, "seed": seed}
    digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{trial0.fold}-{digest}"


def ask_seed(seed: int, name: str, number: int) -> int:
    """The sampler seed of trial ``number`` of search ``name``: the same on every launch."""
    return int(hashlib.sha256(f"{seed}:{name}:{number}".encode()).hexdigest()[:8], 16)


class FoldSearch:
    """One fold's TPE search: its trials as RunSpecs (read from storage), asked and told."""

    def __init__(self, storage: Any, trial0: RunSpec, tune: TuneCfg, knobs: dict[str, Knob], kinds: dict[str, type]):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.trial0, self.tune = trial0, tune
        self.distributions = {key: distribution(knob, kinds[key]) for key, knob in knobs.items()}
        self.name = search_name(trial0, knobs, tune.seed)
        self.study = optuna.create_study(
            storage=storage, study_name=self.name, direction="maximize", load_if_exists=True
        )
        if not self.study.get_trials(deepcopy=False):  # trial 0 = the configured setting, as with Sobol
            from studybench.study.phases import knob_value

            self.study.enqueue_trial({key: knob_value(trial0.config, key) for key in knobs})

    def specs(self, states: tuple | None = None) -> list[RunSpec]:
        """The trials asked so far (of ``states``), as run specs (trial index = Optuna's trial number)."""
        trials = self.study.get_trials(deepcopy=False, states=states)
        return [self._spec(t) for t in trials if t.number == 0 or set(self.distributions) <= set(t.params)]

    def untold(self) -> list[RunSpec]:
        """The trials asked and not yet told a score (running, failed, or cut by a kill)."""
        from optuna.trial import TrialState

        return self.specs((TrialState.RUNNING,))

    def left(self) -> int:
        return max(0, self.tune.budget - len(self.study.get_trials(deepcopy=False)))

    def ask(self, n: int) -> list[RunSpec]:
        """Ask TPE for ``n`` more settings (at most the budget left); their specs."""
        from optuna.samplers import TPESampler

        numbers = []
        for _ in range(min(n, self.left())):
            number = len(self.study.get_trials(deepcopy=False))
            with warnings.catch_warnings():  # multivariate is "experimental"; a default outside the range warns
                warnings.simplefilter("ignore")
                seed = ask_seed(self.tune.seed, self.name, number)
                self.study.sampler = TPESampler(seed=seed, multivariate=True, constant_liar=True)
                numbers.append(self.study.ask(self.distributions).number)
        trials = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        return [self._spec(trials[number]) for number in numbers]

    def tell(self, scores: dict[str, list[float]]) -> None:
        """Tell every untold trial whose run finished its mean score (``scores``: run key -> scores); a
        finished run without a finite score is a failed trial (TPE learns nothing from it)."""
        from optuna.trial import TrialState

        for spec in self.untold():
            values = scores.get(spec.key) or []
            if not values:
                continue
            if all(math.isfinite(v) for v in values):
                self.study.tell(spec.trial, sum(values) / len(values))
            else:
                self.study.tell(spec.trial, state=TrialState.FAIL)

    def _spec(self, trial: Any) -> RunSpec:
        from studybench.study.phases import trial_spec

        if trial.number == 0:  # the configured setting exactly as listed up front (same key as Sobol's trial 0)
            return self.trial0
        values = {key: trial.params[key] for key in self.distributions}
        return trial_spec(self.trial0, self.tune, values, trial.number)


def fold_searches(storage: Any, study: Any, first: list[RunSpec], source: str) -> list[FoldSearch]:
    """One ``FoldSearch`` per fold of ``first`` (each fold's trial 0, from ``phases.tuning_trials``)."""
    from studybench.study.phases import check_knobs, method_knobs

    own = method_knobs(study, source)
    searches = []
    for trial0 in first:
        knobs = {**study.tune.space, **own.get(trial0.method, {})}
        searches.append(FoldSearch(storage, trial0, study.tune, knobs, check_knobs(trial0, knobs)))
    return searches
