"""A store whose disk is full, said once and plainly.

Why: SQLite's "database or disk is full" reaches us under SQLAlchemy's and MLflow's wrappers,
whose first line is "(raised as a result of Query-invoked autoflush ...)"; the run table then
showed that, and MLflow logged every layer's traceback. Nothing is lost: the same command resumes.
"""

from __future__ import annotations

import errno
import shutil

from studybench.store.base import local_path


def disk_full(err: BaseException | None) -> bool:
    """Whether ``err`` or an error it came from says the disk is full."""
    for _ in range(10):  # a cause chain is short; a cycle is not followed for ever
        if err is None:
            return False
        if getattr(err, "errno", None) == errno.ENOSPC or "disk is full" in str(err) or "No space left" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def full_message(uri: str) -> str:
    """What to tell when the store at ``uri`` has no room left (its folder and free space, when local)."""
    path = local_path(uri)
    if path is None:
        return f"the MLflow store {uri} has no space left: free some on its server and rerun the same command"
    folder = path.expanduser().resolve().parent
    free = shutil.disk_usage(folder).free / 2**20 if folder.is_dir() else 0.0
    return (
        f"no space left on {folder} ({free:.1f} MB free) for the MLflow store: free some and rerun the same "
        "command (finished runs are kept)"
    )
