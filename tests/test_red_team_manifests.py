"""Red team, manifests: a bad manifest in the store never ends ``status`` or ``report`` in a traceback.

One real study is trained once for the module; each case works on a copy of its SQLite store
and records a planted manifest (newer than the good one) the way ``run`` records one. Then
``status`` (by file and by ``--study``) skips it with a warning naming it and uses the good
one; with no good one left, ``--study`` exits 2 saying what to do.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from helpers import TINY_STUDY, invoke, run_study
from mlflow.tracking import MlflowClient

from studybench.store.layout import (
    ARTIFACT_MANIFEST,
    KIND_MANIFEST,
    TAG_KIND,
    TAG_LAST_USED,
    TAG_MANIFEST_HASH,
    records_experiment,
)

STUDY = TINY_STUDY.replace("epochs: 2", "epochs: 1")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str]:
    """The tiny study run once: (its folder, its store URI)."""
    root = tmp_path_factory.mktemp("trained")
    _, uri = run_study(root, STUDY)
    return root, uri


@pytest.fixture
def store(trained, tmp_path) -> tuple[Path, str, MlflowClient]:
    """A copy of the trained store (its artifacts stay where they are; new records get new run ids)."""
    root, _ = trained
    (tmp_path / "results").mkdir()
    shutil.copyfile(root / "results" / "mlflow.db", tmp_path / "results" / "mlflow.db")
    shutil.copyfile(root / "study.yaml", tmp_path / "study.yaml")
    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    return tmp_path, uri, MlflowClient(uri)


def _good_record(client: MlflowClient):
    exp = client.get_experiment_by_name(records_experiment("tiny"))
    (record,) = client.search_runs([exp.experiment_id], f"tags.`{TAG_KIND}` = '{KIND_MANIFEST}'")
    return record


def _plant(client: MlflowClient, content: bytes | None, artifact: str = ARTIFACT_MANIFEST) -> str:
    """A manifest record like the good one, newest, holding ``content`` (None: no artifact at all)."""
    good = _good_record(client)
    tags = {**{k: v for k, v in good.data.tags.items() if k.startswith("studybench.")}}
    tags[TAG_LAST_USED] = f"{time.time() + 1000:.3f}"
    run_id = client.create_run(good.info.experiment_id, run_name="planted", tags=tags).info.run_id
    if content is not None:
        folder = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
        target = folder / artifact
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _good_manifest(client: MlflowClient) -> dict:
    good = _good_record(client)
    folder = Path(good.info.artifact_uri.removeprefix("file://"))
    return json.loads((folder / ARTIFACT_MANIFEST).read_text())


def _edited(change) -> callable:
    """Content built by ``change(manifest)`` from the good manifest (returns the new value)."""
    return lambda good: json.dumps(change(good)).encode()


def _without(key):
    return _edited(lambda m: {k: v for k, v in m.items() if k != key})


def _with(key, value):
    return _edited(lambda m: {**m, key: value})


def _entries(change):
    return _edited(lambda m: {**m, "runs": [change(dict(e)) for e in m["runs"]]})


def _other_study(m):
    return {**m, "definition": {**m["definition"], "study": "someone-else"}}


CONTENTS = {
    "garbage-json": lambda good: b"{not json",
    "empty": lambda good: b"",
    "not-utf8": lambda good: b"\xff\xfe\x00garbage",
    "a-list": lambda good: b"[1, 2]",
    "a-string": lambda good: b'"runs"',
    "a-number": lambda good: b"42",
    "null": lambda good: b"null",
    "missing-runs": _without("runs"),
    "missing-definition": _without("definition"),
    "missing-seeds": _without("seeds"),
    "missing-schema": _without("schema"),
    "future-schema": _with("schema", 99),
    "runs-a-mapping": _with("runs", {"a": 1}),
    "runs-a-string": _with("runs", "ce"),
    "garbage-entries": _with("runs", [1, None, "x"]),
    "entry-without-key": _entries(lambda e: {k: v for k, v in e.items() if k != "key"}),
    "entry-key-a-number": _entries(lambda e: {**e, "key": 7}),
    "entry-without-name": _entries(lambda e: {k: v for k, v in e.items() if k != "name"}),
    "entry-seed-a-string": _entries(lambda e: {**e, "seed": "zero"}),
    "duplicate-keys": _edited(lambda m: {**m, "runs": [m["runs"][0], m["runs"][0]]}),
    "invalid-definition": _edited(lambda m: {**m, "definition": {**m["definition"], "seeds": "many"}}),
    "definition-unknown-key": _edited(lambda m: {**m, "definition": {**m["definition"], "hack": 1}}),
    "definition-a-list": _with("definition", [1]),
    "another-studys-definition": _edited(_other_study),
}


def _status_ok(root: Path, uri: str, planted: str) -> None:
    """``status`` by file and by name: exit 0 from the good manifest, a warning naming the planted record."""
    for args in (["status", str(root / "study.yaml")], ["status", "--study", "tiny"]):
        result = invoke(*args, "--tracking-uri", uri, cwd=root)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "2 done" in result.stdout and "Traceback" not in result.stderr
        assert planted in result.stderr and "unusable" in result.stderr and "studybench run" in result.stderr


@pytest.mark.parametrize("case", list(CONTENTS))
def test_a_bad_manifest_is_skipped_with_a_warning(case, store):
    root, uri, client = store
    planted = _plant(client, CONTENTS[case](_good_manifest(client)))
    _status_ok(root, uri, planted)


@pytest.mark.parametrize("case", ["missing-artifact", "artifact-is-a-folder"])
def test_a_manifest_record_without_its_artifact_is_skipped(case, store):
    root, uri, client = store
    if case == "missing-artifact":
        planted = _plant(client, None)
    else:
        planted = _plant(client, b"{}", artifact=f"{ARTIFACT_MANIFEST}/inside.json")
    _status_ok(root, uri, planted)


def test_an_oversized_manifest_is_skipped_before_it_is_read(store, monkeypatch):
    from studybench.store import manifest

    root, uri, client = store
    monkeypatch.setattr(manifest, "MAX_MANIFEST_BYTES", 100_000)  # the limit, scaled down to a quick test
    planted = _plant(client, b" " * 200_000 + b"{}")
    _status_ok(root, uri, planted)
    result = invoke("status", "--study", "tiny", "--tracking-uri", uri, cwd=root)
    assert "more than 100000" in result.stderr


@pytest.mark.parametrize("value", ["soon", "nan", "inf", ""])
def test_a_non_numeric_last_used_does_not_break_the_order(value, store):
    root, uri, client = store
    client.set_tag(_good_record(client).info.run_id, TAG_LAST_USED, value)
    result = invoke("status", "--study", "tiny", "--tracking-uri", uri, cwd=root)
    assert result.returncode == 0 and "2 done" in result.stdout, result.stdout + result.stderr


def test_with_only_bad_manifests_status_by_name_says_what_to_do_and_by_file_reads_the_file(store):
    root, uri, client = store
    good = _good_record(client).info.run_id
    planted = _plant(client, b"{not json")
    client.delete_run(good)
    by_name = invoke("status", "--study", "tiny", "--tracking-uri", uri, cwd=root)
    assert by_name.returncode == 2 and planted in by_name.stderr and "Traceback" not in by_name.stderr
    assert "no recorded manifest" in by_name.stderr
    by_file = invoke("status", str(root / "study.yaml"), "--tracking-uri", uri, cwd=root)
    assert by_file.returncode == 0 and "2 done" in by_file.stdout, by_file.stdout + by_file.stderr


def test_a_report_skips_a_bad_manifest(store):
    root, uri, client = store
    planted = _plant(client, b"[]")
    built = invoke("report", str(root / "study.yaml"), "--tracking-uri", uri, "--out", str(root / "r"), cwd=root)
    assert built.returncode == 0, built.stdout + built.stderr
    assert planted in built.stderr and (root / "r" / "main.csv").is_file()


def test_swapped_names_in_a_manifest_do_not_swap_the_numbers(store):
    """Each status row shows the run's own name with the run's own mIoU, whatever the manifest calls it."""
    root, uri, client = store
    manifest = _good_manifest(client)
    first, second = manifest["runs"]
    first["name"], second["name"] = second["name"], first["name"]
    _plant(client, json.dumps(manifest).encode())  # a valid manifest: used, not skipped
    exp = client.get_experiment_by_name("tiny")
    truth = {r.info.run_name: r.data.metrics["miou"] for r in client.search_runs([exp.experiment_id])}
    result = invoke("status", "--study", "tiny", "--tracking-uri", uri, cwd=root)
    assert result.returncode == 0, result.stderr
    for name, miou in truth.items():
        (row,) = [line for line in result.stdout.splitlines() if [c.strip() for c in line.split("│")][1:2] == [name]]
        assert f"{miou:.4f}" in row, (name, row)


@pytest.mark.parametrize("experiment", ["tiny", records_experiment("tiny")])
def test_a_deleted_experiment_is_restored_by_the_next_run(experiment, store):
    root, uri, client = store
    client.delete_experiment(client.get_experiment_by_name(experiment).experiment_id)
    again = invoke("run", str(root / "study.yaml"), "--tracking-uri", uri, cwd=root)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "restored" in again.stderr and "mlflow gc" in again.stderr
    assert client.get_experiment_by_name(experiment).lifecycle_stage == "active"
    assert "2 already finished, 0 to run" in again.stdout  # its runs are back, nothing retrained


def test_a_planted_record_with_the_right_hash_tag_does_not_stand_in_for_the_manifest(store):
    """`run` reuses a manifest record only if it holds the manifest, so the warning's advice (run again) works."""
    from studybench.api import load_runs
    from studybench.store.manifest import build_manifest, manifest_hash

    root, uri, client = store
    study, specs, _ = load_runs(root / "study.yaml", None, check_data=False)
    digest = manifest_hash(build_manifest(study, specs, None, (root / "study.yaml").resolve()))
    planted = _plant(client, b"{not json")
    client.set_tag(planted, TAG_MANIFEST_HASH, digest)
    again = invoke("run", str(root / "study.yaml"), "--tracking-uri", uri, cwd=root)
    assert again.returncode == 0, again.stdout + again.stderr
    exp = client.get_experiment_by_name(records_experiment("tiny"))
    same = client.search_runs([exp.experiment_id], f"tags.`{TAG_MANIFEST_HASH}` = '{digest}'")
    assert len(same) == 2  # the planted one and a true one recorded beside it
    (true,) = [r for r in same if r.info.run_id != planted]
    folder = Path(true.info.artifact_uri.removeprefix("file://"))
    assert manifest_hash(json.loads((folder / ARTIFACT_MANIFEST).read_text())) == digest
