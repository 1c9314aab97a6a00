"""The program: what each command does, as plain functions with typed arguments that return results.

``cli`` only parses flags, calls these and prints; tests and notebooks call them directly
(``validate``, ``status``, ``report``, ``rank``, ``prepare_run`` + ``run_study``). Errors are
exceptions (``StudyError``, ``UsageError``, ``StoreError``, ...), never exits or prints.

``status`` and ``report`` work on a *study view*: the study definition and the exact grid
(run keys, names, groups, axes) that it covers. The view comes from the manifest that
``run`` recorded in the store; only for a study file that was never run as it is now does it
come from expanding the file (then nothing is recorded: reading never writes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from studybench.engine.checkpoint import Checkpoints, default_checkpoint_root
from studybench.executors.plan import RunPlan, UsageError, check_options, executor_for, parse_resources, plan_runs
from studybench.store import StoreError, StudyReader, StudyWriter, default_tracking_uri
from studybench.store.layout import METRIC_MIOU, METRIC_WALL, TAG_PROFILE
from studybench.store.liveness import STATES, run_state
from studybench.store.manifest import build_manifest, file_sha256, manifest_study
from studybench.store.studies import studies_note
from studybench.study.config import Resources, Study, StudyError, load_study
from studybench.study.grid import expand, select
from studybench.study.only import why_no_match
from studybench.study.spec import RunSpec


class SelectionError(StudyError):
    """``--only`` matches no run."""


def load_runs(study_path: Path, profile: str | None, only: str | None = None, check_data: bool = True):
    """Load, validate and expand a study file: ``(study, all specs, selected specs)``; raises ``StudyError``."""
    study = load_study(study_path).under(profile)  # a profile's tune: section makes the study a tuned one
    specs = expand(study, profile, source=str(study_path), check_data=check_data)
    chosen = select(specs, only)
    if not chosen:
        terms = [t.strip() for t in (only or "").split(",") if t.strip()]
        raise SelectionError(f"--only {only!r} matches no run of {study_path}: {why_no_match(specs, terms)}")
    return study, specs, chosen


def record_manifest(store: StudyWriter, study: Study, specs: list, profile: str | None, study_path: Path) -> None:
    """Record the full grid ``run`` was asked for (before any run starts: a crash keeps it), with the
    hash of each tuned run's tuning split."""
    from studybench.study.phases import tune_split_digests

    splits = tune_split_digests(specs)
    store.record_manifest(build_manifest(study, specs, profile, Path(study_path).resolve(), splits))


@dataclass
class StudyView:
    """A study as status and report see it: its definition and the exact grid it covers."""

    study: Study
    profile: str | None
    manifest: dict[str, Any]
    recorded: bool  # read from the store (True) or expanded from the study file (False)

    @property
    def keys(self) -> list[str]:
        return [r["key"] for r in self.manifest["runs"]]


def open_view(
    uri: str, study_path: Path | None = None, study_name: str | None = None, profile: str | None = None
) -> tuple[StudyView, StudyReader]:
    """The view of a study file or of a study name (manifest only); raises ``StoreMissing``/``StudyError``."""
    if study_path is not None:
        study = load_study(study_path)
        reader = StudyReader(uri, study.study)
        manifest = reader.find_manifest(profile, file_sha256(study_path))
        if manifest is not None:
            return StudyView(manifest_study(manifest), profile, manifest, True), reader
        study = study.under(profile)
        specs = expand(study, profile, source=str(study_path), check_data=False)
        manifest = build_manifest(study, specs, profile, Path(study_path).resolve())
        return StudyView(study, profile, manifest, False), reader
    if not study_name:
        raise StudyError("name a study file, or a study with --study NAME")
    reader = StudyReader(uri, study_name)
    manifest = reader.find_manifest(profile)
    if manifest is None:
        profiles = sorted({r.data.tags.get(TAG_PROFILE, "") or "(none)" for r in reader.manifests()})
        known = (
            f"; recorded profiles: {', '.join(profiles)}"
            if profiles
            else f"; no `run` of it recorded one ({studies_note(uri)})"
        )
        raise StudyError(f"study {study_name!r} has no recorded manifest for profile {profile or '(none)'!r}{known}")
    return StudyView(manifest_study(manifest), profile, manifest, True), reader


