"""What a new user and an attacker hit first (issue 26): each mistake gets one message, exit 2, nothing written."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from pathlib import Path

import pytest
from helpers import TINY_STUDY, invoke


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# --------------------------------------------------------------------------- tracking URIs
@pytest.mark.parametrize(
    ("uri", "said"),
    [
        ("sqlite:///:memory:", "in-memory database"),
        ("sqlite://", "in-memory database"),
        ("file:///{tmp}/store", "sqlite:///{tmp}/store/mlflow.db"),
        ("{tmp}/store.db", "sqlite:///{tmp}/store.db"),
        ("postgresql+pg8000://u@127.0.0.1/db", "driver 'pg8000' is not installed"),
        ("postgresql+psycopg2://u:secret@127.0.0.1:{closed}/db", "nothing answers at postgresql+psycopg2://u:***@"),
        ("http://127.0.0.1:{closed}", "nothing answers at http://127.0.0.1:{closed} (Connection refused)"),
        ("http://no-such-host.invalid:5000", "its host name does not resolve"),
    ],
)
def test_a_tracking_uri_that_cannot_hold_a_study_is_refused_in_seconds(tmp_path, uri, said):
    closed = free_port()
    uri, said = (s.format(tmp=tmp_path, closed=closed) for s in (uri, said))
    started = time.monotonic()
    result = invoke("status", "--study", "tiny", "--tracking-uri", uri, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert time.monotonic() - started < 30
    assert "invalid tracking URI" in result.stderr and said in " ".join(result.stderr.split()), result.stderr
    assert "secret" not in result.stderr
    assert files_under(tmp_path) == set()


def test_plain_postgresql_names_the_extra_and_the_driver_form(tmp_path):
    pytest.importorskip("sqlalchemy")
    try:
        import psycopg  # noqa: F401 - SQLAlchemy's default PostgreSQL driver
    except ImportError:
        pass
    else:
        pytest.skip("psycopg is installed: postgresql:// has its driver")
    result = invoke("status", "--study", "tiny", "--tracking-uri", "postgresql://u@127.0.0.1/db", cwd=tmp_path)
    text = " ".join(result.stderr.split())
    assert result.returncode == 2 and "studybench[postgres]" in text and "postgresql+psycopg2://u@127.0.0.1/db" in text


def test_an_http_server_that_is_not_mlflow_is_named_so(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        result = invoke("status", "--study", "tiny", "--tracking-uri", uri, cwd=tmp_path)
    finally:
        server.shutdown()
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{uri} is not an MLflow tracking server" in " ".join(result.stderr.split()), result.stderr


def test_run_into_an_in_memory_store_trains_nothing_and_writes_nothing(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(TINY_STUDY)
    result = invoke("run", str(study), "--tracking-uri", "sqlite:///:memory:", cwd=tmp_path)
    assert result.returncode == 2 and "in-memory database" in result.stderr, result.stdout + result.stderr
    assert files_under(tmp_path) == {"study.yaml"}


# --------------------------------------------------------------------------- study files
def test_a_control_character_in_a_study_names_its_line_and_column(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_bytes(b"study: tiny\nseeds: [0]\ndescription: a\x00b\n")
    result = invoke("validate", str(study), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{study}: line 3, column 15: control character U+0000" in " ".join(result.stderr.split()), result.stderr
