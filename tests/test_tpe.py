"""``sampler: tpe``: real Optuna, a real MLflow store, a tiny study.

Every fold gets exactly ``budget`` trials, a second run trains nothing, a study killed (kill -9)
mid-tuning and rerun asks and chooses exactly what an uninterrupted run of the same seed did, and
without Optuna a TPE study exits 2 before anything is written.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from helpers import TINY_TUNED, invoke, run_cli

from studybench.store import StudyReader
from studybench.store.layout import KIND_TUNE_PARENT, TAG_KIND, TAG_PHASE, TAG_SAMPLER, TAG_TRIAL

optuna = pytest.importorskip("optuna")

TPE_STUDY = TINY_TUNED.replace("study: tinytuned", "study: tinytpe").replace(
    "  budget: 3\n", "  budget: 3\n  seed: 7\n  sampler: tpe\n"
)
BUDGET, METHODS = 3, ("ce", "focal")


def _training_runs(uri: str) -> list:
    return [r for r in StudyReader(uri, "tinytpe").runs() if TAG_PHASE in r.data.tags]


def _trials(uri: str) -> dict[tuple[str, int], str]:
    """(method, trial index) -> run key of every finished tuning trial."""
    runs = [r for r in _training_runs(uri) if r.data.tags[TAG_PHASE] == "tune" and r.info.status == "FINISHED"]
    return {
        (r.data.tags["studybench.method"], int(r.data.tags[TAG_TRIAL])): r.data.tags["studybench.run_key"] for r in runs
    }


def _chosen(uri: str) -> dict[str, dict]:
    parents = [r for r in StudyReader(uri, "tinytpe").runs() if r.data.tags.get(TAG_KIND) == KIND_TUNE_PARENT]
    return {r.info.run_name: {**r.data.params, "trial": r.data.tags.get(TAG_TRIAL)} for r in parents}


def _study_folder(folder: Path) -> tuple[Path, Path, str]:
    """(folder, its study file holding ``TPE_STUDY``, the tracking URI of a store under it)."""
    study = folder / "study.yaml"
    study.write_text(TPE_STUDY)
    return folder, study, f"sqlite:///{folder / 'results' / 'mlflow.db'}"


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The study run once, uninterrupted, in this process."""
    folder, study, uri = _study_folder(tmp_path_factory.mktemp("straight"))
    ran = invoke("run", str(study), "--tracking-uri", uri)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return folder, study, uri


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """The same study killed (SIGKILL) in trial 2's first epoch, then rerun to the end."""
    folder, study, uri = _study_folder(tmp_path_factory.mktemp("killed"))
    os.environ["STUDYBENCH_FAULT"] = "kill@eval:0#t2"
    try:
        first = run_cli("run", str(study), "--tracking-uri", uri)
    finally:
        os.environ.pop("STUDYBENCH_FAULT")
    rerun = run_cli("run", str(study), "--tracking-uri", uri)
    return folder, uri, first, rerun


def test_every_fold_gets_exactly_the_budget_tagged_tpe_under_its_parent(straight):
    folder, _, uri = straight
    trials = _trials(uri)
    assert Counter(method for method, _ in trials) == {m: BUDGET for m in METHODS}
    assert sorted(index for _, index in trials) == sorted(list(range(BUDGET)) * len(METHODS))
    runs = _training_runs(uri)
    assert all(r.data.tags[TAG_SAMPLER] == "tpe" for r in runs if r.data.tags[TAG_PHASE] == "tune")
    finals = [r for r in runs if r.data.tags[TAG_PHASE] == "final"]
    assert len(finals) == len(METHODS) and all(r.info.status == "FINISHED" for r in finals)
    chosen = _chosen(uri)
    assert len(chosen) == len(METHODS) and all(c["trial"] in {"0", "1", "2"} for c in chosen.values())
    # Optuna's storage sits beside the store and holds each fold's search: budget trials, all told
    journal = folder / "results" / "optuna" / "mlflow.db" / "tinytpe.journal"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    searches = optuna.get_all_study_summaries(storage)
    assert len(searches) == len(METHODS) and all(s.n_trials == BUDGET for s in searches)
    for summary in searches:
        states = {t.state for t in optuna.load_study(study_name=summary.study_name, storage=storage).trials}
        assert states == {optuna.trial.TrialState.COMPLETE}


