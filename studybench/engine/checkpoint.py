"""Per-run checkpoints: everything needed to continue a run from its last finished epoch.

A checkpoint holds the scheme's state (networks, losses, optimisers, schedulers), the global
RNG states (Python, NumPy, torch CPU and CUDA: the method's stream, see ``rng``), the
epoch and step reached, the timers and the curves logged so far. Resuming from it gives the
same final metrics as an uninterrupted run on CPU: the method's randomness continues exactly
where it stopped, and data order and augmentation are functions of (seed, epoch) alone.

Files live at ``<root>/<study>/<run key>.pt`` (the key is the hash of what the run computes,
so a changed config never resumes from a stale file), are written to a temporary name and
renamed (a crash mid-write leaves the previous checkpoint intact), and are removed when the
run FINISHES. On a cluster ``root`` must be a folder every node can reach.

A checkpoint folder may be shared, so a checkpoint is data, never code: the payload is
reduced to tensors and plain containers before saving (``to_plain``) and read with
``torch.load(weights_only=True)``, which refuses anything else. A file that cannot be read
or does not have the expected structure is moved aside (``<key>.pt.corrupt-<time>``) with a
warning naming it, and the run starts from scratch instead of failing on every rerun.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from studybench.study.spec import RunSpec

# torch is imported by the functions that need it: ``status`` reads checkpoint summaries without it.

FORMAT = 2  # 2: plain payload read with weights_only=True (1 was a full pickle)
ENV = "STUDYBENCH_CHECKPOINTS"
#: Top-level entries every checkpoint has, with their types (anything else is a wrong-structure file).
REQUIRED = {"format": int, "key": str, "epoch": int, "state": dict, "scheme": dict, "rng": dict}
#: A temporary file of another host is only taken for abandoned after this long (its pid means nothing here).
FOREIGN_TMP_AGE_S = 24 * 3600
#: Signals whose Python handlers raise: Ctrl-C, and submitit's USR2 (time limit or preemption: it
#: requeues the job, then calls sys.exit). Held back while a checkpoint is written; see signals_deferred.
DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGUSR2)


def disk_error(err: BaseException, partial: Path) -> BaseException:
    """``err`` as "no space left on <folder> (...)" when the disk is full, else unchanged.

    torch.save reports a full disk as ``unexpected pos A vs B``, which names neither the cause
    nor the place; the free space left beside the partial file does.
    """
    import errno
    import shutil

    try:
        free = shutil.disk_usage(partial.parent).free
        written = partial.stat().st_size if partial.exists() else 0
    except OSError:
        return err
    if not ((isinstance(err, OSError) and err.errno == errno.ENOSPC) or free < 16 * 2**20):
        return err
    mb = 2**20
    return OSError(
        errno.ENOSPC,
        f"no space left on {partial.parent}: the checkpoint stopped at {written / mb:.0f} MB with "
        f"{free / mb:.1f} MB free (free space there, or set --checkpoint-dir / train.checkpoint: false)",
    )


@contextmanager
def signals_deferred(signums: tuple[int, ...] = DEFERRED_SIGNALS) -> Iterator[None]:
    """Hold back ``signums`` for the block, then give those that came to their own handlers.

    torch.save turns an exception raised inside its file writes into ``RuntimeError: unexpected
    pos A vs B``. A Slurm job warned of its time limit while saving was therefore recorded FAILED
    (and never resumed) instead of requeued; a Ctrl-C while saving, FAILED instead of KILLED.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # Python handlers run (and are set) in the main thread only
        return
    caught: list[int] = []
    previous = {}
    for signum in signums:
        if callable(signal.getsignal(signum)):  # SIG_DFL / SIG_IGN act in C and raise nothing
            previous[signum] = signal.signal(signum, lambda number, _frame: caught.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, not ours, or of the wrong structure."""


def default_checkpoint_root(tracking_uri: str) -> Path:
    """``$STUDYBENCH_CHECKPOINTS``, else ``checkpoints/`` beside a SQLite store, else ``./results/checkpoints``."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).resolve()
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent / "checkpoints"
    return (Path.cwd() / "results" / "checkpoints").resolve()


@dataclass(frozen=True)
class Checkpoints:
    """Where the checkpoints of runs are kept (picklable: it travels to worker processes)."""

    root: Path

    def path(self, spec: RunSpec) -> Path:
        return self.root / spec.study / f"{spec.key}.pt"

    def save(self, spec: RunSpec, payload: dict[str, Any]) -> None:
        """Write atomically (temporary file, then rename); the JSON beside it lets ``status`` check it cheaply.

        A Ctrl-C or Slurm's time-limit warning that comes meanwhile acts once the checkpoint is whole.
        """
        import torch

        path = self.path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{spec.key}.tmp{os.getpid()}.{socket.gethostname()}")
        with signals_deferred():
            try:
                with open(tmp, "wb") as handle:  # our handle: closed (its space freed on unlink) even on error
                    torch.save(to_plain({"format": FORMAT, "key": spec.key, **payload}), handle)
                summary = {"epoch": payload.get("epoch"), "run_id": payload.get("run_id"), **_fingerprint(tmp)}
                os.replace(tmp, path)
                path.with_suffix(".json").write_text(json.dumps(summary))
            except (OSError, RuntimeError) as err:
                failure = disk_error(err, tmp)
                tmp.unlink(missing_ok=True)  # a partial checkpoint helps no one and holds the space
                raise failure from err

    def load(self, spec: RunSpec) -> dict[str, Any] | None:
        """The checkpoint of ``spec``, or None if there is none.

        An unusable file is moved aside with a warning (None is returned: the run starts
        over) rather than raised, which would fail the run again on every rerun.
        """
        self.remove_abandoned_tmp(spec)
        path = self.path(spec)
        if not path.is_file():
            return None
        try:
            return read_checkpoint(path, spec.key)
        except CheckpointError as err:
            self.set_aside(spec, str(err))
            return None

    def set_aside(self, spec: RunSpec, reason: str) -> Path:
        """Move an unusable checkpoint to ``<key>.pt.corrupt-<time>`` (kept for a post-mortem) and say so."""
        path = self.path(spec)
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        path.with_suffix(".json").unlink(missing_ok=True)
        print(
            f"warning: checkpoint {path} is unreadable ({_short(reason)}); moved to {aside.name}; "
            f"run {spec.name} restarts from scratch",
            file=sys.stderr,
            flush=True,
        )
        return aside

    def inspect(self, spec: RunSpec) -> tuple[int | None, str | None]:
        """(epochs the checkpoint holds, None) or (None, why it is unusable); (None, None) without one.

        Cheap when the file matches the size and hash recorded beside it at save time; otherwise
        the file is read in full, so ``status`` never promises a resume that ``run`` cannot keep.
        """
        path = self.path(spec)
        if not path.is_file():
            return None, None
        try:
            side = json.loads(path.with_suffix(".json").read_text())
            if {k: side[k] for k in ("size", "sha256")} == _fingerprint(path):
                return int(side["epoch"]), None
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no or stale summary: read the file itself
        try:
            return read_checkpoint(path, spec.key)["epoch"], None
        except CheckpointError as err:
            return None, str(err)

    def epoch(self, spec: RunSpec) -> int | None:
        """Epochs completed by a usable checkpoint of ``spec`` (None: none, or unusable)."""
        return self.inspect(spec)[0]

    def resume_note(self, spec: RunSpec) -> str:
        """What the next ``run`` will do with this run's checkpoint, for ``status`` ('' if there is none)."""
        epoch, problem = self.inspect(spec)
        if problem:
            return "checkpoint unreadable; restarts from scratch"
        return f"resumes after epoch {epoch}" if epoch else ""

    def remove(self, spec: RunSpec) -> None:
        """Delete the run's checkpoint, its summary and temporary files a dead writer left (the run is done)."""
        for path in (self.path(spec), self.path(spec).with_suffix(".json")):
            path.unlink(missing_ok=True)
        self.remove_abandoned_tmp(spec)

    def remove_abandoned_tmp(self, spec: RunSpec) -> list[Path]:
        """Delete temporary files of ``spec`` that a dead writer left behind (not those of a live process)."""
        removed = []
        for tmp in self.path(spec).parent.glob(f"{spec.key}.tmp*"):
            if _abandoned(tmp):
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
        return removed


class Fallback:
    """A run's scheme and RNG states before its checkpoint is loaded, to start over from if the file does not fit.

    A checkpoint can pass ``read_checkpoint`` and still not fit the run (weights of another
    shape, a train state of another version); loading it half-way would leave a mix of both.
    """

    def __init__(self, scheme: Any) -> None:
        self.scheme, self.scheme_state, self.rng = scheme, copy.deepcopy(scheme.state_dict()), rng_state()

    def restore(self) -> None:
        self.scheme.load_state_dict(self.scheme_state)
        set_rng_state(self.rng)


def read_checkpoint(path: Path, key: str) -> dict[str, Any]:
    """Load ``path`` as data only (``weights_only=True``: no pickled code runs) and check its structure."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, garbage, empty, or a pickle of objects
        raise CheckpointError(f"{type(err).__name__}: {_short(str(err))}") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"expected a mapping, got {type(payload).__name__}")
    for name, kind in REQUIRED.items():
        if not isinstance(payload.get(name), kind) or isinstance(payload.get(name), bool):
            raise CheckpointError(f"entry {name!r} missing or not {kind.__name__}")
    if payload["format"] != FORMAT:
        raise CheckpointError(f"format {payload['format']}, this version reads format {FORMAT}")
    if payload["key"] != key:
        raise CheckpointError(f"it belongs to run key {payload['key']!r}, not {key!r}")
    return payload


def to_plain(value: Any, where: str = "checkpoint") -> Any:
    """``value`` as tensors, numbers, strings and containers only: what ``weights_only`` loading accepts.

    Dataclasses become dicts and NumPy arrays tensors (NumPy scalars numbers); anything else
    is refused here, at save time, rather than becoming a file that cannot be read back.
    """
    import torch

    if value is None or isinstance(value, (bool, int, float, str, bytes, torch.Tensor)):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: to_plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(f"{where}: a {type(value).__name__} cannot be stored in a checkpoint (tensors and plain data only)")


def rng_state() -> dict[str, Any]:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore ``rng_state()`` as read back from a checkpoint (NumPy's key array comes back as a tensor)."""
    import torch

    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fingerprint(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def _abandoned(tmp: Path) -> bool:
    """Whether a ``<key>.tmp<pid>[.<host>]`` file's writer is gone (a pid of this host that is not alive)."""
    pid_text, _, host = tmp.name.split(".tmp", 1)[1].partition(".")
    if host and host != socket.gethostname():
        try:
            return time.time() - tmp.stat().st_mtime > FOREIGN_TMP_AGE_S
        except OSError:
            return False
    if not pid_text.isdigit():
        return False
    return not _pid_alive(int(pid_text))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
