"""Executors: how a list of RunSpecs gets run.

``local`` runs them one after another in this process; ``pool`` N at a time in worker
processes on this machine; ``ray`` as Ray tasks on a local instance or a cluster; ``slurm``
as Slurm jobs through submitit. All run each spec through ``run_tracked`` (one MLflow run,
checkpoints, retries) and share the interface ``run(specs, display) -> [RunOutcome]``.

The names below are imported on first use, not with the package: a Slurm job unpickles its
callable from ``executors.slurm`` and must install its signal handlers (time limit,
preemption) within seconds, before torch and the trainer are imported.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LocalExecutor", "RunOutcome", "is_transient", "run_tracked"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from studybench.executors import local

        return getattr(local, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
