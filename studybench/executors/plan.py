"""A study's run, before and around the executor: what is left, whether the options can work, which executor.

A rerun must lose nothing and duplicate nothing: runs that FINISHED are skipped, runs left
RUNNING by a dead process are marked KILLED and run again (from their checkpoint), and runs
still alive in another process are left to it. Option combinations are checked here before
anything is written, so a wrong command line exits 2 with a message, not half a study.
(``api.run_study`` drives these; they were ``studybench.runner``.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studybench.engine.checkpoint import Checkpoints
from studybench.store import StudyWriter
from studybench.store.liveness import run_state
from studybench.study.config import Resources
from studybench.study.spec import RunSpec


class UsageError(ValueError):
    """A command-line combination that cannot work; the message says what to do instead."""

    def __init__(self, message: str, title: str = "invalid options") -> None:
        super().__init__(message)
        self.title = title  # how the CLI heads the message


@dataclass
class RunPlan:
    finished: list[Any] = field(default_factory=list)  # FINISHED before: skipped
    elsewhere: list[Any] = field(default_factory=list)  # RUNNING in a live process: left alone
    todo: list[RunSpec] = field(default_factory=list)
    reaped: list[Any] = field(default_factory=list)  # MLflow runs of dead processes, now KILLED
    resumable: dict[str, int] = field(default_factory=dict)  # run key -> epochs its checkpoint holds


def plan_runs(store: StudyWriter, specs: list[RunSpec], checkpoints: Checkpoints | None) -> RunPlan:
    """What a ``run`` of ``specs`` does with each: skip (done), leave (alive elsewhere) or run."""
    from studybench.executors.local import RunOutcome  # imports the trainer: only when a study runs

    plan = RunPlan(reaped=store.reap_dead_runs())
    latest, finished = store.newest_runs()
    for spec in specs:
        state = run_state(latest.get(spec.key))
        if spec.key in finished:  # a later failed duplicate never hides a finished result
            plan.finished.append(RunOutcome(spec, "SKIPPED", metrics=dict(finished[spec.key].data.metrics)))
            if checkpoints:  # left behind if the process died between FINISHED and its clean-up
                checkpoints.remove(spec)
        elif state.state == "running":
            plan.elsewhere.append(RunOutcome(spec, "RUNNING", error="running in another process; left to it"))
        else:
            plan.todo.append(spec)
            epoch = checkpoints.epoch(spec) if checkpoints else None
            if epoch:
                plan.resumable[spec.key] = epoch
    return plan


def parse_resources(text: str | None, default: Resources) -> Resources:
    """``"cpus=4,gpus=1"`` (or Slurm's ``partition=gpu,time_min=60,mem_gb=16``) over the study's ``resources``."""
    if not text:
        return default
    values: dict[str, float | str | None] = default.model_dump()
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in values:
            raise UsageError(f"--resources {text!r}: expected cpus=N,gpus=M (keys: {', '.join(values)})")
        if name == "partition":  # the only text field; pydantic checks the rest
            values[name] = value.strip()
            continue
        try:
            values[name] = float(value)
        except ValueError:
            raise UsageError(f"--resources {text!r}: {name} must be a number, got {value!r}") from None
        if name == "time_min" and values[name] == int(values[name]):
            values[name] = int(values[name])
    try:
        return Resources(**values)
    except ValueError as err:
        raise UsageError(f"--resources {text!r}: {err}") from None


def check_options(executor: str, workers: int, ray_address: str | None, uri: str, resources: Resources) -> None:
    from studybench.executors.server import needs_server

    if executor != "ray" and ray_address:
        raise UsageError("--ray-address needs --executor ray")
    if executor == "slurm":
        if workers != 1:
            raise UsageError("--workers is for --executor local; Slurm runs as many jobs as the cluster allows")
        from studybench.executors.slurm import import_submitit

        try:
            import_submitit()
        except RuntimeError as err:
            raise UsageError(str(err)) from None
    if executor == "ray" and workers != 1:
        raise UsageError("--workers is for --executor local; Ray runs as many runs as the cluster's resources allow")
    if executor == "ray":
        from studybench.executors.ray import import_ray

        try:
            import_ray()
        except RuntimeError as err:
            raise UsageError(str(err)) from None
        if ray_address and needs_server(uri):
            raise UsageError(
                f"--ray-address sends runs to other machines, which cannot write the local store {uri}: "
                "start an MLflow tracking server every node can reach and pass --tracking-uri http://HOST:PORT "
                "(see docs/scale-out.md)"
            )
        if not ray_address and resources.gpus > 0:
            import torch

            if torch.cuda.device_count() < resources.gpus:
                raise UsageError(
                    f"resources.gpus={resources.gpus:g} but this machine has {torch.cuda.device_count()} GPU(s): "
                    "the local Ray instance could never place the runs; use --resources gpus=0 or --ray-address"
                )


@contextlib.contextmanager
def executor_for(
    kind: str,
    uri: str,
    store: StudyWriter,
    workers: int,
    ray_address: str | None,
    resources: Resources,
    checkpoints: Checkpoints | None,
    retries: int,
) -> Iterator[Any]:
    """The executor, with a local tracking server around it when several processes will write a local store."""
    if kind == "local" and workers == 1:
        from studybench.executors.local import LocalExecutor

        yield LocalExecutor(store, checkpoints, retries)
        return
    from studybench.executors.server import tracking_server

    with tracking_server(uri, wait=kind != "local") as served:  # pool workers wait for it themselves
        if kind == "slurm":
            from studybench.executors.slurm import SlurmExecutor, slurm_folder

            root = checkpoints.root if checkpoints else Path("results/checkpoints")
            yield SlurmExecutor(served, store.study, resources, slurm_folder(root, store.study), checkpoints, retries)
        elif kind == "ray":
            from studybench.executors.pool import cpu_count
            from studybench.executors.ray import RayExecutor

            local_cpus = None if ray_address else max(cpu_count(), int(resources.cpus))
            yield RayExecutor(
                served, store.study, ray_address, resources.cpus, resources.gpus, checkpoints, retries, local_cpus
            )
        else:
            from studybench.executors.pool import PoolExecutor

            yield PoolExecutor(served, store.study, workers, checkpoints, retries)