def test_trial_zero_is_the_configured_setting_and_values_are_typed(straight):
    _, _, uri = straight
    runs = {(r.data.tags["studybench.method"], r.data.tags.get(TAG_TRIAL)): r for r in _training_runs(uri)}
    assert float(runs[("ce", "0")].data.params["train.lr"]) == 0.01
    assert float(runs[("focal", "0")].data.params["loss.gamma"]) == 2.0
    lrs = [float(r.data.params["train.lr"]) for (m, t), r in runs.items() if t not in (None, "0")]
    assert len(lrs) == (BUDGET - 1) * len(METHODS) and all(1e-4 <= lr <= 3e-2 for lr in lrs)


def test_a_second_run_trains_nothing(straight):
    _, study, uri = straight
    before = len(_training_runs(uri))
    again = invoke("run", str(study), "--tracking-uri", uri)
    assert again.returncode == 0 and "0 to run" in again.stdout, again.stdout
    assert len(_training_runs(uri)) == before


def test_a_kill_mid_tuning_loses_and_repeats_nothing_and_asks_what_an_uninterrupted_run_asked(straight, killed):
    _, uri, first, rerun = killed
    assert first.returncode != 0 and rerun.returncode == 0, rerun.stdout + rerun.stderr
    keyed = Counter(r.data.tags["studybench.run_key"] for r in _training_runs(uri) if r.info.status == "FINISHED")
    assert keyed and all(n == 1 for n in keyed.values())  # no key trained to the end twice
    assert any(r.info.status == "KILLED" for r in _training_runs(uri))  # the kill did cut a trial
    # same seed, same trials (so the same run keys), same choice as the uninterrupted run
    assert _trials(uri) == _trials(straight[2])
    assert _chosen(uri) == _chosen(straight[2])


