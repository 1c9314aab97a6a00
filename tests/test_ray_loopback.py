"""Where a local Ray study listens: every listener of the driver and its Ray processes, sampled while it runs.

The runtime-env agent and the dashboard agent's HTTP port follow the node address, which
``executors.ray.local_options`` sets to the loopback network (without it they listen on the
machine's external address). Ray 2.60's gRPC servers (gcs_server, raylet, workers, the
driver's core worker, the dashboard agent's gRPC and metrics ports) bind all interfaces
whatever the node address; that test is a strict xfail, so it turns red the day Ray allows
better and the executor can be tightened.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time

import psutil
import pytest
from helpers import TINY_STUDY

from studybench.executors.ray import LOCAL_NODE_IP, local_options

pytest.importorskip("ray")


def listeners(root: psutil.Process) -> set[tuple[str, str, int]]:
    """(process name, ip, port) of every listening TCP socket of ``root`` and its descendants."""
    found = set()
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for proc in procs:
        try:
            args = proc.cmdline()
            serves = ("mlflow" in args and "server" in args) or "uvicorn" in args  # the local tracking server
            name = "mlflow-server" if serves else proc.name()
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
def ray_study_listeners(tmp_path_factory) -> set[tuple[str, str, int]]:
    """Run a two-run study on a local Ray instance; sample the listeners of its processes until it ends."""
    tmp = tmp_path_factory.mktemp("ray_loopback")
    (tmp / "tiny.yaml").write_text(TINY_STUDY)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "studybench.cli", "run", "tiny.yaml", "--executor", "ray"]
    cmd += ["--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}"]
    driver = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root, seen = psutil.Process(driver.pid), set()
    deadline = time.monotonic() + 600
    while driver.poll() is None and time.monotonic() < deadline:
        seen |= listeners(root)
        time.sleep(0.5)
    out, _ = driver.communicate(timeout=60)
    assert driver.returncode == 0, out
    assert any(name == "gcs_server" for name, _, _ in seen), f"no Ray process seen listening: {seen}"
    return seen


def test_local_ray_options_put_the_node_on_loopback():
    options = local_options(2)
    assert options["num_cpus"] == 2 and options["num_gpus"] == 0
    assert "num_gpus" not in local_options(2, gpus=1)  # Ray detects the GPUs and assigns them per task
    if sys.platform.startswith("linux"):
        assert is_loopback(options["_node_ip_address"]) and options["_node_ip_address"] == LOCAL_NODE_IP


def test_tracking_server_and_agent_http_listen_on_loopback_only(ray_study_listeners):
    """What follows the node address: the runtime-env agent, the dashboard agent's HTTP port; and our server."""
    ours = {e for e in ray_study_listeners if e[0] in ("mlflow-server", "ray::RuntimeEnvAgent") or e[2] == 52365}
    assert {"mlflow-server", "ray::RuntimeEnvAgent", "ray::DashboardAgent"} <= {n for n, _, _ in ours}, ours
    outside = {entry for entry in ours if not is_loopback(entry[1])}
    assert not outside, f"listening outside 127.0.0.0/8: {sorted(outside)}"


@pytest.mark.xfail(
    strict=True,
    reason="Ray 2.60 binds its gRPC servers (gcs_server, raylet, workers, driver, agents' gRPC) to all "
    "interfaces whatever the node address; no ray.init option changes it",
)
def test_no_ray_listener_outside_loopback(ray_study_listeners):
    outside = {entry for entry in ray_study_listeners if not is_loopback(entry[1])}
    assert not outside, f"listening outside 127.0.0.0/8: {sorted(outside)}"
