"""Per-purpose random streams and the deterministic-CUDA switch: what makes one seed mean one experiment.

A run's randomness is split by purpose so that no consumer can shift another's draws:

``order``
    the permutation of the training set in each epoch: ``(seed, "order", epoch)``;
``augment``
    the random crop/scale/flip of one sample in one epoch: ``(seed, "augment", epoch, index)``;
``init/<role>``
    the initial weights of each network role (``model``, ``peer``, ``exits``): ``(seed, "init/<role>")``;
``method``
    everything a method draws while it trains (dropout, center loss's pixel subset, ...):
    torch's global generators, seeded once with ``(seed, "method")`` before the first step.

Every stream is a pure function of its key, hashed with ``numpy.random.SeedSequence`` (whose
mixing keeps neighbouring keys apart), so the data a method sees depends neither on the
method, nor on the number of loader workers, nor on what else consumed randomness.

The ``seed`` of each stream is the run's seed, unless its study gives seeds by source
(``spec.SOURCES``; ``RunSpec.stream_seeds``): ``init`` keys the ``init/<role>`` streams, ``data``
the ``order`` (and the loader workers'), ``aug`` the ``augment`` streams and ``method`` the
``method`` stream, so one source can vary while the others stay put (Bouthillier et al. 2021).
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from studybench.store.layout import (
    TAG_CUBLAS_WORKSPACE,
    TAG_CUDNN_BENCHMARK,
    TAG_CUDNN_DETERMINISTIC,
    TAG_DETERMINISTIC,
    TAG_DETERMINISTIC_ALGORITHMS,
)

#: The cuBLAS workspace setting NVIDIA documents for reproducible results (":16:8" also works, slower).
CUBLAS_WORKSPACE = ":4096:8"
CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"


def derive_seed(seed: int, purpose: str, *ints: int) -> int:
    """A 63-bit seed for ``(seed, purpose, *ints)``; a different key gives an unrelated seed.

    ``purpose`` is hashed (sha256) to integers so that the key is stable across Python
    processes and versions (``hash(str)`` is salted per process).
    """
    if any(int(v) < 0 for v in (seed, *ints)):
        raise ValueError(f"stream keys must be non-negative integers, got {(seed, purpose, *ints)}")
    digest = hashlib.sha256(purpose.encode()).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in (0, 4)]  # same on every platform
    state = np.random.SeedSequence([int(seed), *words, *(int(v) for v in ints)]).generate_state(2, np.uint64)
    return int(state[0] >> np.uint64(1))


def torch_generator(seed: int, purpose: str, *ints: int) -> torch.Generator:
    """A fresh CPU ``torch.Generator`` of the stream ``(seed, purpose, *ints)``."""
    return torch.Generator().manual_seed(derive_seed(seed, purpose, *ints))


def seed_method_stream(seed: int) -> None:
    """Seed the global generators (Python, NumPy, torch CPU and CUDA) with ``(seed, "method")``.

    Why global: dropout and similar layers cannot take an explicit generator. Data order,
    augmentation and initial weights never draw from these, so only the method's own draws
    advance them; checkpoints save and restore them for an exact resume.
    """
    value = derive_seed(seed, "method")
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)


@contextmanager
def init_stream(seed: int, role: str) -> Iterator[None]:
    """Run the block (a network's construction) with torch's CPU generator on ``(seed, "init/<role>")``.

    The generator's outer state is restored afterwards, so building a peer network or exit
    heads neither changes nor depends on any other draw. Networks are built on the CPU
    (only the CPU generator is touched; CUDA's stays the method's).
    """
    outer = torch.get_rng_state()
    torch.default_generator.manual_seed(derive_seed(seed, f"init/{role}"))
    try:
        yield
    finally:
        torch.set_rng_state(outer)


@contextmanager
def deterministic_mode(enabled: bool) -> Iterator[dict[str, str]]:
    """Within the block, set (or clear) every switch PyTorch offers for reproducible kernels;
    yield them as run tags; restore the process's previous switches afterwards.

    On: ``torch.use_deterministic_algorithms(True, warn_only=False)`` (an op without a
    deterministic kernel raises and names itself), cuDNN deterministic with autotuning off,
    and ``CUBLAS_WORKSPACE_CONFIG`` (read by cuBLAS when CUDA initialises, so it applies to
    a process's first CUDA run: executors start a fresh process per run or per worker).
    Off: PyTorch's defaults (an existing ``CUBLAS_WORKSPACE_CONFIG`` is left alone).
    The environment variable is removed again afterwards, so that processes started later
    (loader workers of another run, subprocesses of the caller) do not inherit it.
    """
    outer = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    workspace = os.environ.get(CUBLAS_ENV)
    if enabled:
        os.environ.setdefault(CUBLAS_ENV, CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(enabled, warn_only=False)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False
    try:
        yield _switch_tags(enabled)
    finally:
        torch.use_deterministic_algorithms(outer[0], warn_only=outer[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        if workspace is None:
            os.environ.pop(CUBLAS_ENV, None)
        else:
            os.environ[CUBLAS_ENV] = workspace


def _switch_tags(enabled: bool) -> dict[str, str]:
    """The switches as they stand, as run tags (so a report can tell how a run was made)."""
    return {
        TAG_DETERMINISTIC: str(enabled).lower(),
        TAG_DETERMINISTIC_ALGORITHMS: str(torch.are_deterministic_algorithms_enabled()).lower(),
        TAG_CUDNN_DETERMINISTIC: str(torch.backends.cudnn.deterministic).lower(),
        TAG_CUDNN_BENCHMARK: str(torch.backends.cudnn.benchmark).lower(),
        TAG_CUBLAS_WORKSPACE: os.environ.get(CUBLAS_ENV, ""),
    }
