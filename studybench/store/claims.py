"""One process per run key: an exclusive, non-blocking file lock held while a run trains.

Two ``studybench run`` of one study (or two engines on one store) must never train one key
twice. Before a run starts, its executor takes ``<folder>/<key>.claim`` with ``flock``; a
process that finds it held skips the run ("running in another process"). The kernel drops
the lock when its holder exits, however it dies (kill -9 included), so a claim never
outlives its process and nothing needs cleaning. After taking a claim the executor reads
the store again: a key that FINISHED while it waited is skipped, not retrained.

Claims belong to the store, because the store is what two launches share: beside a SQLite
store they live in ``<store folder>/.claims/<store file name>/<study>``, whatever
``--checkpoint-dir`` each launch was given. A tracking server (http, postgresql) has no
folder every launcher is known to reach, and MLflow offers no atomic "take if free" on
tags, so a claim recorded in the store would race or outlive a killed holder. For a server
store a run takes two claims: one on this machine, keyed by the tracking URI (in
``$XDG_CACHE_HOME/studybench/claims``: launches on one machine never train a key twice,
whatever their ``--checkpoint-dir``), and one under ``<checkpoint root>/.claims/<study>``
(launches on several machines must share ``--checkpoint-dir``, as the Ray and Slurm
executors do by construction). One server spelt two ways (localhost, 127.0.0.1) is two URIs.
flock works on local disks and on the shared file systems of clusters that support POSIX
locks (NFSv4, Lustre, GPFS).

The claims folder is user-writable ground: a claim that is a link, a folder or a FIFO is
refused with a message (``ClaimError``), never followed, never waited on.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from studybench.store.base import StoreError, local_path
from studybench.store.creation import cache_folder


class ClaimError(StoreError):
    """A claim that cannot be taken safely; the message names the file and the fix."""


def claims_folder(uri: str, study: str, checkpoint_root: Path | None = None) -> Path | None:
    """The claims folder of ``study`` in the store at ``uri`` (see the module docstring); None: no claims."""
    path = local_path(uri)
    if path is not None and uri.startswith("sqlite:///"):
        return path.resolve().parent / ".claims" / path.name / study
    return None if checkpoint_root is None else Path(checkpoint_root) / ".claims" / study


def claims_folders(uri: str, study: str, checkpoint_root: Path | None = None) -> list[Path]:
    """Every folder a run of ``study`` takes its claim in: beside a SQLite store; for a server, two (above)."""
    folder = claims_folder(uri, study, checkpoint_root)
    if local_path(uri) is not None and uri.startswith("sqlite:///"):
        return [folder]
    here = cache_folder() / "claims" / hashlib.sha256(uri.encode()).hexdigest()[:16] / study
    try:
        prepare_claims(here)
    except ClaimError:  # no writable cache on this machine: the checkpoint root's claim still holds
        return [folder] if folder else []
    return [here, folder] if folder else [here]


def prepare_claims(folder: Path | None) -> None:
    """Create ``folder`` and check claims can be written there; ``ClaimError`` naming it otherwise."""
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ClaimError(f"cannot create the claims folder {folder}: {err.strerror or err}") from None
    if not folder.is_dir() or folder.is_symlink() or not os.access(folder, os.W_OK | os.X_OK):
        raise ClaimError(
            f"the claims folder {folder} is not a writable folder: `run` keeps one lock file per run there "
            "(so two launches never train a run twice); make it writable, or store the study elsewhere"
        )


@contextmanager
def claim(folders: Path | Sequence[Path] | None, key: str) -> Iterator[bool]:
    """Hold the claim on ``key`` in every folder for the block; yields False (holding none) if another process has one."""
    folders = [] if folders is None else [folders] if isinstance(folders, Path) else list(folders)
    with ExitStack() as held:
        for folder in folders:
            if not held.enter_context(_claim_in(folder, key)):
                yield False
                return
        yield True


@contextmanager
def _claim_in(folder: Path, key: str) -> Iterator[bool]:
    prepare_claims(folder)
    fd = _open_claim(folder / f"{key}.claim")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _open_claim(path: Path) -> int:
    """The claim file opened (created if absent) without following a link or blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as err:
        raise ClaimError(_bad_claim(path, err.strerror or str(err))) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ClaimError(_bad_claim(path, "not a regular file"))
    return fd


def _bad_claim(path: Path, why: str) -> str:
    kind = "a link" if path.is_symlink() else "a folder" if path.is_dir() else "a FIFO" if path.is_fifo() else ""
    return (
        f"cannot take the claim {path} ({kind or why}): a claim must be a plain file that `run` creates; "
        "if no `run` of this study is going on, delete it and run again"
    )
