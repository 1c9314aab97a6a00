"""The report stage: MLflow store -> tables and figures in ``reports/<study>/``.

It reads MLflow only (never training state), so a report can be rebuilt from the store
long after the runs. A figure that fails to draw is reported and skipped; tables are
always written first, so a plotting problem never loses results.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path

from studybench.report import plots
from studybench.report.collect import collect_runs
from studybench.report.tables import runs_table, write_table
from studybench.tracking import StudyTracker


@dataclass
class ReportResult:
    out_dir: Path
    runs: int
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def build_report(study_name: str, tracking_uri: str, out_dir: Path, keys: list[str] | None = None) -> ReportResult:
    tracker = StudyTracker(tracking_uri, study_name)
    frame = collect_runs(tracker, keys)
    result = ReportResult(out_dir=out_dir, runs=len(frame))
    if frame.empty:
        result.problems.append(f"no FINISHED runs of study {study_name!r} in {tracking_uri}: run the study first")
        return result
    result.files += write_table(runs_table(frame), out_dir, "runs")
    for stem, draw in (("miou_by_method", plots.miou_by_method), ("miou_vs_wall", plots.miou_vs_wall)):
        try:
            result.files += plots.save(draw(frame), out_dir, stem)
        except Exception as err:  # noqa: BLE001 - one figure must not stop the report
            result.problems.append(f"figure {stem} failed: {err}\n{traceback.format_exc(limit=3)}")
    return result


__all__ = ["ReportResult", "build_report", "collect_runs"]
