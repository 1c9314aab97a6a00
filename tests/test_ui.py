"""`studybench ui` serves the MLflow UI for our store on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

from helpers import REPO, invoke


def test_ui_refuses_a_port_outside_1_to_65535_before_starting_anything(tmp_path):
    for port in ("70000", "-1", "0"):
        result = invoke("ui", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--port", port, cwd=tmp_path)
        assert result.returncode == 2 and "--port" in result.stdout + result.stderr, (port, result.stdout)
    assert list(tmp_path.iterdir()) == []


def test_ui_on_a_missing_store_says_there_is_nothing_to_show_and_creates_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}"
    result = invoke("ui", "--tracking-uri", uri, cwd=tmp_path)
    assert result.returncode == 2 and "nothing to show" in result.stderr, result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_installed_mlflow_is_in_the_range_the_ui_tests_cover():
    """The UI's quiet hooks (studybench._ui_server) touch MLflow's server internals: pyproject pins the range."""
    import tomllib
    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(Requirement(d) for d in deps if Requirement(d).name == "mlflow")
    assert any(s.operator == "<" for s in pin.specifier), f"{pin}: no upper bound"
    assert pin.specifier.contains(version("mlflow")), (str(pin), version("mlflow"))


def test_the_ui_server_sees_no_half_imported_auth_plugin():
    """In the server process the quiet hook marks ``mlflow.server.auth`` absent: the Assistant panel's check
    answers False at once and a runs search's ``from mlflow.server import auth`` fails fast (ImportError)."""
    code = (
        "import studybench._ui_server as q, logging, sys; f = q.known_noise();"
        "from mlflow.server.assistant.identity import auth_plugin_active; assert auth_plugin_active() is False;"
        "exec('try:\\n from mlflow.server import auth\\nexcept ImportError: print(\\'absent\\')');"
        "r = logging.LogRecord('mlflow.server.handlers', 40, '', 0, 'Presigned download is not supported for x', None, None);"
        "s = logging.LogRecord('mlflow.server.handlers', 40, '', 0, 'database is locked', None, None);"
        "print(f.filter(r), f.filter(s))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["absent", "False", "True"], out.stdout


def test_ui_links_open_each_study_on_its_runs_in_model_training_mode(tmp_path):
    from studybench.store import StudyWriter
    from studybench.store.layout import records_experiment
    from studybench.ui import study_links

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert study_links(uri, 5077) == []  # no store yet: nothing to link, nothing created
    assert not (tmp_path / "mlflow.db").exists()
    store = StudyWriter(uri, "tiny")
    exp_id = store.ensure_experiment()
    store.ensure_experiment(records_experiment("tiny"))
    links = study_links(uri, 5077)
    assert [name for name, _ in links] == ["tiny"]  # not MLflow's Default, not the records experiment
    url = links[0][1]
    assert url.startswith(f"http://127.0.0.1:5077/#/experiments/{exp_id}/runs?")
    assert "workflowType=machine_learning" in url and "orderByKey=metrics.%60miou%60&orderByAsc=false" in url
