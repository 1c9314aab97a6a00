"""The process-wide settings a run changes, set for the run and given back afterwards.

A run sets torch's thread count, the reproducibility switches (``rng.deterministic_mode``:
deterministic algorithms, cuDNN flags, ``CUBLAS_WORKSPACE_CONFIG``), the backend switches
(``device.backend_switches``: TF32, cuDNN autotuning) and the global generators (Python, NumPy,
torch: seeded with the method's stream, ``rng.seed_method_stream``). Runs share a process in tests,
notebooks and ``api`` callers, so whatever a run changes is restored when it ends, failed or
not: the next run, or the caller's own code, finds the process as it left it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from studybench.engine.device import backend_switches
from studybench.engine.rng import deterministic_mode
from studybench.study.spec import TrainCfg


@contextmanager
def run_settings(train: TrainCfg) -> Iterator[dict[str, str]]:
    """Within the block, the process runs with ``train``'s threads and switches; yields the switches
    as run tags; afterwards every setting is what it was before."""
    with global_generators(), thread_count(train.threads), deterministic_mode(train.deterministic) as switches:
        with backend_switches(train) as device_tags:
            yield {**switches, **device_tags}


@contextmanager
def thread_count(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` (unchanged when None) within the block."""
    outer = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != outer:
            torch.set_num_threads(outer)


@contextmanager
def global_generators() -> Iterator[None]:
    """The states of Python's, NumPy's and torch's global generators (CUDA's too once initialised)
    given back after the block: a caller's own random stream goes on as if no run had drawn from it."""
    python, numpy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
