"""A local MLflow tracking server over our store, for the duration of a parallel study.

Several processes writing one SQLite file directly fail in known ways ("database is
locked", races on schema migration and experiment creation). So when runs execute in
parallel over a SQLite store, one ``mlflow server`` on 127.0.0.1 owns the file and the
workers log over HTTP. Artifacts still go straight to the experiment's ``file://``
location (the server only hands out that path). The server runs in its own session so a
Ctrl-C in the terminal reaches the workers (which mark their runs KILLED through it) and
not the server.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

#: Store URIs that a single local file backs (and that need a server for parallel writers).
LOCAL_STORES = ("sqlite:", "file:")


def needs_server(uri: str) -> bool:
    return uri.startswith(LOCAL_STORES) or "://" not in uri


@contextlib.contextmanager
def tracking_server(uri: str, wait: bool = True, timeout_s: float = 120.0) -> Iterator[str]:
    """Yield an HTTP URI serving ``uri`` (a SQLite store); yield ``uri`` itself if it is a server already.

    With ``wait=False`` the URI comes at once, while the server still starts (about 10 s on
    a small CPU): callers overlap that with their own start-up and call ``wait_for_server``.
    """
    if not needs_server(uri):
        yield uri
        return
    port = _free_port()
    log = tempfile.NamedTemporaryFile(prefix="studybench-mlflow-server-", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # MLflow 3's server also starts a job runner with four or more Huey consumer processes (for
    # its GenAI jobs, unused here): ~10 s of CPU taken from the runs on a small machine
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        if wait:
            wait_for_server(url, timeout_s, process, Path(log.name))
        yield url
        if process.poll() is not None and process.returncode != 0:
            raise RuntimeError(f"the local MLflow server exited with code {process.returncode}:\n{_tail(log.name)}")
    finally:
        process.terminate()  # every request is committed: nothing to lose by not waiting long
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        Path(log.name).unlink(missing_ok=True)


def wait_for_server(
    url: str, timeout_s: float = 120.0, process: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    """Return once ``url``/health answers; raise (with the server's log when known) if it never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the local MLflow server exited with code {process.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the MLflow server at {url} did not answer within {timeout_s:.0f} s\n{_tail(log)}")


def _tail(log: str | Path | None) -> str:
    try:
        return Path(log).read_text()[-2000:] if log else ""
    except OSError:
        return ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
