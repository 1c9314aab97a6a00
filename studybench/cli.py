"""``studybench`` command line: run, status, report, ui, bench, validate.

Parses flags, calls ``api`` (the program), prints; nothing else. Exit codes: 0 every run finished; 1 a run
failed or was killed (the others still ran); 2 the study, the options or the store are
invalid (nothing ran, nothing was written to MLflow); 130 interrupted (Ctrl-C; the same
command resumes).
"""

from __future__ import annotations

import os
import re
import sys
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from studybench.encoding import fall_back_to_ascii

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Fair, reproducible comparison studies of segmentation losses."
)
fall_back_to_ascii()  # a console that cannot encode run names (ce · unet · s0) gets ASCII, not a crash
#: Width when output goes to a file or pipe (rich's default of 80 columns cuts run names in logs).
_PIPE_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
console = Console(width=_PIPE_WIDTH)
err_console = Console(stderr=True, width=_PIPE_WIDTH)


def _no_type_beside_flags() -> None:
    """typer 0.29's rich help prints ``<bool>`` beside flags that take no value (``--dry-run <bool>``); drop it."""
    from typer.core import TyperOption

    show_type = getattr(TyperOption, "display_type_rich", None)
    if show_type is None:  # another typer: nothing to mend
        return

    def display_type_rich(self, ctx):  # noqa: ANN001 - typer's signature
        return None if self.is_flag else show_type(self, ctx)

    TyperOption.display_type_rich = display_type_rich


_no_type_beside_flags()


