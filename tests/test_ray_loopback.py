"""Where a local Ray study listens: every listener of the driver and its Ray processes, sampled while it runs.

Ray binds each of its servers to loopback only when the node address is 127.0.0.1 (or ``::1``,
``localhost``), to all interfaces otherwise; ``executors.ray.import_ray`` makes a local instance
take 127.0.0.1 (see its module docstring). The unit tests below check what reaches ``ray.init``,
so that a cluster (``--ray-address`` or ``RAY_ADDRESS``) gets none of the local options.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import psutil
import pytest
from helpers import TINY_STUDY, invoke
from mlflow.tracking import MlflowClient

from studybench.executors import ray as ray_executor
from studybench.executors.ray import RayExecutor, check_loopback, local_options
from studybench.store.layout import TAG_ERROR

pytest.importorskip("ray")


def listeners(root: psutil.Process) -> set[tuple[str, str, int]]:
    """(process name, ip, port) of every listening TCP socket of ``root`` ("driver") and its descendants."""
    found = set()
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for proc in procs:
        try:
            args = proc.cmdline()
            serves = ("mlflow" in args and "server" in args) or "uvicorn" in args  # the local tracking server
            name = "driver" if proc.pid == root.pid else "mlflow-server" if serves else proc.name()
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((name, conn.laddr.ip, conn.laddr.port))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


@pytest.fixture(scope="module")
def ray_study(tmp_path_factory) -> dict:
    """Run a two-run study on a local Ray instance, one run failing; sample the listeners of its processes until it ends."""
    tmp = tmp_path_factory.mktemp("ray_loopback")
    (tmp / "tiny.yaml").write_text(TINY_STUDY)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "STUDYBENCH_FAULT": "error@train:0#dice"}
    for name in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", ray_executor.SINGLE_MACHINE[0]):
        env.pop(name, None)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "studybench.cli", "run", "tiny.yaml", "--executor", "ray", "--tracking-uri", uri]
    driver = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root, seen = psutil.Process(driver.pid), set()
    deadline = time.monotonic() + 600
    while driver.poll() is None and time.monotonic() < deadline:
        seen |= listeners(root)
        time.sleep(0.5)
    out, _ = driver.communicate(timeout=60)
    return {"listeners": seen, "uri": uri, "returncode": driver.returncode, "out": out}


def test_no_listener_of_a_local_ray_study_outside_loopback(ray_study):
    found = ray_study["listeners"]
    names = {name for name, _, _ in found}
    expected = {"driver", "gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent", "mlflow-server"}
    assert expected <= names, f"not all of {sorted(expected)} seen listening: {sorted(found)}\n{ray_study['out']}"
    workers = names - expected - {"python"}  # "python": the dashboard head and the autoscaler monitor
    assert any(name.startswith("ray::") for name in workers), f"no worker seen listening: {sorted(names)}"
    outside = {entry for entry in found if not is_loopback(entry[1])}
    assert not outside, f"listening outside 127.0.0.0/8: {sorted(outside)}"


def test_a_failed_ray_task_is_recorded_and_the_other_runs_finish(ray_study):
    assert ray_study["returncode"] == 1, ray_study["out"]  # 1: a run failed, the others ran
    client = MlflowClient(tracking_uri=ray_study["uri"])
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert {r.info.run_name: r.info.status for r in runs} == {
        "ce · unet · s0": "FINISHED",
        "dice · unet · s0": "FAILED",
    }
    failed = next(r for r in runs if r.info.status == "FAILED")
    assert "RuntimeError: injected" in failed.data.tags[TAG_ERROR]


class FakeRay:
    """What ``RayExecutor.run`` passes to ``ray.init``; stops it right there."""

    class Stop(Exception):
        pass

    def __init__(self, node_ip: str = "127.0.0.1") -> None:
        self.init_kwargs: dict | None = None
        self.shut_down = False
        self.util = SimpleNamespace(get_node_ip_address=lambda: node_ip)

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs) -> None:
        self.init_kwargs = kwargs

    def remote(self, fn):
        raise self.Stop

    def shutdown(self) -> None:
        self.shut_down = True


@pytest.mark.parametrize(
    ("address", "ray_address", "local"),
    [
        (None, None, True),
        ("10.0.0.1:6379", None, False),
        (None, "10.0.0.1:6379", False),
        ("ray://head:10001", "", False),
    ],
)
def test_only_a_new_local_instance_gets_the_local_options(monkeypatch, address, ray_address, local):
    fake = FakeRay()
    monkeypatch.setattr(ray_executor, "import_ray", lambda: fake)
    if ray_address is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", ray_address)
    with pytest.raises(FakeRay.Stop):
        RayExecutor("http://127.0.0.1:5000", "tiny", address=address, local_cpus=2).run([], display=None)
    kwargs = fake.init_kwargs
    assert kwargs is not None and kwargs["include_dashboard"] is False
    if local:
        assert kwargs["address"] == "local" and kwargs["num_cpus"] == 2 and kwargs["num_gpus"] == 0
    else:
        assert kwargs["address"] == address and not {"num_cpus", "num_gpus", "object_store_memory"} & set(kwargs)


def test_local_options_gpus_are_rays_own():
    assert local_options(2)["num_gpus"] == 0  # no CUDA probe at start
    assert "num_gpus" not in local_options(2, gpus=1)  # Ray detects the GPUs and assigns them per task


def test_a_local_instance_off_loopback_is_refused():
    fake = FakeRay(node_ip="192.0.2.2")
    with pytest.raises(RuntimeError, match="all interfaces.*RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0"):
        check_loopback(fake)
    assert fake.shut_down
    check_loopback(FakeRay(node_ip="::1"))


def test_import_ray_switches_ray_to_one_machine_for_the_import_alone():
    """In a fresh process: Ray's multi-node switch is off after ``import_ray``, and the environment is as it was."""
    code = (
        "import os; from studybench.executors.ray import import_ray, SINGLE_MACHINE; import_ray(); "
        "from ray._private import ray_constants; "
        "print(ray_constants.ENABLE_RAY_CLUSTER, SINGLE_MACHINE[0] in os.environ)"
    )
    env = {k: v for k, v in os.environ.items() if k != ray_executor.SINGLE_MACHINE[0]}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_ray_address_in_the_environment_is_a_cluster_and_needs_a_server_store(tmp_path, monkeypatch):
    """``RAY_ADDRESS`` sends runs to a cluster like ``--ray-address``: a local SQLite store is refused (exit 2, nothing written)."""
    (tmp_path / "tiny.yaml").write_text(TINY_STUDY)
    monkeypatch.setenv("RAY_ADDRESS", "ray://head.invalid:10001")
    done = invoke("run", "tiny.yaml", "--executor", "ray", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot write the local store" in done.stderr
    assert not list(tmp_path.rglob("*.db"))