class RunRef(NamedTuple):
    """What the checkpoint store needs of a run (a manifest entry has no ``RunSpec``)."""

    study: str
    key: str
    name: str


@dataclass
class StatusRow:
    name: str
    key: str
    state: str  # done / failed / running / pending
    note: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


def study_status(view: StudyView, reader: StudyReader, checkpoints: Any | None = None) -> list[StatusRow]:
    """One row per run of the view's grid, from the newest MLflow run of its key."""
    latest, finished = reader.newest_runs()
    rows = []
    for entry in view.manifest["runs"]:
        key = entry["key"]
        state = run_state(finished.get(key) or latest.get(key))
        note = state.note
        if checkpoints is not None and state.state in ("failed", "pending"):
            resume = checkpoints.resume_note(RunRef(view.study.study, key, entry["name"]))
            note = f"{note}; {resume}".strip("; ") if resume else note
        metrics = dict(state.run.data.metrics) if state.run is not None else {}
        # a run is what its own tags say (the manifest, writable by anyone, only lists the grid's keys)
        name = (state.run.info.run_name if state.run is not None else None) or entry["name"]
        rows.append(StatusRow(name, key, state.state, note, metrics))
    return rows


def count_states(rows: list[StatusRow]) -> dict[str, int]:
    return {s: sum(r.state == s for r in rows) for s in STATES}


def make_report(view: StudyView, reader: StudyReader, out_dir: Path, log_to_mlflow: bool = True):
    """Build the report of exactly the view's grid (see ``report.build_report``)."""
    from studybench.report import build_report

    return build_report(view, reader, out_dir, log_to_mlflow=log_to_mlflow)


# --------------------------------------------------------------------------- the commands as functions


@dataclass(frozen=True)
class Validation:
    """What ``validate`` found: the study and its runs, counted per group."""

    study: Study
    specs: list[RunSpec]
    groups: dict[str, int]  # "main" and each ablation -> runs in it

    @property
    def seeds(self) -> list[int]:
        return sorted({s.seed for s in self.specs})


def validate(study_path: Path, profile: str | None = None) -> Validation:
    """Check a study file as ``run`` would before anything is written; raises ``StudyError``."""
    study, _, specs = load_runs(study_path, profile)
    groups: dict[str, int] = {}
    for spec in specs:
        for group in spec.groups:
            groups[group] = groups.get(group, 0) + 1
    return Validation(study, specs, groups)


@dataclass(frozen=True)
class Status:
    """What ``status`` found: a row per run of the study's grid, and where its checkpoints live."""

    view: StudyView
    rows: list[StatusRow]
    checkpoint_root: Path

    @property
    def counts(self) -> dict[str, int]:
        return count_states(self.rows)

    @property
    def compute_s(self) -> float:
        """Wall seconds of the finished runs."""
        return sum(r.metrics.get(METRIC_WALL, 0.0) for r in self.rows if r.state == "done")

    def seeds_needed(self) -> list[SeedsNeeded]:
        """Per cell and method of the main grid: the seeds the baseline comparison would need (see ``SeedsNeeded``)."""
        return seeds_needed(self.view, self.rows)


@dataclass(frozen=True)
class SeedsNeeded:
    """Seeds a paired t test would need to detect the study's ``min_effect`` with 80 % power, from the
    sd of the finished runs' paired mIoU differences to the baseline (``report.evidence.seeds_needed``)."""

    cell: str  # the cell's axis values ("" when the study has one cell)
    method: str
    pairs: int  # seeds finished by both the method and the baseline
    sd: float  # sample sd of the paired differences (mIoU fraction)
    needed: float  # math.inf beyond evidence.MAX_SEEDS


