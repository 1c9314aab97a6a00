"""``studybench`` command line: run, status, report, ui, bench, validate.

Exit codes: 0 every run finished; 1 a run failed (the others still ran); 2 the study is
invalid (nothing ran, nothing was written to MLflow).
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

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Fair, reproducible comparison studies of segmentation losses."
)
console = Console()
err_console = Console(stderr=True)

StudyArg = typer.Argument(..., help="Study YAML file, e.g. studies/quickstart.yaml", show_default=False)
ProfileOpt = typer.Option(None, "--profile", "-p", help="Profile of the study to apply (e.g. smoke).")
UriOpt = typer.Option(
    None, "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///results/mlflow.db)."
)


class ExecutorName(str, Enum):
    local = "local"
    ray = "ray"


def _load(study_path: Path, profile: str | None, only: str | None = None, check_data: bool = True):
    """Load, expand and filter a study; on any problem print it and exit 2."""
    from studybench.config import StudyError, load_study
    from studybench.grid import expand, select

    try:
        study = load_study(study_path)
        specs = select(expand(study, profile, source=str(study_path), check_data=check_data), only)
    except StudyError as err:
        err_console.print(f"[red]invalid study[/]\n{err}", markup=True, highlight=False)
        raise typer.Exit(2) from None
    if not specs:
        err_console.print(f"[red]invalid selection[/]: --only {only!r} matches no run of {study_path}")
        raise typer.Exit(2)
    return study, specs


def _uri(tracking_uri: str | None) -> str:
    from studybench.tracking import default_tracking_uri

    return tracking_uri or default_tracking_uri()


@app.command()
def run(
    study_path: Path = StudyArg,
    profile: str | None = ProfileOpt,
    executor: ExecutorName = typer.Option(ExecutorName.local, "--executor", help="local (this machine) or ray."),
    workers: int = typer.Option(1, "--workers", min=1, help="Runs at once on this machine."),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster address (default: start a local Ray)."
    ),
    tracking_uri: str | None = UriOpt,
    only: str | None = typer.Option(None, "--only", help="Filter runs: 'method=rmi,seed=0' or a run-name substring."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the runs that would run, then stop."),
) -> None:
    """Run every run of a study that is not FINISHED yet, tracking each in MLflow."""
    study, specs = _load(study_path, profile, only)
    uri = _uri(tracking_uri)
    if dry_run:
        table = Table(title=f"{study.study}: {len(specs)} runs (dry run, tracking at {uri})")
        table.add_column("run")
        table.add_column("key")
        table.add_column("groups")
        for spec in specs:
            table.add_row(spec.name, spec.key, ",".join(spec.groups))
        console.print(table)
        return
    if executor is not ExecutorName.local or workers != 1 or ray_address:
        err_console.print("[red]--executor ray / --workers N are not available yet in this version[/]")
        raise typer.Exit(2)

    from studybench.console import RunDisplay, summary_table
    from studybench.executors import LocalExecutor, RunOutcome
    from studybench.tracking import StudyTracker

    tracker = StudyTracker(uri, study.study)
    tracker.experiment_id(create=True)
    done = tracker.latest_by_key()
    skipped = [
        RunOutcome(s, "SKIPPED", metrics=dict(done[s.key].data.metrics))
        for s in specs
        if s.key in done and done[s.key].info.status == "FINISHED"
    ]
    todo = [s for s in specs if not (s.key in done and done[s.key].info.status == "FINISHED")]
    console.print(
        f"[bold]{study.study}[/]: {len(specs)} runs, {len(skipped)} already finished, {len(todo)} to run; tracking at {uri}"
    )
    outcomes = list(skipped)
    try:
        with RunDisplay(
            len(todo), console, enabled=sys.stdout.isatty() or bool(os.environ.get("STUDYBENCH_PROGRESS"))
        ) as display:
            outcomes += LocalExecutor(tracker).run(todo, display)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: the current run is marked KILLED; rerun the same command to resume.")
        raise typer.Exit(130) from None
    order = {s.key: i for i, s in enumerate(specs)}
    outcomes.sort(key=lambda o: order[o.spec.key])
    console.print(summary_table(outcomes))
    failed = [o for o in outcomes if o.status == "FAILED"]
    if failed:
        console.print(
            f"[red]{len(failed)} run(s) failed[/]; tracebacks are in each run's error.txt artifact (studybench ui)."
        )
        raise typer.Exit(1)


@app.command()
def status(study_path: Path = StudyArg, profile: str | None = ProfileOpt, tracking_uri: str | None = UriOpt) -> None:
    """Each run of the study: done / failed / running / pending, from MLflow."""
    from studybench.tracking import TAG_ERROR, StudyTracker

    study, specs = _load(study_path, profile, check_data=False)
    latest = StudyTracker(_uri(tracking_uri), study.study).latest_by_key()
    table = Table(title=f"{study.study}: {len(specs)} runs")
    for col in ("run", "state", "mIoU", "wall s", "note"):
        table.add_column(col)
    counts: dict[str, int] = {}
    compute = 0.0
    names = {"FINISHED": "done", "FAILED": "failed", "KILLED": "failed", "RUNNING": "running", "SCHEDULED": "running"}
    for spec in specs:
        run = latest.get(spec.key)
        state = names.get(run.info.status, "pending") if run else "pending"
        counts[state] = counts.get(state, 0) + 1
        metrics = run.data.metrics if run else {}
        compute += metrics.get("wall_s", 0.0) if state == "done" else 0.0
        note = run.data.tags.get(TAG_ERROR, "") if run and state == "failed" else ""
        miou = f"{metrics['miou']:.4f}" if "miou" in metrics else "-"
        wall = f"{metrics['wall_s']:.1f}" if "wall_s" in metrics else "-"
        table.add_row(spec.name, state, miou, wall, note)
    console.print(table)
    line = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("done", "failed", "running", "pending"))
    console.print(f"{line}; compute time of finished runs: {compute:.1f} s")


@app.command()
def report(
    study_path: Path = StudyArg,
    profile: str | None = ProfileOpt,
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: reports/<study>)."),
    tracking_uri: str | None = UriOpt,
) -> None:
    """Rebuild reports/<study>/ (tables and figures) from the MLflow store alone."""
    from studybench.report import build_report

    study, specs = _load(study_path, profile, check_data=False)
    keys = [s.key for s in specs] if profile else None
    result = build_report(study, _uri(tracking_uri), out or Path("reports") / study.study, keys)
    for problem in result.problems:
        err_console.print(f"[yellow]{problem}[/]")
    if not result.files:
        raise typer.Exit(1)
    console.print(f"report of {result.runs} runs written to {result.out_dir}/ ({len(result.files)} files)")


@app.command()
def ui(
    tracking_uri: str | None = UriOpt,
    port: int = typer.Option(5000, "--port", help="Port on 127.0.0.1."),
) -> None:
    """Open the MLflow UI on our store, bound to 127.0.0.1."""
    uri = _uri(tracking_uri)
    if not re.match(r"^(sqlite|postgresql|mysql|file):", uri) and "://" in uri:
        console.print(f"{uri} is a tracking server already: open it in a browser.")
        return
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)]
    console.print(f"MLflow UI on http://127.0.0.1:{port} (store {uri}); Ctrl-C to stop")
    os.execv(sys.executable, cmd)


@app.command()
def validate(study_path: Path = StudyArg, profile: str | None = ProfileOpt) -> None:
    """Check a study (keys, types, names, data presence) and print its expanded grid size."""
    study, specs = _load(study_path, profile)
    by_abl: dict[str, int] = {}
    for spec in specs:
        for group in spec.groups:
            by_abl[group] = by_abl.get(group, 0) + 1
    seeds = sorted({s.seed for s in specs})
    console.print(
        f"[green]valid[/]: {study_path} -> study {study.study!r}{f' (profile {profile})' if profile else ''}: {len(specs)} runs"
    )
    console.print(
        f"  seeds {seeds}; datasets {sorted({s.dataset for s in specs})}; methods {sorted({s.method for s in specs})}"
    )
    for name, count in by_abl.items():
        console.print(f"  {name}: {count} runs")


def main() -> None:  # pragma: no cover - console entry point alias
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
