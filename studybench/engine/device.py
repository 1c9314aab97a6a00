"""Where and how a run computes: device, AMP dtype, pinned transfers, memory format, compile, backend switches.

Every device decision of a run is made here once, from ``train`` settings, so the loop, the
schemes and the loaders ask one object (``Placement``) instead of each testing
``device.type == "cuda"`` on its own:

- the device (``train.device``: ``auto`` takes CUDA when there is one);
- the autocast dtype of the networks' forward (bfloat16 with ``train.amp`` on CUDA; the losses
  stay float32 either way, see ``schemes.base``);
- batches: pinned host memory and ``non_blocking`` copies on CUDA only (pinning buys nothing on CPU);
  ``channels_last`` inputs and weights with ``train.channels_last``;
- ``train.compile``: ``torch.compile`` of the networks' training forward (evaluation runs the plain
  module: native-size evaluation images have many shapes, each would be a recompilation);
- backend switches, recorded as tags: TF32 for convolutions and/or matmuls (``train.tf32``) and
  ``cudnn.benchmark`` (on unless ``train.deterministic``, which needs it off).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from studybench.store.layout import TAG_CHANNELS_LAST, TAG_COMPILE, TAG_CUDNN_BENCHMARK, TAG_TF32
from studybench.study.spec import TrainCfg

#: Loader worker processes when ``data.num_workers`` is not set: a few per run, never all the cores
#: (executors run several runs at once and each gets a share of the threads).
MAX_DEFAULT_WORKERS = 4


def resolve_device(name: str) -> torch.device:
    """``train.device`` as a ``torch.device``; ``auto`` is CUDA when available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def default_workers(configured: int | None, cpus: int | None = None) -> int:
    """Loader workers: ``data.num_workers`` if set, else from the CPUs this process may use.

    With 1-2 CPUs a worker process only competes with the training threads, so 0 (load in the
    main process); above that, half the CPUs up to ``MAX_DEFAULT_WORKERS``. The batches do not
    depend on the count (``data.sampler``), so it is a runtime key.
    """
    if configured is not None:
        return configured
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cpus <= 2 else min(MAX_DEFAULT_WORKERS, cpus // 2)


@dataclass(frozen=True)
class Placement:
    """The device decisions of one run (see the module docstring)."""

    device: torch.device
    amp: bool = False  # bfloat16 autocast of the networks' forward
    channels_last: bool = False
    compile: bool = False

    @classmethod
    def for_run(cls, train: TrainCfg, device: torch.device) -> Placement:
        cuda = device.type == "cuda"
        return cls(device=device, amp=train.amp and cuda, channels_last=train.channels_last, compile=train.compile)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def pin_memory(self) -> bool:
        """Loaders pin their batches only for a CUDA device (a pinned copy is what makes ``non_blocking`` async)."""
        return self.cuda

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of images ``[B, 3, H, W]`` on the device, without waiting for the copy (from pinned
        memory on CUDA); see ``layout`` for the memory format."""
        return images.to(self.device, non_blocking=self.cuda)

    def layout(self, images: torch.Tensor) -> torch.Tensor:
        """Images in the run's memory format (a no-op when they are in it already)."""
        return images.contiguous(memory_format=self.memory_format)

    def labels(self, target: torch.Tensor) -> torch.Tensor:
        """Label maps on the device, without waiting for the copy."""
        return target.to(self.device, non_blocking=self.cuda)

    def network(self, net: nn.Module) -> nn.Module:
        """A freshly built network moved to the device (channels-last weights if asked)."""
        return net.to(self.device, memory_format=self.memory_format)

    def trainable(self, net: nn.Module) -> nn.Module:
        """What the training forward calls: ``net`` itself, or its ``torch.compile`` wrapper (which shares
        the parameters, so state dicts, optimisers and evaluation keep using ``net``)."""
        return torch.compile(net) if self.compile else net


@contextmanager
def backend_switches(train: TrainCfg) -> Iterator[dict[str, str]]:
    """Within the block, set the TF32 policy and ``cudnn.benchmark`` for this run; yield the tags that
    record them; restore the process's previous switches afterwards.

    ``cudnn.benchmark`` picks the fastest convolution algorithm per input shape (training crops
    have one shape); with ``train.deterministic`` it stays off (``rng.deterministic_mode`` turns
    it off, since autotuning may pick a different algorithm from one process to the next). TF32
    (10-bit mantissa products on Ampere and later) is explicit rather than PyTorch's default of
    the day: ``train.tf32`` is ``conv`` (convolutions only: PyTorch's defaults, what runs used
    before the setting existed, so their keys and results stand), ``all`` (matmuls too: faster
    attention and linear layers) or ``none`` (IEEE float32 everywhere).
    """
    outer = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    precision = _matmul_precision()
    torch.backends.cuda.matmul.allow_tf32 = train.tf32 == "all"
    torch.backends.cudnn.allow_tf32 = train.tf32 in ("conv", "all")
    if not train.deterministic:
        torch.backends.cudnn.benchmark = True
    try:
        yield {
            TAG_TF32: train.tf32,
            TAG_CUDNN_BENCHMARK: str(torch.backends.cudnn.benchmark).lower(),
            TAG_CHANNELS_LAST: str(train.channels_last).lower(),
            TAG_COMPILE: str(train.compile).lower(),
        }
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = outer
        if precision is not None and _matmul_precision() != precision:
            torch.set_float32_matmul_precision(precision)


def _matmul_precision() -> str | None:
    """``torch.get_float32_matmul_precision()``, or None where torch refuses to say.

    Since PyTorch 2.9 the switches above (the per-backend "legacy" API) mixed with a policy set by
    ``torch.set_float32_matmul_precision`` make that getter raise; setting the policy again, after
    the switches are restored, gives the caller back a process where it answers as before.
    """
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:
        return None