def _print_version(value: bool) -> None:
    if value:
        from studybench import __version__

        console.print(f"studybench {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _app(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Fair, reproducible comparison studies of segmentation losses."""


StudyArg = typer.Argument(..., help="Study YAML file, e.g. studies/quickstart.yaml", show_default=False)
ProfileOpt = typer.Option(None, "--profile", "-p", help="Profile of the study to apply (e.g. smoke).")
UriOpt = typer.Option(
    None, "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///results/mlflow.db)."
)
CheckpointOpt = typer.Option(
    None,
    "--checkpoint-dir",
    help="Per-epoch checkpoints (default: $STUDYBENCH_CHECKPOINTS or checkpoints/ beside the store).",
)


class PhaseName(str, Enum):
    tune = "tune"
    final = "final"


class ExecutorName(str, Enum):
    local = "local"
    ray = "ray"
    slurm = "slurm"


def _fail(title: str, err: Exception | str) -> typer.Exit:
    """Print ``title: err`` on stderr; the caller raises the returned exit 2."""
    from rich.markup import escape

    # escaped: an install hint such as pip install 'studybench[slurm]' is not a style tag; soft-wrapped:
    # a path or command in the message stays on one line to copy, however narrow the terminal or log
    err_console.print(f"[red]{title}[/]\n{escape(str(err))}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _studied(what, *args):
    """``what(*args)`` for a command that loads a study file; on any problem print it and exit 2."""
    from studybench.api import SelectionError
    from studybench.study.config import StudyError

    try:
        return what(*args)
    except SelectionError as err:
        raise _fail("invalid selection", err) from None
    except StudyError as err:
        raise _fail("invalid study", err) from None


def _uri(tracking_uri: str | None) -> str:
    from studybench.store import default_tracking_uri
    from studybench.uris import UriError, check_tracking_uri

    try:
        return check_tracking_uri(tracking_uri or default_tracking_uri())
    except UriError as err:
        raise _fail("invalid tracking URI", err) from None


def _reading(what, *args, **kwargs):
    """``what(*args, **kwargs)`` for a command that reads a study; a missing store or a bad study exits 2."""
    from studybench.store import StoreError
    from studybench.study.config import StudyError

    try:
        return what(*args, **kwargs)
    except StoreError as err:
        raise _fail("no store", err) from None
    except StudyError as err:
        raise _fail("invalid study", err) from None


def _one_study(study_path: Path | None, study_name: str | None) -> None:
    if (study_path is None) == (study_name is None):
        raise _fail("invalid arguments", "give either a study file or --study NAME (one of them)")


@app.command()
def run(
    study_path: Path = StudyArg,
    profile: str | None = ProfileOpt,
    executor: ExecutorName = typer.Option(ExecutorName.local, "--executor", help="local (this machine), ray or slurm."),
    workers: int = typer.Option(1, "--workers", min=1, help="Runs at once on this machine (threads are split)."),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster address (default: start a local Ray)."
    ),
    resources: str | None = typer.Option(
        None, "--resources", help="Per-run Ray request, e.g. 'cpus=4,gpus=1' (default: the study's resources)."
    ),
    retries: int = typer.Option(
        0, "--retries", min=0, help="Re-run a run that failed transiently (OOM, CUDA/connection error) up to K times."
    ),
    checkpoint_dir: Path | None = CheckpointOpt,
    tracking_uri: str | None = UriOpt,
    only: str | None = typer.Option(None, "--only", help="Filter runs: 'method=rmi,seed=0' or a run-name substring."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the runs that would run, then stop."),
    phase: PhaseName | None = typer.Option(
        None, "--phase", help="A study with tune: runs its tuning trials, then its final seeds; run only one phase."
    ),
) -> None:
    """Run every run of a study that is not FINISHED yet, tracking each in MLflow (a rerun resumes)."""
    from studybench import api

    options = api.RunOptions(
        executor.value,
        workers,
        ray_address,
        resources,
        retries,
        checkpoint_dir,
        tracking_uri,
        only,
        phase and phase.value,
    )
    prepared = _prepared(study_path, profile, options)
    _warn_fewer_threads(prepared)
    if dry_run:
        _print_dry_run(prepared)
        return
    result = _run_study(prepared)
    if result.nothing_to_do:
        console.print(result.nothing_to_do, highlight=False)
        return
    from studybench.console import summary_table

    console.print(summary_table(result.outcomes))
    if result.failed:
        console.print(
            f"[red]{len(result.failed)} run(s) did not finish[/]; tracebacks are in each run's error.txt artifact "
            "(studybench ui); rerun the same command to run them again (from their checkpoints)."
        )
        raise typer.Exit(1)


def _prepared(study_path: Path, profile: str | None, options):
    """``api.prepare_run``; on any problem print it and exit 2."""
    from studybench import api
    from studybench.uris import UriError

    try:
        return api.prepare_run(study_path, profile, options)
    except api.SelectionError as err:
        raise _fail("invalid selection", err) from None
    except api.StudyError as err:
        raise _fail("invalid study", err) from None
    except UriError as err:
        raise _fail("invalid tracking URI", err) from None
    except api.UsageError as err:
        raise _fail(err.title, err) from None


def _print_dry_run(prepared) -> None:
    """The runs ``run`` would start (a tuned study: its tuning trials), with their keys."""
    from studybench import api

    specs = api.dry_run_specs(prepared)
    tune = prepared.study.tune
    if tune is not None and tune.sampler == "tpe":
        console.print(
            f"{prepared.study.study}: {tune.budget} tuning trials per fold, chosen adaptively by TPE "
            f"(trial 0 of each of the {len(specs)} folds below), then {len(prepared.specs)} final runs (dry run)"
        )
    elif tune is not None:
        console.print(
            f"{prepared.study.study}: {len(specs)} tuning trials, then {len(prepared.specs)} final runs (dry run)"
        )
    table = Table(title=f"{prepared.study.study}: {len(specs)} runs (dry run, tracking at {prepared.uri})")
    for column in ("run", "key", "groups"):
        table.add_column(column)
    for spec in specs:
        table.add_row(spec.name, spec.key, ",".join(spec.groups))
    console.print(table)


def _run_study(prepared):
    """``api.run_study`` with progress on the console; store, Ray and phase problems exit 2, Ctrl-C 130."""
    from studybench import api
    from studybench.executors.ray import RayNotLocal
    from studybench.phased import PhaseError
    from studybench.store import StoreError

    try:
        return api.run_study(prepared, _ConsoleEvents())
    except api.Interrupted as stop:
        _print_resume_hint(stop)
        raise typer.Exit(130) from None
    except StoreError as err:
        raise _fail("store not writable", err) from None
    except RayNotLocal as err:  # refused before any run started
        raise _fail("local Ray instance refused", err) from None
    except PhaseError as err:
        raise _fail("the final phase cannot start", err) from None


class _ConsoleEvents:
    """``api.RunEvents`` printed: reaped runs, the plan, progress bars (or a line per run every ~30 s in logs)."""

    def reaped(self, run, why: str) -> None:
        console.print(f"[yellow]{run.info.run_name}[/]: {why}")

    def planned(self, prepared, specs: list, plan) -> None:
        parts = [f"{len(specs)} runs", f"{len(plan.finished)} already finished", f"{len(plan.todo)} to run"]
        if plan.resumable:
            parts.append(f"{len(plan.resumable)} of them from a checkpoint")
        if plan.elsewhere:
            parts.append(f"{len(plan.elsewhere)} running in another process")
        options = prepared.options
        where = options.executor + (f", {options.workers} workers" if options.workers > 1 else "")
        console.print(
            f"[bold]{prepared.study.study}[/]: {', '.join(parts)}; tracking at {prepared.uri}; executor {where}"
        )

    def display(self, total: int):
        from studybench.console import RunDisplay, progress_every_s

        bars = sys.stdout.isatty() or bool(os.environ.get("STUDYBENCH_PROGRESS"))
        every_s = None if bars else progress_every_s()  # logs (CI, nohup, Slurm): a line per run every ~30 s
        return RunDisplay(total, console, enabled=bars, every_s=every_s)


def _print_resume_hint(stop) -> None:
    """After Ctrl-C: what is done, what was cut (and from which epoch it resumes), and the command to resume."""
    import shlex

    console.print(
        f"[yellow]interrupted[/]: {stop.done} of {stop.total} runs finished; running runs were marked KILLED."
    )
    for name, resume in stop.killed:
        console.print(f"  {name}: KILLED; {resume}")
    command = " ".join(shlex.quote(arg) for arg in ["studybench", *sys.argv[1:]])
    console.print(f"Resume with: {command}")


OptionalStudyArg = typer.Argument(
    None, help="Study YAML file (or give --study NAME to use what the store recorded)", show_default=False
)
StudyNameOpt = typer.Option(
    None, "--study", help="A study name in the store: use the grid its last `run` recorded (no YAML needed)."
)


@app.command()
def status(
    study_path: Path | None = OptionalStudyArg,
    profile: str | None = ProfileOpt,
    study_name: str | None = StudyNameOpt,
    tracking_uri: str | None = UriOpt,
    checkpoint_dir: Path | None = typer.Option(None, "--checkpoint-dir", help="Where `run` keeps checkpoints."),
) -> None:
    """Each run of the study: done / failed / running / pending, from MLflow."""
    from studybench import api
    from studybench.store.layout import METRIC_MIOU, METRIC_WALL

    uri = _uri(tracking_uri)
    _one_study(study_path, study_name)
    found = _reading(api.status, uri, study_path, study_name, profile, checkpoint_dir)
    table = Table(title=f"{found.view.study.study}: {len(found.rows)} runs")
    for col in ("run", "state", "mIoU", "wall s", "note"):
        table.add_column(col)
    for row in found.rows:
        miou, wall = row.metrics.get(METRIC_MIOU), row.metrics.get(METRIC_WALL)
        table.add_row(
            row.name,
            row.state,
            "-" if miou is None else f"{miou:.4f}",
            "-" if wall is None else f"{wall:.1f}",
            row.note,
        )
    console.print(table)
    counts = found.counts
    line = ", ".join(f"{n} {state}" for state, n in counts.items())
    complete = counts["done"] == len(found.rows)
    console.print(f"{line}; {'study complete, total' if complete else 'so far'} compute time {found.compute_s:.1f} s")
    _print_seeds_needed(found)
    _print_slurm_jobs(found.view.study.study, found.checkpoint_root)


def _print_seeds_needed(found) -> None:
    """Seeds needed per method vs the baseline (80 % power at min_effect), where two or more seeds pair up."""
    from studybench.report.evidence import seeds_text

    rows = found.seeds_needed()
    if not rows:
        return
    study = found.view.study
    console.print(
        f"seeds needed to detect {study.min_effect:g} pp vs {study.baseline} with 80% power "
        "(paired t, alpha 0.05; from the sd of the finished seeds' differences, rough with few seeds):",
        highlight=False,
    )
    for row in rows:
        where = f"{row.cell}: " if row.cell else ""
        console.print(
            f"  {where}{row.method} {seeds_text(row.needed)} (sd {100 * row.sd:.2f} pp over {row.pairs} pairs)",
            highlight=False,
        )


def _print_slurm_jobs(study: str, checkpoint_root: Path) -> None:
    """The study's Slurm jobs still queued or running (by job id) and where their logs are, if it used Slurm."""
    from studybench.executors.slurm import queued_jobs, slurm_folder

    folder = slurm_folder(checkpoint_root, study)
    if not folder.is_dir():
        return
    jobs = queued_jobs(folder, study)
    console.print(f"Slurm: {len(jobs)} job(s) queued or running; logs in {folder}/", highlight=False)
    for job_id, state, name in jobs:
        console.print(f"  {job_id} {state} {name}", highlight=False)


@app.command()
def report(
    study_path: Path | None = OptionalStudyArg,
    profile: str | None = ProfileOpt,
    study_name: str | None = StudyNameOpt,
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: results/reports/<study>)."),
    tracking_uri: str | None = UriOpt,
) -> None:
    """Rebuild a study's report (tables and figures) from the MLflow store alone, in results/reports/<study>/."""
    from studybench import api
    from studybench.report.destination import OutDirError

    uri = _uri(tracking_uri)
    _one_study(study_path, study_name)
    try:
        result = _reading(api.report, uri, study_path, study_name, profile, out)
    except OutDirError as err:
        raise _fail("invalid --out", err) from None
    for warning in result.warnings:
        err_console.print(f"[yellow]warning[/]: {warning}", highlight=False)
    for problem in result.problems:
        err_console.print(f"[yellow]{problem}[/]", highlight=False)
    if not result.files:  # nothing to report (no finished run): like a missing store, nothing was written
        raise typer.Exit(2)
    console.print(f"report of {result.runs} runs written to {result.out_dir}/ ({len(result.files)} files)")


@app.command()
def ui(
    tracking_uri: str | None = UriOpt,
    port: int = typer.Option(5000, "--port", min=1, max=65535, help="Port on 127.0.0.1 (1-65535)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Server processes (one is plenty for one person)."),
    access_log: bool = typer.Option(
        False, "--access-log", help="Print a line per HTTP request (off: a quiet terminal)."
    ),
) -> None:
    """Open the MLflow UI on our store, bound to 127.0.0.1 (no request log, no job runner, no warnings)."""
    from studybench.store import StoreMissing, require_existing
    from studybench.ui import study_links, ui_command

    uri = _uri(tracking_uri)
    if not re.match(r"^(sqlite|postgresql|mysql|file):", uri) and "://" in uri:
        console.print(f"{uri} is a tracking server already: open it in a browser.")
        return
    try:
        require_existing(uri)  # an empty store made here would show nothing
    except StoreMissing as err:
        raise _fail("nothing to show", err) from None
    cmd, env = ui_command(uri, port, workers, access_log)
    console.print(f"MLflow UI on http://127.0.0.1:{port} (store {uri}); Ctrl-C to stop")
    for study, url in study_links(uri, port):  # open on the runs table, in Model training mode
        console.print(f"  {study}: {url}", highlight=False, soft_wrap=True)
    sys.stdout.flush()
    os.execve(sys.executable, cmd, env)


@app.command()
def validate(study_path: Path = StudyArg, profile: str | None = ProfileOpt) -> None:
    """Check a study (keys, types, names, data presence) and print its expanded grid size."""
    from studybench import api

    found = _studied(api.validate, study_path, profile)
    study, specs = found.study, found.specs
    console.print(
        f"[green]valid[/]: {study_path} -> study {study.study!r}{f' (profile {profile})' if profile else ''}: {len(specs)} runs"
    )
    console.print(
        f"  seeds {found.seeds}; datasets {sorted({s.dataset for s in specs})}; methods {sorted({s.method for s in specs})}"
    )
    for name, count in found.groups.items():
        console.print(f"  {name}: {count} runs")
    if study.tune is not None:
        folds = len({s.fold for s in specs})
        how = ", chosen adaptively by TPE" if study.tune.sampler == "tpe" else ""
        console.print(
            f"  tuning first: budget {study.tune.budget} trials per fold{how}: x {folds} (method, cell) folds = "
            f"{study.tune.budget * folds} trials on a split carved from the training data, then the {len(specs)} "
            "runs at each chosen setting"
        )
    if study.tune is not None and study.tune.select is not None:
        select, first = study.tune.select, specs[0].seed  # the trials' seed
        extra = [s for s in select.seeds if s != first]
        console.print(
            f"  before choosing: each fold's {select.top_k} best trials re-run with seeds {extra} "
            f"({folds * select.top_k * len(extra)} runs), the best mean over seeds chosen"
        )


@app.command()
def bench(
    losses: str | None = typer.Option(
        None, "--losses", help="Comma-separated cases (e.g. ce,rmi,lad-k5,sr,dml) or registered losses; default all."
    ),
    sizes: str | None = typer.Option(
        None, "--sizes", help="Comma-separated BxCxS sizes (batch x classes x side); the first is the main table's."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    out: Path | None = typer.Option(
        None, "--out", help="Output folder (default: reports/bench; with --quick: results/bench-quick, git-ignored)."
    ),
    quick: bool = typer.Option(
        False, "--quick", help="Tiny grid, under a minute on 2 cores: timings, sweeps, loaders (no memory, no harness)."
    ),
    repeats: int | None = typer.Option(None, "--repeats", min=1, help="Timed rounds (default 3; 1 with --quick)."),
    threads: int = typer.Option(2, "--threads", min=1, help="torch threads."),
    skip: str | None = typer.Option(
        None, "--skip", help="Comma-separated parts to skip: memory,sweeps,schemes,harness,loaders."
    ),
    harness: bool = typer.Option(
        False, "--harness", help="Only the harness vs a bare PyTorch loop: steps/s, ratio, host syncs per step."
    ),
) -> None:
    """Cost of every loss (time, memory, share of a training step) and of the harness: reports/bench/."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from studybench.bench import load_or_exit  # the suite is in benchmarks/suite, outside the package

    select_cases, page, runner = load_or_exit("cases").select_cases, load_or_exit("page"), load_or_exit("runner")
    summary, write_report, QUICK_OUT = page.summary, page.write_report, runner.QUICK_OUT
    count_work, make_plan, run_bench = runner.count_work, runner.make_plan, runner.run_bench

    def split(text: str | None) -> list[str]:
        return [t.strip() for t in (text or "").split(",") if t.strip()]

    if device not in ("cpu", "cuda"):
        err_console.print(f"[red]invalid --device[/]: {device!r}; use cpu or cuda")
        raise typer.Exit(2)
    if harness:
        parts = load_or_exit("harness")
        HARNESS_ONLY, harness_table, measure_harness = parts.HARNESS_ONLY, parts.harness_table, parts.measure_harness

        rounds = repeats or 9  # 9 rounds: a 96 % interval of the median ratio
        result = measure_harness(rounds, **HARNESS_ONLY, threads=threads, device=device)
        console.print(harness_table(result), markup=False, highlight=False)
        return
    try:
        loss_cases, scheme_cases = select_cases(split(losses) or None)
        plan = make_plan(
            loss_cases, scheme_cases, split(sizes) or None, device, quick, repeats, threads, set(split(skip))
        )
    except ValueError as err:
        err_console.print(f"[red]invalid bench options[/]: {err}", highlight=False)
        raise typer.Exit(2) from None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("bench", total=count_work(plan))
        result = run_bench(plan, lambda what: progress.update(task, advance=1, description=what))
    out = out or (QUICK_OUT if quick else Path("reports/bench"))
    _print_bench(summary(result), write_report(result, out), out)


def _print_bench(info: dict, files: list, out: Path) -> None:
    """The bench's main table, the losses over the 5 % goal, the harness ratio and where the files went."""
    console.print(info["main_table"], markup=False, highlight=False)
    if info["over_goal"]:
        console.print(f"at or over 5 % of a U-Net-resnet18 step: {', '.join(info['over_goal'])}", markup=False)
    if info["harness_ratio"] is not None:
        console.print(f"harness steps/s ratio (studybench / bare): {info['harness_ratio']:.2f}")
    console.print(f"{len(files)} files written to {out}/")


StudyArgs = typer.Argument(None, help="Study YAML files (or give --study NAME, repeatable)", show_default=False)


@app.command("rank")
def rank_methods(
    study_paths: list[Path] | None = StudyArgs,
    study_names: list[str] | None = typer.Option(
        None,
        "--study",
        help="A study name in the store (repeatable); NAME@PROFILE for its own profile, NAME@ for none.",
    ),
    profile: str | None = ProfileOpt,
    metric: str = typer.Option("miou", "--metric", help="Final metric to rank by (costs rank lowest first)."),
    methods: str | None = typer.Option(
        None, "--methods", help="Comma-separated methods to rank (default: those present in every cell)."
    ),
    baseline: str | None = typer.Option(
        None, "--baseline", help="Method for win/tie/loss (default: the studies' baseline when they agree)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Also write the tables and the CD diagram to this folder."),
    tracking_uri: str | None = UriOpt,
) -> None:
    """Rank methods over every (dataset, arch, ...) cell of one or more studies: average ranks, Friedman, CD."""
    from studybench import api
    from studybench.report.ranking import RankError

    uri = _uri(tracking_uri)
    studies = [(p, None, profile) for p in study_paths or []]
    studies += [(None, *study_and_profile(n, profile)) for n in study_names or []]
    if not studies:
        raise _fail("invalid arguments", "give study files and/or --study NAME")
    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    try:
        _, tables, files = _reading(api.rank, uri, studies, metric, chosen, baseline, out)
    except RankError as err:
        raise _fail("cannot rank", err) from None
    for table in tables:
        shown = Table(title=table.title)
        for col in table.display.columns:
            shown.add_column(str(col))
        for row in table.display.astype(str).itertuples(index=False):
            shown.add_row(*row)
        console.print(shown)
        console.print(table.note, highlight=False)
    if out is not None:
        console.print(f"{len(files)} files written to {out}/")


def _warn_fewer_threads(prepared) -> None:
    """Say when ``--workers`` gives runs fewer torch threads than their ``train.threads`` asks for (``api.fewer_threads``)."""
    from studybench.api import fewer_threads
    from studybench.executors.pool import cpu_count

    fewer, threads = fewer_threads(prepared)
    if fewer:
        asked = sorted({s.config.train.threads for s in fewer})
        console.print(
            f"[yellow]warning[/]: {len(fewer)} run(s) ask for train.threads={'/'.join(map(str, asked))} but "
            f"--workers {prepared.options.workers} gives each {threads} thread(s) on {cpu_count()} CPUs; CPU results "
            "then differ slightly from a sequential run of the same key (and a run resumed under the other setting "
            "mixes both)"
        )


def study_and_profile(text: str, default: str | None) -> tuple[str, str | None]:
    """``NAME@PROFILE`` -> (NAME, PROFILE), ``NAME@`` -> (NAME, None), ``NAME`` -> (NAME, ``default``).

    So one ranking can join a study reported without a profile and others at smoke scale.
    """
    name, at, own = text.partition("@")
    return (name, own or None) if at else (name, default)


def _print_entries(family: str, name: str | None) -> None:
    """Each entry of a registry family (or only ``name``): name and description, parameters with defaults, paper.

    Plain lines, never wrapped into table cells, so that ``studybench losses | grep rmi`` finds them.
    """
    from rich.markup import escape

    from studybench.registry import did_you_mean
    from studybench.study.discover import FIELDS, entries, format_params

    found = entries(family)
    if name is not None:
        found = [e for e in found if name == e.name or name in e.aliases]
        if not found:
            names = [e.name for e in entries(family)]
            one = "loss" if family == "losses" else family[:-1]
            err_console.print(f"unknown {one} {name!r}{did_you_mean(name, names)}", markup=False)
            raise typer.Exit(2)
    else:
        console.print(f"{len(found)} {family} ({FIELDS[family]} in a study):", highlight=False)
    for e in found:
        aliases = f" (alias {', '.join(e.aliases)})" if e.aliases else ""
        console.print(
            f"[bold]{escape(e.name)}[/]{escape(aliases)}: {escape(e.summary)}", highlight=False, soft_wrap=True
        )
        console.print(f"    parameters: {format_params(e)}", markup=False, highlight=False, soft_wrap=True)
        if e.reference:
            console.print(f"    reference: {e.reference}", markup=False, highlight=False, soft_wrap=True)


NameArg = typer.Argument(None, help="Show only this one.", show_default=False)


@app.command()
def losses(name: str | None = NameArg) -> None:
    """Every loss a study may name (loss.name): parameters with defaults, description, paper."""
    _print_entries("losses", name)


@app.command()
def datasets(name: str | None = NameArg) -> None:
    """Every dataset a study may name (data.dataset) and its data.options."""
    _print_entries("datasets", name)


@app.command()
def schemes(name: str | None = NameArg) -> None:
    """Every training scheme a study may name (scheme.name) and its parameters."""
    _print_entries("schemes", name)


@app.command()
def archs(name: str | None = NameArg) -> None:
    """Every smp architecture a study may name (model.arch) and what model.options may set."""
    _print_entries("archs", name)


def main() -> None:  # pragma: no cover - console entry point alias
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
