"""Tracking URIs checked before anything is written: a wrong one gets one message and exit 2.

Why: left to MLflow, ``sqlite:///:memory:`` trains and loses every result, ``file:`` and bare
paths end in MLflow's "filesystem backend is in maintenance mode" traceback, a missing
database driver in ``ModuleNotFoundError``, and an http URI where nothing answers retries for
about 270 s before a traceback. Each is told here, in seconds, with the form to use instead.
"""

from __future__ import annotations

import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

#: Seconds an http tracking server has to answer the probe (a live one answers in milliseconds).
PROBE_TIMEOUT_S = 5.0
#: Extra that installs the PostgreSQL driver our docs name (``postgresql+psycopg2://``).
POSTGRES_EXTRA = "pip install 'studybench[postgres]'"


class UriError(ValueError):
    """A tracking URI that cannot hold a study; the message says what to pass instead."""


def check_tracking_uri(uri: str) -> str:
    """``uri`` unchanged when it can hold a study; raise ``UriError`` saying what to use otherwise."""
    try:
        _check(uri)
    except UriError as err:  # a message may quote the URI: never its password
        password = urllib.parse.urlsplit(uri).password if "://" in uri else None
        raise UriError(str(err).replace(f":{password}@", ":***@") if password else str(err)) from None
    return uri


def _check(uri: str) -> None:
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme == "sqlite":
        _check_sqlite(uri)
    elif scheme == "file" or uri.startswith("file:") or not scheme:
        raise UriError(_file_store_message(uri))
    elif scheme.split("+")[0] in ("postgresql", "mysql", "mssql"):
        _check_driver(uri)
    elif scheme in ("http", "https"):
        _check_server(uri)


def _check_sqlite(uri: str) -> None:
    path = uri.split("://", 1)[1].removeprefix("/")
    if path in ("", ":memory:") or path.startswith(":memory:") or "mode=memory" in uri:
        raise UriError(
            f"{uri} is an in-memory database: every run would be trained and then lost. "
            "Pass a file, e.g. --tracking-uri sqlite:///results/mlflow.db (or leave --tracking-uri out)"
        )


def _file_store_message(uri: str) -> str:
    path = Path(uri.removeprefix("file://").removeprefix("file:")).expanduser().resolve()
    db = path if path.suffix == ".db" else path / "mlflow.db"
    return (
        f"{uri} names a folder store (MLflow's file backend, in maintenance mode and not supported here); "
        f"use an SQLite file instead: --tracking-uri sqlite:///{db}"
    )


def _check_driver(uri: str) -> None:
    """The SQLAlchemy driver of a database URI is importable, else name what to install."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        dialect = make_url(uri).get_dialect()
        dialect.import_dbapi()
    except (ArgumentError, NoSuchModuleError) as err:
        raise UriError(f"{uri}: not a database URI SQLAlchemy knows ({err})") from None
    except ImportError as err:
        raise UriError(_driver_message(uri, err.name or str(err))) from None
    url = make_url(uri)
    if url.host:  # MLflow retries an unreachable database for minutes: try the port once, in seconds
        _check_port(uri, url.host, url.port or _DB_PORTS.get(dialect.name, 0))


#: Default ports of the database servers SQLAlchemy names.
_DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def _check_port(uri: str, host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as err:
        raise UriError(_no_answer(uri, err, "start the database server")) from None


def _driver_message(uri: str, module: str) -> str:
    scheme = uri.split("://", 1)[0].lower()
    if scheme == "postgresql":  # SQLAlchemy's default driver is psycopg 3; the extra and the docs use psycopg2
        return (
            f"{uri}: the database driver {module!r} is not installed; {POSTGRES_EXTRA} and write the URI as "
            f"postgresql+psycopg2://{uri.split('://', 1)[1]}"
        )
    if scheme.startswith("postgresql+psycopg2"):
        return f"{uri}: the database driver {module!r} is not installed; {POSTGRES_EXTRA}"
    return f"{uri}: the database driver {module!r} is not installed; pip install the package that provides it"


def _check_server(uri: str) -> None:
    """Something at ``uri`` answers within seconds, and it is an MLflow tracking server."""
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
            body, kind = response.read(65536), response.headers.get_content_type()
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):  # an MLflow server with authentication: the client brings credentials
            return
        raise UriError(_not_mlflow(uri, f"HTTP {err.code} for its REST API")) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, ssl.SSLError):  # it answers; its certificate is MLflow's to judge (MLFLOW_TRACKING_*)
            return
        raise UriError(_no_answer(uri, reason)) from None
    if kind != "application/json" or not isinstance(_json(body), dict):
        raise UriError(_not_mlflow(uri, f"it answers with {kind}, not MLflow's JSON"))


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


#: What to start when nothing answers at an http URI.
_START_SERVER = (
    "start the tracking server (mlflow server --host HOST --port PORT --backend-store-uri sqlite:///PATH/mlflow.db)"
)


def _no_answer(uri: str, reason: object, start: str = _START_SERVER) -> str:
    if isinstance(reason, socket.gaierror):
        why = "its host name does not resolve"
    elif isinstance(reason, (TimeoutError, socket.timeout)):
        why = f"no answer within {PROBE_TIMEOUT_S:.0f} s"
    else:
        why = str(getattr(reason, "strerror", None) or reason)
    return f"nothing answers at {uri} ({why}): {start} or fix the host and port"


def _not_mlflow(uri: str, why: str) -> str:
    return f"{uri} is not an MLflow tracking server ({why}): check the host, the port and the path of the URI"


__all__ = ["UriError", "check_tracking_uri"]
