"""The report stage: MLflow store -> tables, figures and a shareable page in ``reports/<study>/``.

It reads MLflow only (never training state or the registries), so a report can be rebuilt
from the store long after the runs. The study's manifest (recorded by ``run``) gives the
grid and the structure (baseline, ablations, paper values); the numbers all come from the
runs, exactly one per key of the grid (``scope``). Tables are written first and each figure
is drawn in its own ``try``: a plotting problem never loses results, it is listed on the
page and returned. Finally the folder is logged as a report record in the study's records
experiment (never among the training runs).

Modules: ``scope`` (what the report covers), ``collect`` (MLflow -> DataFrame), ``stats`` (t intervals, paired t tests), ``reference``
(paper values), ``tables``, ``plots``, ``page`` (index.html, README.md), ``images`` (bootstrap over validation images).

Why the package itself imports nothing: ``studybench status`` reads one function of ``evidence``
(seeds needed), and importing a submodule runs this file first; building a report needs
matplotlib and every stage, which ``build`` imports only when a report is built.
"""

from __future__ import annotations

from typing import Any

_BUILD_NAMES = ("build_report", "ReportResult", "_deviations")


def __getattr__(name: str) -> Any:
    """``build_report`` and its result type, imported on first use (with matplotlib)."""
    if name in _BUILD_NAMES:
        from studybench.report import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
