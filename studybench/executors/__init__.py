"""Executors: how a list of RunSpecs gets run (sequentially here; in parallel or on Ray)."""

from studybench.executors.local import LocalExecutor, RunOutcome, run_tracked

__all__ = ["LocalExecutor", "RunOutcome", "run_tracked"]
