"""The process-wide settings a run changes, set for the run and given back afterwards.

A run sets torch's thread count, the reproducibility switches (``rng.deterministic_mode``:
deterministic algorithms, cuDNN flags, ``CUBLAS_WORKSPACE_CONFIG``) and the backend switches
(``device.backend_switches``: TF32, cuDNN autotuning). Runs share a process in tests,
notebooks and ``api`` callers, so whatever a run changes is restored when it ends, failed or
not: the next run, or the caller's own code, finds the process as it left it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from studybench.engine.device import backend_switches
from studybench.engine.rng import deterministic_mode
from studybench.study.spec import TrainCfg


@contextmanager
def run_settings(train: TrainCfg) -> Iterator[dict[str, str]]:
    """Within the block, the process runs with ``train``'s threads and switches; yields the switches
    as run tags; afterwards every setting is what it was before."""
    with thread_count(train.threads), deterministic_mode(train.deterministic) as switches:
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
