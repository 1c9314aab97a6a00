"""What a report reads: one snapshot of the store and curves in bulk, not requests per run."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from studybench.api import make_report, open_view
from studybench.bench import load
from studybench.report.collect import histories
from studybench.store import StudyReader
from studybench.store import history as store_history

fake = load("fake_store")  # benchmarks/suite: also what benchmarks/bench_report.py times
RUNS = 24


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("reads")
    study, uri = fake.fake_store(root / "store", RUNS)
    return {"root": root, "study": study, "uri": uri}


def test_a_report_reads_the_store_a_bounded_number_of_times(store):
    view, reader = open_view(store["uri"], store["study"])
    with fake.count_requests() as counts:
        result = make_report(view, reader, store["root"] / "report", log_to_mlflow=False)
    assert result.runs == RUNS and {"main", "runs"} <= {p.stem for p in result.files}
    # one snapshot (a single page of search_runs below 1,000 runs), one bulk query per curve name
    # (val/miou, train/loss), and the sample images of the lowest seed per method: none of it per run
    assert counts["search_runs"] == 1 and counts["get_metric_history_bulk"] == 2
    assert counts["get_run"] == 0 and counts["get_metric_history"] == 0
    assert counts["download_artifacts"] <= len(fake.METHODS)
    assert sum(counts.values()) <= 10, counts


def test_bulk_histories_equal_the_per_run_histories(store):
    """The bulk query gives the rows, in the order, of one ``get_metric_history`` per run and curve."""
    reader = StudyReader(store["uri"], "scale")
    run_ids = [run.info.run_id for run in reader.snapshot().runs[:7]]
    bulk = histories(reader, run_ids, ("val/", "train/", "lr"))
    client = MlflowClient(store["uri"])
    wanted = {run_id: ["lr", "train/loss", "val/miou"] for run_id in run_ids}
    one_by_one = list(store_history._one_by_one(client, wanted))
    assert len(bulk) == 7 * 3 * 3  # runs x curves x epochs
    assert list(bulk.itertuples(index=False, name=None)) == one_by_one
