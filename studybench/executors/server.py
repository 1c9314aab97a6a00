"""A local MLflow tracking server over our store, for the duration of a parallel study.

Several processes writing one SQLite file directly fail in known ways ("database is
locked", races on schema migration and experiment creation). So when runs execute in
parallel over a SQLite store, one ``mlflow server`` on 127.0.0.1 owns the file and the
workers log over HTTP. Artifacts still go straight to the experiment's ``file://``
location (the server only hands out that path). The server runs in its own session so a
Ctrl-C in the terminal reaches the workers (which mark their runs KILLED through it) and
not the server.

The server must not outlive the study, however the driver dies (kill -9 included): it is
started through a small guard (this file run as a script) that leads the server's process
group, watches the driver's pid and kills the whole group (``mlflow server`` and its
uvicorn/gunicorn children) as soon as the driver is gone. ``die_with`` gives the same
promise to the pool's workers, whose parent is multiprocessing's forkserver, not the driver.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
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
    guarded = [sys.executable, str(Path(__file__).resolve()), str(os.getpid()), *cmd]
    process = subprocess.Popen(guarded, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        if wait:
            wait_for_server(url, timeout_s, process, Path(log.name))
        yield url
        if process.poll() is not None and process.returncode != 0:
            raise RuntimeError(f"the local MLflow server exited with code {process.returncode}:\n{_tail(log.name)}")
    finally:
        _stop_group(process)  # every request is committed: nothing to lose by not waiting long
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


def _stop_group(process: subprocess.Popen, grace_s: float = 3.0) -> None:
    """SIGTERM the server's process group (guard, server, its workers), SIGKILL what is left after ``grace_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def die_with_parent(parent: int | None = None, sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux only; False elsewhere).

    Call it in the child itself (e.g. a pool initializer). With ``parent`` (the pid the child
    was started by), a parent that died before this call (while the child was still importing)
    ends the child at once instead of never. The signal is tied to the parent *thread* that
    started the child, so only use it for children started by a long-lived thread.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(1, sig, 0, 0, 0) == 0  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False
    if armed and parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)
    return armed


def die_with(pid: int, sig: int = signal.SIGKILL, poll_s: float = 0.5) -> None:
    """Send this process ``sig`` as soon as process ``pid`` ends (at once if it has ended already).

    For a process whose parent is not the one it must die with (a forkserver's child): a
    daemon thread waits on a pidfd of ``pid`` (Linux), which is readable once ``pid`` exits,
    zombie or reaped; elsewhere it polls ``pid`` every ``poll_s``. The pidfd is opened before
    returning, so a ``pid`` that died earlier ends this process now, not never.
    """
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        os.kill(os.getpid(), sig)
        return
    except (AttributeError, OSError):  # no pidfd: not Linux (or a kernel before 5.3)
        handle = None

    def wait() -> None:
        if handle is not None:
            select.select([handle], [], [])
        else:
            while _alive(pid):
                time.sleep(poll_s)
        os.kill(os.getpid(), sig)

    threading.Thread(target=wait, name=f"die-with-{pid}", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process has the pid now: ours is gone
        return False
    return True


def _guard(driver: int, cmd: list[str], poll_s: float = 0.25) -> int:
    """Run ``cmd`` in this process group; end the group when the driver ``driver`` dies or asks us to stop.

    Runs as its own process (``python server.py DRIVER_PID CMD...``, started in a new session
    so it leads the group). Polling the parent pid works on every POSIX system and whichever
    thread started us; the server's own children inherit the group, so one ``killpg`` ends them all.
    """
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's business
    child = subprocess.Popen(cmd, preexec_fn=die_with_parent)  # killing the guard alone kills the server too
    while child.poll() is None and not stopping and os.getppid() == driver:
        time.sleep(poll_s)
    if child.poll() is not None and not stopping:  # the server ended by itself: report its exit code
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(0, signal.SIGTERM)  # its leftover children, if any
        return child.returncode
    if os.getppid() != driver:  # the driver died without a word: nothing to wait for
        os.killpg(0, signal.SIGKILL)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)
    try:
        child.wait(timeout=3)
    except subprocess.TimeoutExpired:
        os.killpg(0, signal.SIGKILL)
    return 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":  # the guard process started by ``tracking_server``
    sys.exit(_guard(int(sys.argv[1]), sys.argv[2:]))
