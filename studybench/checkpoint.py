"""Per-run checkpoints: everything needed to continue a run from its last finished epoch.

A checkpoint holds the scheme's state (networks, losses, optimisers, schedulers), every RNG
state (Python, NumPy, torch CPU and CUDA, and the training loader's own generator), the
epoch and step reached, the timers and the curves logged so far. Resuming from it gives the
same final metrics as an uninterrupted run on CPU, because every source of randomness
continues exactly where it stopped.

Files live at ``<root>/<study>/<run key>.pt`` (the key is the hash of what the run computes,
so a changed config never resumes from a stale file), are written to a temporary name and
renamed (a crash mid-write leaves the previous checkpoint intact), and are removed when the
run FINISHES. On a cluster ``root`` must be a folder every node can reach.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from studybench.spec import RunSpec

FORMAT = 1
ENV = "STUDYBENCH_CHECKPOINTS"


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
        path = self.path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"format": FORMAT, "key": spec.key, **payload}, tmp)
        os.replace(tmp, path)
        summary = {"epoch": payload.get("epoch"), "run_id": payload.get("run_id")}
        path.with_suffix(".json").write_text(json.dumps(summary))

    def load(self, spec: RunSpec) -> dict[str, Any] | None:
        """The checkpoint of ``spec``, or None if there is none (or it belongs to another format/key)."""
        path = self.path(spec)
        if not path.is_file():
            return None
        payload = torch.load(path, map_location="cpu", weights_only=False)
        if payload.get("format") != FORMAT or payload.get("key") != spec.key:
            return None
        return payload

    def epoch(self, spec: RunSpec) -> int | None:
        """Epochs completed by the checkpoint of ``spec`` (cheap: reads the JSON beside it)."""
        side = self.path(spec).with_suffix(".json")
        try:
            return int(json.loads(side.read_text())["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def remove(self, spec: RunSpec) -> None:
        for path in (self.path(spec), self.path(spec).with_suffix(".json")):
            path.unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
