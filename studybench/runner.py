"""Old home of the run machinery, now ``studybench.executors.plan`` (kept so that existing imports keep working)."""

from studybench.executors.plan import RunPlan, UsageError, check_options, executor_for, parse_resources, plan_runs

__all__ = ["RunPlan", "UsageError", "check_options", "executor_for", "parse_resources", "plan_runs"]
