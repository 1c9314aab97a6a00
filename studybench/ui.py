"""The command line of ``studybench ui``: MLflow's UI on our store, quiet enough to leave running in a terminal.

Left to its defaults, ``mlflow ui`` prints a line per HTTP request (dozens per page view),
starts four server processes and a job runner (Huey consumers for MLflow's GenAI jobs, unused
here), and every process prints the same library deprecation warnings. For one researcher
looking at runs none of that helps, so: one worker, uvicorn's access log off (``--access-log``
turns it back on), the job runner off, warnings ignored in the server's processes, and
uvicorn's own messages from WARNING up (errors still show).
"""

from __future__ import annotations

import os
import sys

#: Uvicorn's flags for a quiet server (``mlflow ui --uvicorn-opts``); errors are still logged.
QUIET_UVICORN = ("--no-access-log", "--log-level", "warning")


def ui_command(uri: str, port: int, workers: int = 1, access_log: bool = False) -> tuple[list[str], dict[str, str]]:
    """``(argv, env)`` that serve the MLflow UI for ``uri`` on 127.0.0.1:``port``."""
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    if not access_log:
        cmd += ["--uvicorn-opts", " ".join(QUIET_UVICORN)]
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # see executors/server.py: no Huey consumers
        "PYTHONWARNINGS": "ignore",  # inherited by every worker process uvicorn spawns
    }
    return cmd, env


__all__ = ["QUIET_UVICORN", "ui_command"]