def test_the_report_reads_a_tpe_study(straight):
    folder, study, uri = straight
    out = folder / "report"
    result = invoke("report", str(study), "--tracking-uri", uri, "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "asked of TPE" in (out / "tuning.md").read_text()


def test_validate_and_dry_run_say_trials_are_chosen_adaptively(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(TPE_STUDY)
    valid = invoke("validate", str(study))
    assert valid.returncode == 0 and "budget 3 trials per fold, chosen adaptively by TPE" in valid.stdout
    dry = invoke("run", str(study), "--dry-run", "--tracking-uri", f"sqlite:///{tmp_path / 'x.db'}")
    assert dry.returncode == 0 and "trial 0 of each of the 2 folds" in dry.stdout, dry.stdout
    assert not (tmp_path / "x.db").exists()


def test_without_optuna_a_tpe_study_exits_2_naming_the_extra_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError, as when not installed
    study = tmp_path / "study.yaml"
    study.write_text(TPE_STUDY)
    for args in (("validate", str(study)), ("run", str(study), "--tracking-uri", f"sqlite:///{tmp_path / 'r.db'}")):
        result = invoke(*args)
        assert result.returncode == 2 and "pip install 'studybench[tune]'" in result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (("log: true}", "log: true}\n    train.optimizer: {choices: [sgd, adamw]}"), "not among its choices"),
        (("{low: 0.5, high: 5.0}", "{choices: [0.5, [1.0]]}"), "TPE takes choices of numbers"),
    ],
)
def test_knobs_tpe_cannot_take_are_refused_before_anything_runs(edit, message, tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(TPE_STUDY.replace(*edit))
    result = invoke("validate", str(study))
    assert result.returncode == 2 and message in result.stdout + result.stderr, result.stdout


def test_a_second_launch_is_refused_while_one_drives_tpe_and_a_server_store_is_refused(tmp_path):
    from studybench.study.tpe import TpeError, tpe_storage

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tpe_storage(uri, "tinytpe"):
        with pytest.raises(TpeError, match="another launch is tuning"):
            with tpe_storage(uri, "tinytpe"):
                pass
    with tpe_storage(uri, "tinytpe"):  # released when the first leaves (or dies: flock)
        pass
    with pytest.raises(TpeError, match="http tracking server"):
        with tpe_storage("http://127.0.0.1:5000", "tinytpe"):
            pass


def test_asks_depend_on_the_seed_and_the_told_scores_only():
    """Two searches in fresh storages, told the same scores, ask the same settings; another seed differs."""
    from studybench.study.config import Study
    from studybench.study.grid import expand
    from studybench.study.phases import tuning_trials
    from studybench.study.tpe import fold_searches

    def asked(seed: int) -> list[dict]:
        raw = yaml.safe_load(TPE_STUDY)
        raw["tune"]["seed"], raw["tune"]["budget"] = seed, 14
        study = Study.model_validate(raw)
        first = tuning_trials(study, expand(study, check_data=False), "s.yaml")
        focal = fold_searches(optuna.storages.InMemoryStorage(), study, first, "s.yaml")[1]
        out = []
        while focal.left():
            for spec in focal.ask(2):
                out.append({"lr": spec.config.train.lr, "gamma": spec.config.loss.params["gamma"]})
                focal.tell({spec.key: [1.0 - abs(spec.config.loss.params["gamma"] - 3.0) / 3]})
        return out

    one, again, other = asked(7), asked(7), asked(8)
    assert len(one) == 14 and one == again and one[1:] != other[1:]
    assert one[0] == {"lr": 0.01, "gamma": 2.0}
    assert all(isinstance(v["gamma"], float) and 0.5 <= v["gamma"] <= 5.0 for v in one[1:])


@pytest.fixture
def postgres_database():
    """A private PostgreSQL on 127.0.0.1 with an empty database ``mlflow``; yields its SQLAlchemy URI."""
    import shutil
    import subprocess
    import tempfile

    from test_postgres import as_owner, free_port, postgres_bin, postgres_missing

    reason = postgres_missing()
    if reason:
        pytest.skip(reason)
    root, port = Path(tempfile.mkdtemp(prefix="sb-pg-")), free_port()  # pytest's tmp_path is closed to postgres
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    run = {"check": True, "capture_output": True, "timeout": 120}
    subprocess.run(as_owner([postgres_bin("initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "postgres", "--no-sync"]), **run)  # fmt: skip
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    pg_ctl = as_owner([postgres_bin("pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"), "-o", options])
    subprocess.run([*pg_ctl, "-w", "start"], **run)
    try:
        subprocess.run(as_owner([postgres_bin("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow"]), **run)  # fmt: skip
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_a_postgresql_store_keeps_optuna_in_a_schema_of_its_own(postgres_database, tmp_path):
    import sqlalchemy

    from studybench.study.tpe import OPTUNA_SCHEMA

    study = tmp_path / "study.yaml"
    study.write_text(TPE_STUDY.replace("budget: 3", "budget: 2"))
    checkpoints = str(tmp_path / "checkpoints")
    ran = invoke("run", str(study), "--tracking-uri", postgres_database, "--checkpoint-dir", checkpoints)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    trials = [r for r in StudyReader(postgres_database, "tinytpe").runs() if r.data.tags.get(TAG_PHASE) == "tune"]
    assert Counter(r.data.tags["studybench.method"] for r in trials) == {m: 2 for m in METHODS}
    engine = sqlalchemy.create_engine(postgres_database)
    try:
        with engine.connect() as db:
            tables = set(sqlalchemy.inspect(db).get_table_names(schema=OPTUNA_SCHEMA))
            searches = db.execute(sqlalchemy.text(f"SELECT count(*) FROM {OPTUNA_SCHEMA}.studies")).scalar()
            told = db.execute(sqlalchemy.text(f"SELECT count(*) FROM {OPTUNA_SCHEMA}.trial_values")).scalar()
            mlflow_tables = set(sqlalchemy.inspect(db).get_table_names(schema="public"))
    finally:
        engine.dispose()
    assert {"studies", "trials", "alembic_version"} <= tables and searches == len(METHODS) and told == 2 * len(METHODS)
    assert "studies" not in mlflow_tables and "runs" in mlflow_tables  # MLflow's schema holds none of Optuna's tables