def seeds_needed(view: StudyView, rows: list[StatusRow]) -> list[SeedsNeeded]:
    """``SeedsNeeded`` of every method with two or more seeds paired with the baseline's, in its main-grid cell.

    Read from the status rows (the finished runs' mIoU) and the manifest (method, seed, axes):
    no second read of the store. The report's function is imported only when there is a pair to size.
    """
    baseline = view.study.baseline
    scores: dict[str, dict[str, dict[int, float]]] = {}  # cell -> method -> seed -> mIoU
    for entry, row in zip(view.manifest["runs"], rows):
        miou = row.metrics.get(METRIC_MIOU)
        if baseline is None or row.state != "done" or miou is None or "main" not in entry["groups"]:
            continue
        cell = " · ".join(_axis_text(v) for k, v in entry["axes"].items() if k != "method" and v is not None)
        scores.setdefault(cell, {}).setdefault(entry["method"], {})[entry["seed"]] = miou
    paired = []
    for cell, methods in scores.items():
        base = methods.get(baseline, {})
        for method, by_seed in methods.items():
            diffs = [by_seed[s] - base[s] for s in by_seed if s in base]
            if method != baseline and len(diffs) >= 2:
                paired.append((cell, method, diffs))
    if not paired:
        return []
    from statistics import stdev

    from studybench.report.evidence import seeds_needed as needed_for

    delta = view.study.min_effect / 100.0
    return [SeedsNeeded(c, m, len(d), stdev(d), needed_for(stdev(d), delta)) for c, m, d in paired]


def _axis_text(value: Any) -> str:
    """An axis value as status shows it: a mapping by its name or arch, anything else as written."""
    if isinstance(value, dict):
        return str(value.get("name") or value.get("arch") or value)
    return str(value)


def status(
    uri: str,
    study_path: Path | None = None,
    study_name: str | None = None,
    profile: str | None = None,
    checkpoint_dir: Path | None = None,
) -> Status:
    """Each run of a study file's or a recorded study's grid, from the store; raises ``StoreError``/``StudyError``."""
    view, reader = open_view(uri, study_path, study_name, profile)
    checkpoints = checkpoints_at(checkpoint_dir, uri)
    return Status(view, study_status(view, reader, checkpoints), checkpoints.root)


def report(
    uri: str,
    study_path: Path | None = None,
    study_name: str | None = None,
    profile: str | None = None,
    out: Path | None = None,
):
    """Build the report of a study file's or a recorded study's grid (default folder: ``results/reports/<study>``);
    raises ``StoreError``/``StudyError``/``OutDirError``."""
    from studybench.report.destination import check_out_dir, default_out_dir

    view, reader = open_view(uri, study_path, study_name, profile)
    return make_report(view, reader, check_out_dir(out or default_out_dir(view.study.study), uri, view.study.study))


def rank(
    uri: str,
    studies: list[tuple[Path | None, str | None, str | None]],
    metric: str = "miou",
    methods: list[str] | None = None,
    baseline: str | None = None,
    out: Path | None = None,
):
    """Rank methods over the cells of ``studies`` (each ``(file, name, profile)``, file or name given):
    ``(result, tables, files written)``; raises ``RankError``/``StoreError``/``StudyError``."""
    from studybench.report.ranking import rank_studies, write_ranking

    views = [open_view(uri, path, name, profile) for path, name, profile in studies]
    result, tables = rank_studies(views, metric, methods, baseline)
    files = write_ranking(result, tables, out) if out is not None else []
    return result, tables, files


def checkpoints_at(checkpoint_dir: Path | None, uri: str) -> Checkpoints:
    """``--checkpoint-dir`` or the default root beside the store."""
    return Checkpoints(checkpoint_dir.resolve() if checkpoint_dir else default_checkpoint_root(uri))


# --------------------------------------------------------------------------- run: what is left, where, and running it


@dataclass(frozen=True)
class RunOptions:
    """How to run a study (the flags of ``studybench run``); every field has the CLI's default."""

    executor: str = "local"  # local, ray or slurm
    workers: int = 1
    ray_address: str | None = None
    resources: str | None = None  # "cpus=4,gpus=1" over the study's resources
    retries: int = 0
    checkpoint_dir: Path | None = None
    tracking_uri: str | None = None
    only: str | None = None
    phase: str | None = None  # tune or final, for a study with tune:


