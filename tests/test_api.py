"""The program as functions: typed arguments in, results out, errors as exceptions (no prints, no exits)."""

from __future__ import annotations

import pytest
from helpers import SMALL_BASE

from studybench import api
from studybench.report.ranking import RankError
from studybench.store import StoreMissing

STUDY = "study: api\nseeds: [0]\nbaseline: ce\n" + SMALL_BASE + "grid:\n  method: [ce, dice]\n"


class Recorded(api.RunEvents):
    """The events a run reports, kept."""

    def __init__(self) -> None:
        self.plans: list[tuple[int, int]] = []  # (finished before, to run) per planning

    def planned(self, run, specs, plan) -> None:
        self.plans.append((len(plan.finished), len(plan.todo)))


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    (root / "study.yaml").write_text(STUDY)
    uri = f"sqlite:///{root / 'results' / 'mlflow.db'}"
    prepared = api.prepare_run(root / "study.yaml", options=api.RunOptions(tracking_uri=uri))
    events = Recorded()
    result = api.run_study(prepared, events)
    return root, uri, result, events


def test_run_study_runs_the_grid_and_a_rerun_skips_it(ran):
    root, uri, result, events = ran
    assert [o.status for o in result.outcomes] == ["FINISHED", "FINISHED"] and not result.failed
    assert [o.spec.method for o in result.outcomes] == ["ce", "dice"]
    assert events.plans == [(0, 2)]
    again = Recorded()
    rerun = api.run_study(api.prepare_run(root / "study.yaml", options=api.RunOptions(tracking_uri=uri)), again)
    assert again.plans == [(2, 0)] and [o.status for o in rerun.outcomes] == ["SKIPPED", "SKIPPED"]


def test_status_report_and_validate_return_results(ran):
    root, uri, _, _ = ran
    found = api.status(uri, study_name="api")
    assert [r.state for r in found.rows] == ["done", "done"] and found.counts["done"] == 2
    assert found.compute_s > 0 and found.view.recorded
    checked = api.validate(root / "study.yaml")
    assert checked.groups == {"main": 2} and checked.seeds == [0]
    built = api.report(uri, root / "study.yaml", out=root / "report")
    assert built.runs == 2 and (root / "report" / "main.csv").is_file()
    _, tables, files = api.rank(uri, [(None, "api", None)], out=root / "rank")
    assert tables and files and all(f.is_file() for f in files)
    with pytest.raises(RankError, match="nope"):
        api.rank(uri, [(None, "api", None)], methods=["ce", "nope"])


def test_errors_are_exceptions_naming_the_problem(ran, tmp_path):
    root, uri, _, _ = ran
    with pytest.raises(api.UsageError, match="no tune: section") as err:
        api.prepare_run(root / "study.yaml", options=api.RunOptions(tracking_uri=uri, phase="final"))
    assert err.value.title == "invalid options"
    (tmp_path / "file").write_text("")
    with pytest.raises(api.UsageError, match="is a file") as err:
        api.prepare_run(root / "study.yaml", options=api.RunOptions(tracking_uri=uri, checkpoint_dir=tmp_path / "file"))
    assert err.value.title == "invalid --checkpoint-dir"
    with pytest.raises(api.SelectionError, match="matches no run"):
        api.prepare_run(root / "study.yaml", options=api.RunOptions(tracking_uri=uri, only="method=focal"))
    with pytest.raises(StoreMissing):
        api.status(f"sqlite:///{tmp_path / 'none.db'}", study_name="api")
