"""Report time and MLflow requests against store size (finished runs made without training).

For each size a fresh SQLite store of that many finished runs is written (2 methods x n/2 seeds,
3 epochs of curves each; ``benchmarks/suite/fake_store.py``), then ``studybench report`` is built
from it in this process, timed, with every call into MLflow's client counted. The requests stay
the same whatever the size (one snapshot of the runs, one bulk query per curve name); the time
grows with the tables and statistics over more seeds.

    .venv/bin/python benchmarks/bench_report.py [--sizes 100,500,2000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from studybench.api import make_report, open_view
from studybench.bench import load

fake = load("fake_store")


def measure(root: Path, runs: int) -> dict[str, float]:
    """Build a store of ``runs`` runs under ``root``, then time and count its report."""
    start = time.perf_counter()
    study, uri = fake.fake_store(root / f"store-{runs}", runs)
    built = time.perf_counter() - start
    start = time.perf_counter()
    view, reader = open_view(uri, study)
    with fake.count_requests() as counts:
        result = make_report(view, reader, root / f"report-{runs}")
    took = time.perf_counter() - start
    assert result.runs == runs, result.problems
    return {"runs": runs, "build_s": built, "report_s": took, "requests": sum(counts.values()), "detail": counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500,2000", help="comma-separated numbers of runs")
    parser.add_argument("--keep", type=Path, help="write the stores and reports here (default: a temporary folder)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{platform.node()} · {platform.processor() or platform.machine()}")
    print(f"{'runs':>6} {'store build (s)':>16} {'report (s)':>11} {'MLflow requests':>16}")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for runs in sizes:
            row = measure(root, runs)
            print(f"{runs:>6} {row['build_s']:>16.1f} {row['report_s']:>11.1f} {row['requests']:>16}", flush=True)
            print(f"       {dict(sorted(row['detail'].items()))}", flush=True)


if __name__ == "__main__":
    main()