@dataclass(frozen=True)
class PreparedRun:
    """A study checked and ready to run: nothing is written before ``run_study``."""

    study_path: Path
    profile: str | None
    study: Study
    grid: list[RunSpec]  # every run of the study (the manifest)
    specs: list[RunSpec]  # the runs selected by --only
    uri: str
    options: RunOptions
    resources: Resources
    checkpoints: Checkpoints


def prepare_run(study_path: Path, profile: str | None = None, options: RunOptions | None = None) -> PreparedRun:
    """Check the study, the selection and the options in the order the CLI reports them; raises
    ``StudyError``, ``UsageError`` or ``UriError`` (nothing is written)."""
    from studybench.uris import check_tracking_uri

    options = options or RunOptions()
    study, grid, specs = load_runs(study_path, profile, options.only)
    if options.phase is not None and study.tune is None:
        raise UsageError(f"--phase {options.phase}: {study_path} has no tune: section (one phase only)")
    if options.only and study.tune is not None:
        raise UsageError("--only: not available for a study with tune: (every fold gets its budget)")
    uri = check_tracking_uri(options.tracking_uri or default_tracking_uri())
    check_folder(options.checkpoint_dir, "--checkpoint-dir")
    if options.executor == "ray" and not options.ray_address:  # Ray joins RAY_ADDRESS: a cluster, like --ray-address
        options = replace(options, ray_address=os.environ.get("RAY_ADDRESS") or None)
    resources = parse_resources(options.resources, study.resources)
    check_options(options.executor, options.workers, options.ray_address, uri, resources)
    checkpoints = checkpoints_at(options.checkpoint_dir, uri)
    return PreparedRun(Path(study_path), profile, study, grid, specs, uri, options, resources, checkpoints)


def check_folder(path: Path | None, flag: str) -> None:
    """``UsageError`` when ``path`` (or the nearest part of it that exists) is a file: it must be, or become, a folder."""
    existing = next((p for p in (path, *path.parents) if p.exists()), None) if path is not None else None
    if existing is not None and not existing.is_dir():
        raise UsageError(f"{existing} is a file; {flag} names a folder (created when missing)", f"invalid {flag}")


def dry_run_specs(run: PreparedRun) -> list[RunSpec]:
    """What ``run`` would start first: the runs, or a tuned study's tuning trials."""
    if run.study.tune is None:
        return run.specs
    from studybench.study.phases import tuning_trials

    return tuning_trials(run.study, run.specs, str(run.study_path))


def fewer_threads(run: PreparedRun) -> tuple[list[RunSpec], int]:
    """Runs that ``--workers`` gives fewer torch threads than their ``train.threads`` asks for, and how many they get.

    The thread count is not part of the run key, yet CPU float reductions depend on it: such a
    run's numbers differ in the last digits from a sequential run of the same key (measured:
    quickstart ``ce · fpn · s0`` mIoU 0.308211 with 2 threads, 0.307689 with 1).
    """
    if run.options.executor != "local" or run.options.workers <= 1:
        return [], 0
    from studybench.executors.pool import threads_per_worker

    threads = threads_per_worker(run.options.workers)
    return [s for s in run.specs if (s.config.train.threads or 0) > threads], threads


class RunEvents:
    """What ``run_study`` reports while it runs; the CLI prints it, the default keeps quiet."""

    def reaped(self, run: Any, why: str) -> None:
        """An MLflow run left RUNNING by a dead process was marked KILLED."""

    def planned(self, run: PreparedRun, specs: list[RunSpec], plan: RunPlan) -> None:
        """What is finished, alive elsewhere and left to run, before anything starts."""

    def display(self, total: int) -> Any:
        """The progress display the executors report to (a context manager)."""
        from rich.console import Console

        from studybench.console import RunDisplay

        return RunDisplay(total, Console(quiet=True), enabled=False)


@dataclass
class StudyResult:
    """The outcome of every run of a ``run`` (grid order), or why nothing had to run."""

    outcomes: list[Any]
    nothing_to_do: str = ""

    @property
    def failed(self) -> list[Any]:
        return [o for o in self.outcomes if o.status in ("FAILED", "KILLED")]


