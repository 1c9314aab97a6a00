"""A tuned study end to end: equal budgets, phase tags, parent runs, resume after kill -9, the report's section."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from helpers import invoke, run_cli

from studybench.data.carve import carve_fraction
from studybench.store import StudyReader
from studybench.store.layout import (
    KIND_TUNE_PARENT,
    TAG_FOLD,
    TAG_KEY,
    TAG_KIND,
    TAG_PARENT_RUN,
    TAG_PHASE,
    TAG_TRIAL,
    TAG_TUNE_SPLIT,
)

TUNED = """\
study: tinytune
seeds: [0, 1]
baseline: ce
base:
  data: {dataset: synthetic, options: {num_classes: 4, image_size: 32, train_images: 10, val_images: 4}}
  model: {arch: unet, encoder: resnet18, options: {decoder_channels: [32, 16, 16, 8, 8]}}
  train: {epochs: 1, batch_size: 4, lr: 0.01, threads: 1}
grid:
  method: [ce, {name: focal, loss: {name: focal, gamma: 2.0}, tune: {loss.gamma: {low: 0.5, high: 5.0}}}]
tune:
  budget: 3
  split: {fraction: 0.3}
  space:
    train.lr: {low: 1.0e-4, high: 3.0e-2, log: true}
"""


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """The study killed (kill -9) in its second trial, then rerun to the end."""
    folder = tmp_path_factory.mktemp("tuned")
    study = folder / "tuned.yaml"
    study.write_text(TUNED)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env_fault = {"STUDYBENCH_FAULT": "kill@eval:0#t1"}
    os.environ.update(env_fault)
    try:
        killed = run_cli("run", str(study), "--tracking-uri", uri, "--phase", "tune")
    finally:
        os.environ.pop("STUDYBENCH_FAULT")
    rerun = run_cli("run", str(study), "--tracking-uri", uri)
    return folder, study, uri, killed, rerun


@pytest.fixture(scope="module")
def uninterrupted(tuned):
    """The same study run once, without a kill, with --workers 2, into a store of its own."""
    folder, study, _, _, _ = tuned
    uri = f"sqlite:///{folder / 'uninterrupted.db'}"
    result = run_cli("run", str(study), "--tracking-uri", uri, "--workers", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    return uri


def _choices(uri: str) -> dict[str, tuple[str, dict[str, str]]]:
    """fold -> (chosen trial, chosen.<knob> params) of every tune-parent run in the store."""
    runs = StudyReader(uri, "tinytune").runs()
    parents = [r for r in runs if r.data.tags.get(TAG_KIND) == KIND_TUNE_PARENT]
    return {p.data.tags[TAG_FOLD]: (p.data.tags[TAG_TRIAL], dict(p.data.params)) for p in parents}


def _finished_keys(uri: str, phase: str) -> Counter:
    runs = StudyReader(uri, "tinytune").runs()
    return Counter(
        r.data.tags[TAG_KEY] for r in runs if r.data.tags.get(TAG_PHASE) == phase and r.info.status == "FINISHED"
    )


def _trial_entries(uri: str) -> list[dict]:
    manifest = StudyReader(uri, "tinytune").find_manifest(None)
    return [e for e in manifest["runs"] if e.get("phase") == "tune"]


def test_a_kill_during_tuning_ends_on_the_choice_of_an_uninterrupted_run(tuned, uninterrupted):
    _, _, uri, killed, rerun = tuned
    assert killed.returncode != 0 and rerun.returncode == 0
    choices = _choices(uri)
    assert len(choices) == 2 and all(params for _, params in choices.values())
    assert choices == _choices(uninterrupted)  # same trial and knob values in every fold
    for phase in ("tune", "final"):  # the same runs finished, each once, in both stores
        resumed, whole = _finished_keys(uri, phase), _finished_keys(uninterrupted, phase)
        assert resumed == whole and set(resumed.values()) == {1}


def test_the_trial_list_is_the_same_for_every_launch_and_worker_count(tuned, uninterrupted):
    from studybench.store.manifest import MANIFEST_TUNE_SPLIT
    from studybench.study.config import load_study
    from studybench.study.grid import expand
    from studybench.study.phases import tuning_trials

    folder, study_path, uri, _, _ = tuned
    sequential, two_workers = _trial_entries(uri), _trial_entries(uninterrupted)
    assert len(sequential) == 6 and sequential == two_workers  # keys, names, trial indices, folds, split hash
    study = load_study(study_path)
    here = tuning_trials(study, expand(study, source=str(study_path), check_data=False), str(study_path))
    assert [(e["key"], e["trial"], e["fold"]) for e in sequential] == [(t.key, t.trial, t.fold) for t in here]
    carve = carve_fraction([str(i) for i in range(10)], 0.3)  # the synthetic training split's ids
    assert {e[MANIFEST_TUNE_SPLIT] for e in sequential} == {carve.digest}
    runs = StudyReader(uri, "tinytune").runs()
    parents = [r for r in runs if r.data.tags.get(TAG_KIND) == KIND_TUNE_PARENT]
    assert {p.data.tags[TAG_TUNE_SPLIT] for p in parents} == {carve.digest}  # the manifest agrees with the tag


def test_every_fold_gets_the_budget_and_a_kill_loses_and_repeats_nothing(tuned):
    folder, _, uri, killed, rerun = tuned
    assert killed.returncode != 0 and rerun.returncode == 0, rerun.stdout + rerun.stderr
    runs = StudyReader(uri, "tinytune").runs()
    training = [r for r in runs if TAG_PHASE in r.data.tags]
    finished = Counter(r.data.tags["studybench.run_key"] for r in training if r.info.status == "FINISHED")
    assert all(n == 1 for n in finished.values())  # no key trained to the end twice
    trials = [r for r in training if r.data.tags[TAG_PHASE] == "tune" and r.info.status == "FINISHED"]
    per_method = Counter(r.data.tags["studybench.method"] for r in trials)
    assert per_method == {"ce": 3, "focal": 3}
    assert sorted(int(r.data.tags[TAG_TRIAL]) for r in trials) == [0, 0, 1, 1, 2, 2]
    finals = [r for r in training if r.data.tags[TAG_PHASE] == "final"]
    assert len(finals) == 4 and all(r.info.status == "FINISHED" for r in finals)
    parents = {r.info.run_id: r for r in runs if r.data.tags.get(TAG_KIND) == KIND_TUNE_PARENT}
    assert len(parents) == 2 and TAG_PHASE not in next(iter(parents.values())).data.tags
    assert all(r.data.tags.get(TAG_PARENT_RUN) in parents for r in trials)
    carve = carve_fraction([str(i) for i in range(10)], 0.3)  # the synthetic training split's ids
    assert {p.data.tags[TAG_TUNE_SPLIT] for p in parents.values()} == {carve.digest}
    chosen = {p.data.tags[TAG_TRIAL] for p in parents.values()}
    assert chosen <= {"0", "1", "2"} and all(
        any(k.startswith("chosen.") for k in p.data.params) for p in parents.values()
    )
    again = invoke("run", str(folder / "tuned.yaml"), "--tracking-uri", uri)
    assert "0 to run" in again.stdout and "6 already finished" in again.stdout and "4 already finished" in again.stdout


def test_the_report_states_the_budget_and_keeps_trials_out_of_the_main_table(tuned):
    folder, study, uri, _, _ = tuned
    out = folder / "report"
    result = invoke("report", str(study), "--tracking-uri", uri, "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 trials per (method, cell)" in (out / "tuning.md").read_text()
    assert (out / "tuning_budget.png").stat().st_size > 0
    main = (out / "runs.csv").read_text()
    assert " t1 " not in main and "· t" not in main  # the runs table holds the final seeds only


def test_phase_options_are_checked(tuned, tmp_path):
    folder, study, uri, _, _ = tuned
    plain = tmp_path / "plain.yaml"
    plain.write_text(TUNED.split("tune:\n")[0].replace(", tune: {loss.gamma: {low: 0.5, high: 5.0}}", ""))
    assert invoke("run", str(plain), "--phase", "tune", "--tracking-uri", uri).returncode == 2
    only = invoke("run", str(study), "--only", "method=ce", "--tracking-uri", uri)
    assert only.returncode == 2 and "--only" in only.stdout + only.stderr


def test_a_profile_tune_section_runs_the_trials_under_that_profile_only(tmp_path):
    import yaml

    raw = yaml.safe_load(TUNED)
    raw["profiles"] = {"tuned": {"tune": raw.pop("tune")}}
    study = tmp_path / "profiled.yaml"
    study.write_text(yaml.safe_dump(raw))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plain = invoke("run", str(study), "--dry-run", "--tracking-uri", uri)
    assert plain.returncode == 0 and "· t0 ·" not in plain.stdout and "tuning trials" not in plain.stdout
    result = run_cli("run", str(study), "--profile", "tuned", "--phase", "tune", "--tracking-uri", uri)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = StudyReader(uri, "tinytune").runs()
    trials = [r for r in runs if r.data.tags.get(TAG_PHASE) == "tune" and r.info.status == "FINISHED"]
    assert Counter(r.data.tags["studybench.method"] for r in trials) == {"ce": 3, "focal": 3}
    manifest = StudyReader(uri, "tinytune").find_manifest("tuned")
    assert manifest["definition"]["tune"]["budget"] == 3 and len(manifest["runs"]) == 6


def test_an_ablation_of_a_tuned_knob_exits_2_and_writes_nothing(tmp_path):
    study = tmp_path / "clash.yaml"
    study.write_text(TUNED + "ablations:\n  rates: {of: focal, vary: {train.lr: [0.001, 0.1]}}\n")
    store = tmp_path / "mlflow.db"
    result = invoke("run", str(study), "--tracking-uri", f"sqlite:///{store}")
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2 and "ablations.rates.vary.train.lr: varies train.lr" in out
    assert "(tune.space.train.lr)" in out and not store.exists()
