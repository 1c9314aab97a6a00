"""A run gives back every process-wide setting it changes (threads, environment, switches)."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

import studybench.engine.train as trainer
from studybench.engine.device import backend_switches
from studybench.engine.rng import CUBLAS_ENV, deterministic_mode
from studybench.engine.settings import run_settings
from studybench.study.keys import keyed_spec
from studybench.study.spec import RunConfig, RunSpec, TrainCfg


class Tags:
    """A ``train.Recorder`` that keeps the tags only."""

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}

    def log_metrics(self, metrics, step=None) -> None:
        pass

    def log_text(self, text, artifact_file) -> None:
        pass

    def log_bytes(self, data, artifact_file) -> None:
        pass

    def set_tags(self, tags) -> None:
        self.tags.update(tags)


def process_settings() -> dict[str, object]:
    """Everything a run may change in the process, as the caller sees it."""
    return {
        "threads": torch.get_num_threads(),
        "cublas": os.environ.get(CUBLAS_ENV),
        "precision": torch.get_float32_matmul_precision(),  # raises where torch finds mixed APIs
        "algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn": (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32),
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
    }


def tiny_spec(**train) -> RunSpec:
    config = {
        "data": {"options": {"num_classes": 3, "image_size": 32, "train_images": 4, "val_images": 2}},
        "model": {"arch": "unet", "encoder": "resnet18", "options": {"decoder_channels": [16, 8, 8, 8, 8]}},
        "train": {"iterations": 1, "batch_size": 2, "lr": 0.01, "checkpoint": False, **train},
    }
    return keyed_spec(study="settings", method="ce", seed=0, config=RunConfig.model_validate(config))


@pytest.fixture
def caller_settings(monkeypatch):
    """A caller with its own choices, none of them a run's: 1 thread, medium precision, no CUBLAS variable."""
    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    monkeypatch.delenv(CUBLAS_ENV, raising=False)
    torch.set_num_threads(1)
    torch.set_float32_matmul_precision("medium")
    yield process_settings()
    torch.set_float32_matmul_precision(precision)
    torch.set_num_threads(threads)


def test_a_real_run_leaves_the_process_as_it_found_it(caller_settings, monkeypatch):
    recorder = Tags()
    seen: dict[str, object] = {}
    real = trainer.fit

    def spying_fit(*args, **kwargs):
        seen.update(threads=torch.get_num_threads(), cublas=os.environ.get(CUBLAS_ENV))
        seen.update(algorithms=torch.are_deterministic_algorithms_enabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "fit", spying_fit)
    expected = caller_draws(seed=5)  # what the caller's own streams give next, had no run drawn from them
    seed_caller(5)
    trainer.execute(tiny_spec(threads=2, deterministic=True, tf32="all"), recorder)
    assert seen == {"threads": 2, "cublas": ":4096:8", "algorithms": True}  # the run had its settings
    assert recorder.tags["studybench.cublas_workspace_config"] == ":4096:8"
    assert process_settings() == caller_settings
    assert caller_draws() == expected


def seed_caller(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def caller_draws(seed: int | None = None) -> tuple[float, float, float]:
    """The next draw of Python's, NumPy's and torch's global generators (seeded first if asked)."""
    if seed is not None:
        seed_caller(seed)
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_a_failing_block_restores_the_settings_too(caller_settings):
    with pytest.raises(KeyError), run_settings(TrainCfg(threads=2, deterministic=True, tf32="none")):
        assert torch.get_num_threads() == 2 and os.environ[CUBLAS_ENV] == ":4096:8"
        raise KeyError("the run failed")
    assert process_settings() == caller_settings


def test_an_existing_cublas_setting_is_kept_and_given_back(monkeypatch):
    monkeypatch.setenv(CUBLAS_ENV, ":16:8")
    with deterministic_mode(True) as tags:
        assert tags["studybench.cublas_workspace_config"] == ":16:8"
    assert os.environ[CUBLAS_ENV] == ":16:8"


@pytest.mark.parametrize("tf32", ["none", "conv", "all"])
def test_matmul_precision_answers_after_the_backend_switches(tf32):
    """PyTorch >= 2.9 raises on ``get_float32_matmul_precision`` after a mix of its two APIs."""
    outer = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        with backend_switches(TrainCfg(tf32=tf32)):
            assert torch.backends.cuda.matmul.allow_tf32 == (tf32 == "all")
        assert torch.get_float32_matmul_precision() == "medium"
        assert torch.backends.cuda.matmul.allow_tf32  # what "medium" means for CUDA matmuls
    finally:
        torch.set_float32_matmul_precision(outer)
