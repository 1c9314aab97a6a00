"""Where ``report`` may write: never into the store it reads, never over a folder's own files.

Why: the report folder is also logged into the store as an artifact, so ``report --out .`` or
``--out results`` copied the store into itself (54-58 MB, nested copies of mlflow.db) and
``--out .`` overwrote the project's README.md. Checked before anything is written.
"""

from __future__ import annotations

from pathlib import Path

from studybench.store import local_path

#: A file every report writes: a folder holding it is a previous report, rewritten on purpose.
REPORT_MARK = "runs.csv"
#: Files a report writes that a folder of other things may already hold.
REPORT_PAGES = ("README.md", "index.html")


class OutDirError(ValueError):
    """An output folder that must not receive a report; the message says which to use."""


def default_out_dir(study: str) -> Path:
    """``results/reports/<study>``: git-ignored, beside the default store (``make reports`` writes reports/)."""
    return Path("results") / "reports" / study


def check_out_dir(out: Path, uri: str, study: str) -> Path:
    """``out`` when a report may be written there; raise ``OutDirError`` otherwise."""
    target = out.expanduser().resolve()
    instead = f"pass a folder of its own, e.g. --out {default_out_dir(study)}"
    if target.exists() and not target.is_dir():
        raise OutDirError(f"--out {out}: a file, not a folder; {instead}")
    store = local_path(uri)
    if store is not None and (target in store.expanduser().resolve().parents):
        raise OutDirError(
            f"--out {out} holds the MLflow store {store}; the report is logged into the store, which would "
            f"copy the store into itself: {instead}"
        )
    artifacts = store.expanduser().resolve().parent / "artifacts" if store is not None else None
    if artifacts is not None and (target == artifacts or artifacts in target.parents):
        raise OutDirError(
            f"--out {out} is inside the store's artifacts ({artifacts}), where MLflow keeps files: {instead}"
        )
    if target == Path.cwd().resolve() or target in Path.cwd().resolve().parents:
        raise OutDirError(
            f"--out {out} is the current folder or one above it: the report would overwrite its files; {instead}"
        )
    foreign = [name for name in REPORT_PAGES if (target / name).exists()]
    if foreign and not (target / REPORT_MARK).exists():
        raise OutDirError(f"--out {out} holds {', '.join(foreign)} of something other than a report; {instead}")
    return out