class Interrupted(Exception):
    """Ctrl-C during a run: running runs were marked KILLED; what finished and where each cut run resumes."""

    def __init__(self, done: int, total: int, killed: list[tuple[str, str]]) -> None:
        super().__init__(f"interrupted: {done} of {total} runs finished")
        self.done, self.total, self.killed = done, total, killed


def run_study(run: PreparedRun | Path, events: RunEvents | None = None) -> StudyResult:
    """Run every run of the study not FINISHED yet (a rerun resumes); raises ``StoreError`` when the store is
    not writable, ``Interrupted`` on Ctrl-C, ``PhaseError`` when a tuned study's final phase cannot start."""
    run = run if isinstance(run, PreparedRun) else prepare_run(run)
    events = events or RunEvents()
    store, finished = _writable_store(run)
    if store is None:
        return StudyResult(
            [], f"{run.study.study}: all {len(run.specs)} runs already finished; nothing to do ({finished})"
        )

    def execute(todo: list[RunSpec], listed: list[RunSpec]) -> list[Any]:
        record_manifest(store, run.study, listed, run.profile, run.study_path)
        return _execute(store, run, todo, events)

    if run.study.tune is None:
        outcomes = execute(run.specs, run.grid)
        order = {s.key: i for i, s in enumerate(run.specs)}
        outcomes.sort(key=lambda o: order[o.spec.key])
        return StudyResult(outcomes)
    from studybench.phased import run_phases

    phase, batch = run.options.phase, run.options.workers  # TPE asks as many settings per round as run at once
    return StudyResult(run_phases(run.study, run.specs, str(run.study_path), phase, store, execute, batch))


def _writable_store(run: PreparedRun) -> tuple[StudyWriter | None, StoreError | None]:
    """The study's store, its experiment made before any worker starts (no creation race); (None, why) when
    it is not writable and every run finished already (nothing to do)."""
    from studybench.store.full import disk_full, full_message
    from studybench.store.studies import finished_already

    try:
        store = StudyWriter(run.uri, run.study.study)
        store.ensure_experiment()
    except Exception as err:  # noqa: BLE001 - a full disk reaches us as MLflow's or SQLAlchemy's error
        if not isinstance(err, StoreError) and not disk_full(err):
            raise
        why = err if isinstance(err, StoreError) else StoreError(full_message(run.uri))
        if finished_already(run.uri, run.study.study, [s.key for s in run.specs]):
            return None, why
        raise why from None
    return store, None


def _execute(store: StudyWriter, run: PreparedRun, specs: list[RunSpec], events: RunEvents) -> list[Any]:
    """Plan ``specs`` against the store (finished, alive elsewhere, to run), run what is left, return outcomes."""
    plan = plan_runs(store, specs, run.checkpoints)
    for dead in plan.reaped:
        events.reaped(dead, "left RUNNING by a process that died; marked KILLED, resuming")
    events.planned(run, specs, plan)
    outcomes = plan.finished + plan.elsewhere
    options = run.options
    try:
        with events.display(len(plan.todo)) as display:
            if plan.todo:
                with executor_for(
                    options.executor,
                    run.uri,
                    store,
                    options.workers,
                    options.ray_address,
                    run.resources,
                    run.checkpoints,
                    options.retries,
                ) as runner:
                    outcomes += runner.run(plan.todo, display)
    except KeyboardInterrupt:
        store.reap_dead_runs()
        raise _interrupted(store, specs, run.checkpoints) from None
    for dead in store.reap_dead_runs():  # runs of workers that died without a word
        events.reaped(dead, "its worker died; marked KILLED")
    return outcomes


def _interrupted(store: StudyWriter, specs: list[RunSpec], checkpoints: Checkpoints) -> Interrupted:
    latest = store.latest_by_key()
    done = sum(run_state(latest.get(s.key)).state == "done" for s in specs)
    killed = [
        (s.name, checkpoints.resume_note(s) or "restarts from the beginning (no checkpoint yet)")
        for s in specs
        if latest.get(s.key) is not None and latest[s.key].info.status == "KILLED"
    ]
    return Interrupted(done, len(specs), killed)
