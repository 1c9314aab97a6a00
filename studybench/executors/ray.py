"""Run RunSpecs as Ray tasks: on a local Ray instance, or on a cluster (``--ray-address``).

Each RunSpec is one task with the study's resource request (``resources: {cpus, gpus}``):
Ray places it, the task trains with ``cpus`` torch threads and logs to the tracking URI it
is given, which every node must reach (an ``mlflow server``; see docs/scale-out.md).
Checkpoints go to a folder every node must reach too. Task retries are ours, not Ray's
(``run_tracked`` knows which errors are worth retrying), so Ray's own retries are off.

A local instance (no ``--ray-address``, no ``RAY_ADDRESS``) listens on loopback only. Every Ray
server binds by one rule (Ray 2.60, Python and C++ alike): loopback if the node address is
``127.0.0.1``/``::1``/``localhost``, all interfaces (``0.0.0.0``/``::``) otherwise, 127.0.0.2
included; and ``ray.init`` turns an explicit 127.0.0.1 into the machine's external address while
Ray's multi-node switch is on. So Ray is imported with that switch off (``SINGLE_MACHINE``; the
default on macOS and Windows): a new instance then takes 127.0.0.1 as its node address and the
gcs_server, raylet, object manager, every worker's and the driver's core worker, the dashboard
agent (gRPC, HTTP, metrics), the runtime-env agent and the dashboard/autoscaler metrics servers
all listen on it (measured by tests/test_ray_loopback.py). There is no dashboard UI. A cluster
is reached as it is configured; the switch only decides the address of a node started here.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import Any

from studybench.engine.checkpoint import Checkpoints
from studybench.executors.local import RunOutcome, first_line, run_tracked
from studybench.store import StudyWriter
from studybench.study.spec import RunSpec

#: Environment variables forwarded to the tasks (a cluster's workers do not share the driver's).
FORWARDED_ENV = ("STUDYBENCH_DATA", "STUDYBENCH_CHECKPOINTS", "STUDYBENCH_FAULT", "MLFLOW_TRACKING_TOKEN")
#: Ray's switch for letting other machines join a node started here, read once when Ray is imported
#: (``ray_constants.ENABLE_RAY_CLUSTER``). Off, a new local instance takes 127.0.0.1 as its node address
#: (``services.get_node_ip_address``), so its servers bind loopback. Off is Ray's default on macOS and
#: Windows; it changes nothing for a driver that joins a cluster (its node's address comes from the cluster).
SINGLE_MACHINE = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


class RayNotInstalled(RuntimeError):
    pass


class RayNotLocal(RuntimeError):
    """A local instance came up on a non-loopback node address (its servers would listen on every interface)."""


def import_ray() -> Any:
    """Ray, imported with ``SINGLE_MACHINE`` unless the environment says otherwise.

    The switch is set for the import alone, so that nothing this process starts later inherits it.
    """
    name, value = SINGLE_MACHINE
    try:
        if "ray" in sys.modules or name in os.environ:
            import ray
        else:
            os.environ[name] = value
            try:
                import ray
            finally:
                os.environ.pop(name, None)
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
            options: dict[str, Any] = {"address": self.address, "include_dashboard": False, "log_to_driver": False}
            local = self.address is None and not os.environ.get("RAY_ADDRESS")  # else Ray joins RAY_ADDRESS
            if local:
                options.update(local_options(self.local_cpus, self.gpus))
            ray.init(runtime_env={"env_vars": env} if env else None, **options)
            if local:
                check_loopback(ray)
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
    """``ray.init`` options of a local instance: a new one, this machine's CPUs, its GPUs if runs ask for them.

    ``address="local"``: a new instance even when a ``ray start`` left one on this machine (``None``
    would join it). Its node address is loopback through ``SINGLE_MACHINE``, not an option here:
    ``ray.init`` rewrites ``_node_ip_address="127.0.0.1"`` while the switch is on.

    GPUs are Ray's own ``num_gpus``: Ray sets ``CUDA_VISIBLE_DEVICES`` for each task to the
    GPUs it assigned, so runs never share a GPU unless they ask for fractions.
    """
    options: dict[str, Any] = {"address": "local", "num_cpus": cpus, "object_store_memory": 100 * 2**20}
    if gpus == 0:
        options["num_gpus"] = 0  # no CUDA probe at start, nothing to place
    return options


def check_loopback(ray: Any) -> None:
    """Refuse a local instance whose node address is not loopback: all its servers would listen on every interface.

    That happens when Ray was imported before ``import_ray`` could switch it to one machine, or
    with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1`` in the environment.
    """
    node_ip = ray.util.get_node_ip_address()
    if not ipaddress.ip_address(node_ip).is_loopback:
        ray.shutdown()
        raise RayNotLocal(
            f"the local Ray instance took {node_ip} as its node address, so it would listen on all interfaces: "
            f"set {SINGLE_MACHINE[0]}={SINGLE_MACHINE[1]} before Ray is imported"
        )


def _task(spec: RunSpec, uri: str, study: str, checkpoints: Checkpoints | None, retries: int) -> RunOutcome:
    """The body of one Ray task (runs on any node of the cluster)."""
    return run_tracked(spec, StudyWriter(uri, study), None, checkpoints, retries)


def _outcome(ray: Any, ref: Any, spec: RunSpec) -> RunOutcome:
    try:
        return ray.get(ref)
    except Exception as err:  # noqa: BLE001 - the worker process died (OOM killer, node lost, ...)
        first = first_line(err)
        return RunOutcome(spec, "KILLED", error=f"Ray task died ({type(err).__name__}: {first}); a rerun resumes it")
