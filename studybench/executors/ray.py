"""Run RunSpecs as Ray tasks: on a local Ray instance, or on a cluster (``--ray-address``).

Each RunSpec is one task with the study's resource request (``resources: {cpus, gpus}``):
Ray places it, the task trains with ``cpus`` torch threads and logs to the tracking URI it
is given, which every node must reach (an ``mlflow server``; see docs/scale-out.md).
Checkpoints go to a folder every node must reach too. Task retries are ours, not Ray's
(``run_tracked`` knows which errors are worth retrying), so Ray's own retries are off.

A local instance (no ``--ray-address``) has no dashboard and a loopback node address, so its
agents listen on 127.0.0.0/8. Ray 2.60's gRPC servers (gcs_server, raylet, every worker and
the driver's core worker) still listen on all interfaces (``::``/``0.0.0.0``) whatever the
node address: Ray offers no option for it (measured; tests/test_ray_loopback.py records it).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from studybench.checkpoint import Checkpoints
from studybench.executors.local import RunOutcome, first_line, run_tracked
from studybench.spec import RunSpec
from studybench.store import StudyWriter

#: Environment variables forwarded to the tasks (a cluster's workers do not share the driver's).
FORWARDED_ENV = ("STUDYBENCH_DATA", "STUDYBENCH_CHECKPOINTS", "STUDYBENCH_FAULT", "MLFLOW_TRACKING_TOKEN")
#: Node address of a local instance on Linux. ``ray.init`` rewrites 127.0.0.1 into the machine's
#: external address (so that other nodes could join), and its agents then listen there; another
#: address of the loopback network is taken as given. macOS configures 127.0.0.1 alone: default there.
LOCAL_NODE_IP = "127.0.0.2" if sys.platform.startswith("linux") else None


class RayNotInstalled(RuntimeError):
    pass


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayNotInstalled(
            "--executor ray needs Ray, which is an optional extra: pip install 'studybench[ray]'"
        ) from None
    return ray


class RayExecutor:
    """Submit every run as a Ray task; collect outcomes as they finish."""

    def __init__(
        self,
        uri: str,
        study: str,
        address: str | None = None,
        cpus: float = 1,
        gpus: float = 0,
        checkpoints: Checkpoints | None = None,
        retries: int = 0,
        local_cpus: int | None = None,
    ) -> None:
        self.uri, self.study, self.address = uri, study, address
        self.cpus, self.gpus = cpus, gpus
        self.checkpoints, self.retries = checkpoints, retries
        self.local_cpus = local_cpus

    def run(self, specs: list[RunSpec], display) -> list[RunOutcome]:
        ray = import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address is None:  # a local instance, sized to this machine, reachable from it alone
                options.update(local_options(self.local_cpus, self.gpus))
            ray.init(address=self.address, runtime_env={"env_vars": env} if env else None, **options)
        try:
            task = ray.remote(_task).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0)
            threads = max(1, int(self.cpus))
            pending = {}
            for spec in specs:
                ref = task.remote(spec.with_threads(threads), self.uri, self.study, self.checkpoints, self.retries)
                pending[ref] = spec
            outcomes = []
            try:
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1)
                    spec = pending.pop(done[0])
                    outcome = _outcome(ray, done[0], spec)
                    display.run_done(outcome)
                    outcomes.append(outcome)
            except KeyboardInterrupt:
                for ref in pending:  # each running task gets KeyboardInterrupt and marks its run KILLED
                    ray.cancel(ref)
                for ref in pending:
                    try:
                        ray.get(ref, timeout=60)
                    except Exception:  # noqa: BLE001 - cancelled tasks raise here by design
                        pass
                raise
            return outcomes
        finally:
            if started_here:
                ray.shutdown()


def local_options(cpus: int | None, gpus: float = 0) -> dict[str, Any]:
    """``ray.init`` options of a local instance: this machine's CPUs, its GPUs if runs ask for them, loopback.

    GPUs are Ray's own ``num_gpus``: Ray sets ``CUDA_VISIBLE_DEVICES`` for each task to the
    GPUs it assigned, so runs never share a GPU unless they ask for fractions.
    """
    options: dict[str, Any] = {"num_cpus": cpus, "object_store_memory": 100 * 2**20}
    if gpus == 0:
        options["num_gpus"] = 0  # no CUDA probe at start, nothing to place
    if LOCAL_NODE_IP:
        options["_node_ip_address"] = LOCAL_NODE_IP
    return options


def _task(spec: RunSpec, uri: str, study: str, checkpoints: Checkpoints | None, retries: int) -> RunOutcome:
    """The body of one Ray task (runs on any node of the cluster)."""
    return run_tracked(spec, StudyWriter(uri, study), None, checkpoints, retries)


def _outcome(ray: Any, ref: Any, spec: RunSpec) -> RunOutcome:
    try:
        return ray.get(ref)
    except Exception as err:  # noqa: BLE001 - the worker process died (OOM killer, node lost, ...)
        first = first_line(err)
        return RunOutcome(spec, "KILLED", error=f"Ray task died ({type(err).__name__}: {first}); a rerun resumes it")
