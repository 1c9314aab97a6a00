"""One process per run key: an exclusive, non-blocking file lock held while a run trains.

Two ``studybench run`` of one study (or two engines on one store) must never train one key
twice. Before a run starts, its executor takes ``<folder>/<key>.claim`` with ``flock``; a
process that finds it held skips the run ("running in another process"). The kernel drops
the lock when its holder exits, however it dies (kill -9 included), so a claim never
outlives its process and nothing needs cleaning. After taking a claim the executor reads
the store again: a key that FINISHED while it waited is skipped, not retrained.

The folder must be one every process of the study reaches (claims live beside the
checkpoints, under ``<checkpoint root>/.claims/<study>``); flock works on local disks and on
the shared file systems of clusters that support POSIX locks (NFSv4, Lustre, GPFS).
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def claims_folder(checkpoint_root: Path, study: str) -> Path:
    return Path(checkpoint_root) / ".claims" / study


@contextmanager
def claim(folder: Path | None, key: str) -> Iterator[bool]:
    """Hold the claim on ``key`` for the block; yields False (holding nothing) if another process has it."""
    if folder is None:
        yield True
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{key}.claim", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
