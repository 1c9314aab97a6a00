"""Executors: how a list of RunSpecs gets run.

``local`` runs them one after another in this process; ``pool`` N at a time in worker
processes on this machine; ``ray`` as Ray tasks on a local instance or a cluster. All run
each spec through ``run_tracked`` (one MLflow run, checkpoints, retries) and share the
interface ``run(specs, display) -> [RunOutcome]``.
"""

from studybench.executors.local import LocalExecutor, RunOutcome, is_transient, run_tracked

__all__ = ["LocalExecutor", "RunOutcome", "is_transient", "run_tracked"]
