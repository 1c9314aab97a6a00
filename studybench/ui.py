"""The command line of ``studybench ui``: MLflow's UI on our store, quiet enough to leave running in a terminal.

MLflow 3.17's UI opens every experiment in its GenAI mode (a traces overview) unless the
browser was switched to "Model training" before: the ``mlflow.experimentKind`` tag no longer
decides, the ``workflowType`` query parameter does. So ``studybench ui`` prints, per study in
the store, a link that opens straight on the study's runs table in Model training mode, best
mIoU first (the runs page takes its sort from the URL; which columns it shows it keeps in the
browser's localStorage, with no server-side default or experiment tag to set it, so mIoU itself
is one click away, under "Columns"). The report's runs table links each run to its page in the
same mode (``run_url``), so the report is the dashboard and the UI the place to dig.

MLflow 3.18 (the range pyproject pins) logs an ERROR per artifact preview and, now and then,
an ``AttributeError`` traceback from its Assistant panel; ``_ui_server`` quiets both from inside
the server process, through the logging configuration uvicorn loads (``server_log_config``).

Left to its defaults, ``mlflow ui`` prints a line per HTTP request (dozens per page view),
starts four server processes and a job runner (Huey consumers for MLflow's GenAI jobs, unused
here), and every process prints the same library deprecation warnings. For one researcher
looking at runs none of that helps, so: one worker, uvicorn's access log off (``--access-log``
turns it back on), the job runner off, warnings ignored in the server's processes, and
uvicorn's own messages from WARNING up (errors still show).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

#: Uvicorn's flags for a quiet server (``mlflow ui --uvicorn-opts``); errors are still logged.
QUIET_UVICORN = ("--no-access-log", "--log-level", "warning")


def ui_command(uri: str, port: int, workers: int = 1, access_log: bool = False) -> tuple[list[str], dict[str, str]]:
    """``(argv, env)`` that serve the MLflow UI for ``uri`` on 127.0.0.1:``port``."""
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--registry-store-uri", uri]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    opts = ["--log-config", str(server_log_config(access_log))]
    cmd += ["--uvicorn-opts", " ".join(opts if access_log else [*opts, *QUIET_UVICORN])]
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # see executors/server.py: no Huey consumers
        "PYTHONWARNINGS": "ignore",  # inherited by every worker process uvicorn spawns
    }
    return cmd, env


def server_log_config(access_log: bool) -> Path:
    """A uvicorn logging configuration (JSON, in the temporary folder) with our ``_ui_server`` filter.

    Named by its content, so every ``studybench ui`` of one version reuses the same file.
    """
    handler = {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["noise"]}
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"noise": {"()": "studybench._ui_server.known_noise"}},
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {
            "stderr": {**handler, "stream": "ext://sys.stderr"},
            "stdout": {**handler, "stream": "ext://sys.stdout"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": "INFO"},
            "uvicorn.access": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
            "mlflow.server.handlers": {"filters": ["noise"]},
        },
    }
    text = json.dumps(config, sort_keys=True)
    path = Path(tempfile.gettempdir()) / f"studybench-ui-logging-{hashlib.sha256(text.encode()).hexdigest()[:12]}.json"
    if not path.is_file():
        part = path.with_name(f"{path.name}.{os.getpid()}.part")
        part.write_text(text)
        os.replace(part, path)
    return path


#: The port ``studybench ui`` serves on unless told otherwise (reports link runs there).
DEFAULT_PORT = 5000


def run_url(run_id: str, experiment_id: str, port: int = DEFAULT_PORT) -> str:
    """A run's page in the UI of ``studybench ui``, in Model training mode (not MLflow's GenAI default).

    The experiment must be in the route: MLflow 3.18 opens ``#/runs/<id>?workflowType=...`` in
    GenAI mode whatever the query says (seen in headless Chromium), and
    ``#/experiments/<exp>/runs/<id>?workflowType=machine_learning`` in Model training mode.
    """
    return f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def study_links(uri: str, port: int) -> list[tuple[str, str]]:
    """``(study, url)`` of every study experiment in the store, each URL opening on its runs table, best mIoU first.

    Leaves out MLflow's empty ``Default`` experiment and the studies' records experiments
    (manifests, reports); a local store that does not exist yet has no studies.
    """
    from studybench.store.layout import METRIC_MIOU
    from studybench.store.studies import study_experiments

    query = f"workflowType=machine_learning&orderByKey=metrics.%60{METRIC_MIOU}%60&orderByAsc=false"
    return [
        (e.name, f"http://127.0.0.1:{port}/#/experiments/{e.experiment_id}/runs?{query}")
        for e in study_experiments(uri)
    ]


__all__ = ["DEFAULT_PORT", "QUIET_UVICORN", "run_url", "study_links", "ui_command"]
