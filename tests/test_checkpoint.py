"""Checkpoints are data, never code, and a bad one never blocks its run: it is set aside and the run restarts."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import invoke

from studybench.engine import checkpoint as checkpoint_module
from studybench.engine.checkpoint import FORMAT, Checkpoints, rng_state, set_rng_state, to_plain
from studybench.store import StudyWriter
from studybench.store.writer import ensure_store
from studybench.study.config import load_study
from studybench.study.grid import expand

#: One tiny run per way a checkpoint file can be bad (seed i gets the i-th bad file).
STUDY = """\
study: bad-ckpt
seeds: [0, 1, 2, 3, 4, 5, 6]
base:
  data: {dataset: synthetic, options: {num_classes: 3, image_size: 32, train_images: 4, val_images: 2}}
  model: {arch: unet, encoder: resnet18, options: {decoder_channels: [8, 8, 8, 8, 8]}}
  train: {epochs: 1, batch_size: 4, lr: 0.01, threads: 1}
grid:
  method: [ce]
"""


class Exploit:
    """A pickle that, if unpickled with full trust, creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _specs(tmp_path: Path):
    path = tmp_path / "study.yaml"
    path.write_text(STUDY)
    return path, expand(load_study(path), source=str(path), check_data=False)


def _truncated(path: Path, key: str) -> None:
    torch.save({"format": FORMAT, "key": key, "epoch": 1, "state": {}, "scheme": {"w": torch.zeros(1000)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _bad_files(marker: Path):
    """name -> writer(path, key) of each kind of bad checkpoint."""
    return {
        "malicious": lambda p, k: torch.save({"format": FORMAT, "key": k, "payload": Exploit(marker)}, p),
        "truncated": _truncated,
        "garbage": lambda p, k: p.write_bytes(os.urandom(4096)),
        "empty": lambda p, k: p.write_bytes(b""),
        "wrong-structure": lambda p, k: torch.save({"format": FORMAT, "key": k, "epoch": 1}, p),
        "wrong-state": lambda p, k: torch.save(
            {"format": FORMAT, "key": k, "epoch": 1, "state": {"bogus": 1}, "scheme": {}, "rng": {}}, p
        ),
        "wrong-weights": lambda p, k: torch.save(
            {"format": FORMAT, "key": k, "epoch": 1, "state": {}, "scheme": {"net": {"w": torch.ones(3)}}, "rng": {}}, p
        ),
    }


def test_bad_checkpoints_are_set_aside_and_their_runs_finish_from_scratch(tmp_path):
    study, specs = _specs(tmp_path)
    marker = tmp_path / "pwned"
    checkpoints = Checkpoints(tmp_path / "results" / "checkpoints")
    bad = _bad_files(marker)
    assert len(bad) == len(specs)
    unreadable = len(specs) - 2  # the last two read fine; only the trainer finds they do not fit
    for spec, write in zip(specs, bad.values()):
        checkpoints.path(spec).parent.mkdir(parents=True, exist_ok=True)
        write(checkpoints.path(spec), spec.key)
    folder = checkpoints.path(specs[0]).parent
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # status and run go through this process (``invoke``): the writer of the live file is another one
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    abandoned = folder / f"{specs[0].key}.tmp{dead.pid}"
    live = folder / f"{specs[1].key}.tmp{writer.pid}"
    abandoned.write_bytes(b"partial")
    live.write_bytes(b"being written")

    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    ensure_store(uri)  # status reads an existing store only (as after a first, interrupted run)
    StudyWriter(uri, "bad-ckpt").ensure_experiment()
    try:
        status = invoke("status", str(study), cwd=tmp_path)
        assert status.returncode == 0, status.stdout + status.stderr
        assert " ".join(status.stdout.split()).count("checkpoint unreadable; restarts from scratch") == unreadable

        done = invoke("run", str(study), cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        writer.kill()
        writer.wait()
    assert not marker.exists()  # the pickled os.system never ran
    warnings = " ".join(done.stderr.split())
    for spec in specs:
        assert f"checkpoint {checkpoints.path(spec)} is unreadable" in warnings, (spec.name, done.stderr)
        assert len(list(folder.glob(f"{spec.key}.pt.corrupt-*"))) == 1
    assert not abandoned.exists() and live.exists()
    assert not list(folder.glob("*.pt"))  # every run finished (from scratch) and cleaned up


def test_a_checkpoint_round_trips_as_plain_data(tmp_path):
    _, specs = _specs(tmp_path)
    spec = specs[0]
    checkpoints = Checkpoints(tmp_path)
    np.random.seed(3)
    state = rng_state()
    expected = np.random.rand(3)
    checkpoints.save(spec, {"epoch": 2, "state": {"step": 5}, "scheme": {"w": torch.ones(2)}, "rng": state})
    assert checkpoints.epoch(spec) == 2 and checkpoints.resume_note(spec) == "resumes after epoch 2"
    np.random.seed(99)
    payload = checkpoints.load(spec)
    set_rng_state(payload["rng"])
    assert np.array_equal(np.random.rand(3), expected)
    assert payload["state"] == {"step": 5} and torch.equal(payload["scheme"]["w"], torch.ones(2))


class Requeued(Exception):
    """What submitit's USR2 handler does (it requeues the job, then sys.exit), as an exception of our own."""


class SignalledMidWrite(io.FileIO):
    """A checkpoint file that sends this process SIGUSR2 during torch.save's third write to it."""

    def write(self, data):
        self.writes = getattr(self, "writes", 0) + 1
        if self.writes == 3:
            os.kill(os.getpid(), signal.SIGUSR2)  # its Python handler runs before this write returns
        return super().write(data)


def test_a_signal_during_a_save_acts_once_the_checkpoint_is_whole(tmp_path, monkeypatch):
    """Slurm warns a job of its time limit with USR2 whenever it likes, so also while it saves a checkpoint.

    Raised inside torch.save's writes, the handler's exception came out as ``RuntimeError: unexpected
    pos A vs B``: the run was recorded FAILED instead of requeued (seen in the Slurm test).
    """
    _, specs = _specs(tmp_path)
    checkpoints = Checkpoints(tmp_path)
    monkeypatch.setattr(checkpoint_module, "open", lambda path, mode: SignalledMidWrite(path, mode), raising=False)

    def requeue(signum, frame):
        raise Requeued

    previous = signal.signal(signal.SIGUSR2, requeue)
    try:
        with pytest.raises(Requeued):
            checkpoints.save(specs[0], {"epoch": 2, "state": {}, "scheme": {"w": torch.ones(100_000)}, "rng": {}})
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert checkpoints.load(specs[0])["epoch"] == 2  # written whole, then the handler ran
    assert [p.name for p in checkpoints.path(specs[0]).parent.iterdir() if ".tmp" in p.name] == []


def test_a_changed_file_is_not_promised_to_resume(tmp_path):
    """The JSON beside a checkpoint says epoch 2; once the file changes, status reads the file itself."""
    _, specs = _specs(tmp_path)
    spec = specs[0]
    checkpoints = Checkpoints(tmp_path)
    checkpoints.save(spec, {"epoch": 2, "state": {}, "scheme": {}, "rng": {}})
    data = checkpoints.path(spec).read_bytes()
    checkpoints.path(spec).write_bytes(data[:-10])
    assert checkpoints.epoch(spec) is None
    assert checkpoints.resume_note(spec) == "checkpoint unreadable; restarts from scratch"
    assert checkpoints.load(spec) is None
    assert checkpoints.resume_note(spec) == ""  # set aside: nothing left to resume from

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = checkpoints.path(spec).with_name(f"{spec.key}.tmp{dead.pid}")
    leftover.write_bytes(b"partial")
    checkpoints.remove(spec)  # as when the run finishes: a dead writer's temporary file goes too
    assert not leftover.exists()


def test_only_plain_data_can_be_saved():
    plain = to_plain({"a": np.arange(3), "b": (np.float32(1.5), [1, "x"]), "c": None})
    assert torch.equal(plain["a"], torch.arange(3)) and plain["b"] == (1.5, [1, "x"])
    try:
        to_plain({"scheme": {"opt": object()}})
    except TypeError as err:
        assert "checkpoint.scheme.opt" in str(err)
    else:
        raise AssertionError("an arbitrary object was accepted")
