"""One study, one truth: the report and status cover exactly the study's grid (real CLI, real MLflow)."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pandas as pd
import pytest
from helpers import SMALL_BASE, invoke, run_study
from mlflow.tracking import MlflowClient

from studybench.store import StudyWriter
from studybench.store.layout import TAG_KEY, records_experiment
from studybench.store.writer import empty_store_template, ensure_store

STUDY = (
    """\
study: scope
description: the scope of a report
seeds: [0, 1]
baseline: ce
"""
    + SMALL_BASE
    + """\
grid:
  method: [ce, {name: focal2, loss: {name: focal, gamma: 2}}]
"""
)


def training_runs(uri: str, study: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(study)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def scoped(tmp_path_factory) -> dict:
    """The study, run once; then a changed-epochs run and an extra seed of one method under the same name."""
    root = tmp_path_factory.mktemp("scope")
    study, uri = run_study(root, STUDY)
    first = invoke("report", str(study), "--tracking-uri", uri, "--out", str(root / "before"), cwd=root)
    assert first.returncode == 0, first.stderr
    changed = root / "changed.yaml"
    changed.write_text(STUDY.replace("epochs: 1", "epochs: 2"))
    other = invoke("run", str(changed), "--tracking-uri", uri, "--only", "method=ce,seed=0", cwd=root)
    assert other.returncode == 0, other.stdout + other.stderr
    more = root / "more.yaml"
    more.write_text(STUDY.replace("seeds: [0, 1]", "seeds: [0, 1, 2]"))
    extra = invoke("run", str(more), "--tracking-uri", uri, "--only", "method=ce,seed=2", cwd=root)
    assert extra.returncode == 0, extra.stdout + extra.stderr
    return {"root": root, "study": study, "uri": uri}


def test_report_covers_exactly_the_study_and_counts_what_it_left_out(scoped):
    root, uri = scoped["root"], scoped["uri"]
    assert len(training_runs(uri, "scope")) == 6
    built = invoke("report", str(scoped["study"]), "--tracking-uri", uri, "--out", str(root / "after"), cwd=root)
    assert built.returncode == 0, built.stderr
    warnings = " ".join(built.stderr.split())
    assert "2 finished run(s) of other configurations in this experiment were left out" in warnings
    main = pd.read_csv(root / "after" / "main.csv")
    assert main["n"].tolist() == [2, 2]  # each cell's n is the number of runs it averages
    runs = pd.read_csv(root / "after" / "runs.csv")
    assert len(runs) == 4 and runs["run"].is_unique
    before = pd.read_csv(root / "before" / "main.csv")
    pd.testing.assert_frame_equal(before, main)  # the other runs changed no number
    assert "left out" in (root / "after" / "README.md").read_text()
    assert "setups" not in warnings  # one machine, one torch, one thread count


def test_the_report_of_a_grown_study_warns_about_pending_runs_and_unequal_n(scoped):
    root, uri = scoped["root"], scoped["uri"]
    more = root / "more.yaml"
    built = invoke("report", str(more), "--tracking-uri", uri, "--out", str(root / "more"), cwd=root)
    assert built.returncode == 0, built.stderr
    warnings = " ".join(built.stderr.split())
    assert "1 run(s) of the study pending" in warnings and "focal2 · unet · s2" in warnings
    assert "unequal number of seeds per cell" in warnings
    main = pd.read_csv(root / "more" / "main.csv").set_index("method")
    assert main.loc["ce", "n"] == 3 and main.loc["focal2", "n"] == 2


def test_report_is_rebuilt_from_the_store_alone(scoped, tmp_path):
    root, uri = scoped["root"], scoped["uri"]
    invoke("run", str(scoped["study"]), "--tracking-uri", uri, cwd=root)  # its manifest is the latest again
    gone = tmp_path / "elsewhere"
    gone.mkdir()
    built = invoke("report", "--study", "scope", "--tracking-uri", uri, "--out", str(gone / "r"), cwd=gone)
    assert built.returncode == 0, built.stdout + built.stderr
    pd.testing.assert_frame_equal(pd.read_csv(root / "before" / "main.csv"), pd.read_csv(gone / "r" / "main.csv"))
    assert "baseline: ce" in (gone / "r" / "README.md").read_text()  # the definition came from the manifest
    state = invoke("status", "--study", "scope", "--tracking-uri", uri, cwd=gone)
    assert state.returncode == 0 and "4 done, 0 failed, 0 running, 0 pending" in state.stdout, state.stdout


def test_an_equivalent_study_and_a_second_run_add_no_run(scoped):
    root, uri = scoped["root"], scoped["uri"]
    same = root / "same.yaml"
    same.write_text(
        STUDY.replace("{name: focal, gamma: 2}", "{gamma: 2.0, name: focal}").replace("threads: 1", "threads: 2")
    )
    count = len(training_runs(uri, "scope"))
    for path in (scoped["study"], same):
        again = invoke("run", str(path), "--tracking-uri", uri, cwd=root)
        assert again.returncode == 0 and "4 already finished, 0 to run" in " ".join(again.stdout.split()), again.stdout
    assert len(training_runs(uri, "scope")) == count


def test_records_never_appear_among_the_training_runs(scoped):
    uri = scoped["uri"]
    assert all(TAG_KEY in r.data.tags for r in training_runs(uri, "scope"))
    client = MlflowClient(tracking_uri=uri)
    records = client.search_runs([client.get_experiment_by_name(records_experiment("scope")).experiment_id])
    kinds = {r.data.tags["studybench.kind"] for r in records}
    assert kinds == {"manifest", "report"}
    exp = client.get_experiment_by_name("scope")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs table


@pytest.mark.parametrize("command", ["status", "report"])
def test_a_missing_store_is_an_error_that_creates_nothing(command, tmp_path, write_study):
    study = write_study(STUDY)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = invoke(command, str(study), cwd=empty)
    assert out.returncode == 2, out.stdout + out.stderr
    message = " ".join(out.stderr.split())
    assert f"no MLflow store at {empty / 'results' / 'mlflow.db'}" in message and "--tracking-uri" in message
    assert list(empty.iterdir()) == []


def test_a_study_name_without_a_manifest_lists_what_is_recorded(scoped):
    out = invoke("report", "--study", "nope", "--tracking-uri", scoped["uri"], cwd=scoped["root"])
    assert out.returncode == 2 and "no recorded manifest" in " ".join(out.stderr.split()), out.stderr


def test_runs_scored_on_cropped_labels_are_flagged():
    from studybench.report import _deviations

    frame = pd.DataFrame({"eval_labels": ["native", "centre-crop", "centre-crop"]})
    assert _deviations(frame) and _deviations(frame)[0].startswith("2 run(s) were scored on resized, centre-cropped")
    assert _deviations(frame.iloc[:1]) == []


def test_a_cpu_run_records_the_vector_isa_its_kernels_used():
    """One run key gives other float results on another ISA (AVX2 vs AVX512): the device tag says which."""
    import torch

    from studybench.store.layout import TAG_DEVICE
    from studybench.store.writer import environment_tags

    if torch.cuda.is_available():
        pytest.skip("a GPU run records the GPU")
    assert torch.backends.cpu.get_cpu_capability() in environment_tags()[TAG_DEVICE]


def _schema(db) -> tuple:
    """Tables with their columns, indexes, and the migration reached (MLflow's own SQL text is not
    reproducible: the order of a CHECK constraint's values changes from one build to the next)."""
    with closing(sqlite3.connect(db)) as con:
        objects = sorted(con.execute("SELECT type, name, tbl_name FROM sqlite_master").fetchall())
        columns = {t: con.execute(f'PRAGMA table_info("{t}")').fetchall() for kind, t, _ in objects if kind == "table"}
        return objects, columns, con.execute("SELECT version_num FROM alembic_version").fetchall()


def test_a_new_store_is_a_copy_of_the_cached_empty_store_or_built_where_nothing_can_be_cached(tmp_path, monkeypatch):
    """A copy of the cached empty store has MLflow's own schema; with no writable cache, MLflow builds it."""
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    assert empty_store_template() is None
    ensure_store(f"sqlite:///{tmp_path / 'built' / 'mlflow.db'}")  # MLflow's migrations, as before

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    copied = tmp_path / "copied" / "mlflow.db"
    ensure_store(f"sqlite:///{copied}")
    assert empty_store_template().parent == tmp_path / "cache" / "studybench"
    assert _schema(copied) == _schema(tmp_path / "built" / "mlflow.db")
    writer = StudyWriter(f"sqlite:///{copied}", "copy")
    assert writer.experiment_id("copy") is None and writer.ensure_experiment() == writer.experiment_id("copy")
    default = MlflowClient(f"sqlite:///{copied}").get_experiment("0").artifact_location
    assert default == (copied.parent / "artifacts" / "Default").as_uri()  # beside the store, not the cache


def test_a_report_over_runs_of_two_thread_counts_says_so(tmp_path):
    """Threads are not in the run key (a runtime choice, like the device) but change CPU float results."""
    study = tmp_path / "study.yaml"
    study.write_text(STUDY.replace("method: [ce, {name: focal2, loss: {name: focal, gamma: 2}}]", "method: [ce]"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = invoke("run", str(study), "--tracking-uri", uri, "--only", "seed=0", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    study.write_text(study.read_text().replace("threads: 1", "threads: 2"))  # the same keys
    rest = invoke("run", str(study), "--tracking-uri", uri, cwd=tmp_path)
    assert "1 already finished, 1 to run" in rest.stdout, rest.stdout
    built = invoke("report", str(study), "--tracking-uri", uri, "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    warnings = " ".join(built.stderr.split())
    assert (
        "computed on 2 setups" in warnings and "· 1 thread (1 runs)" in warnings and "· 2 threads (1 runs)" in warnings
    )
    assert "computed on 2 setups" in " ".join((tmp_path / "r" / "index.html").read_text().split())
