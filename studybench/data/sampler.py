"""The training sampler: each epoch's order and each sample's augmentation seed, from the run seed alone.

PyTorch's ``RandomSampler`` draws its permutation from a generator whose state carries over
from epoch to epoch, and the random transforms draw from whatever generator the loading
process has (the main process's global one with 0 workers, a per-worker one otherwise). So
the augmentation of a sample depended on the number of workers and on every other consumer
of the global RNG (a DML peer, SR exit heads, dropout). Here both are pure functions:

- order of epoch ``e``: a permutation from the stream ``(seed, "order", e)``;
- augmentation of sample ``i`` in epoch ``e``: the stream ``(seed, "augment", e, i)``,
  handed to the dataset as a ``SampleKey`` and turned into a generator where it is loaded.

Resuming at epoch ``e`` therefore needs nothing but ``e``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from studybench.data.base import SampleKey
from studybench.engine.rng import derive_seed, torch_generator


class EpochSampler(Sampler[SampleKey]):
    """Yields ``SampleKey(index, augmentation seed)`` for every sample of epoch ``epoch``.

    Args:
        size: number of samples.
        seed: the run seed (of the order; of the augmentation too unless ``aug_seed`` is given).
        shuffle: permute the samples each epoch (training) or keep their order.
        aug_seed: the augmentation's seed when a study gives seeds by source (``seeds: {aug: [...]}``).
    Call ``set_epoch`` before iterating each epoch (as with ``DistributedSampler``).
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True, aug_seed: int | None = None) -> None:
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.aug_seed = seed if aug_seed is None else aug_seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> list[int]:
        """This epoch's sample order."""
        if not self.shuffle:
            return list(range(self.size))
        return torch.randperm(self.size, generator=torch_generator(self.seed, "order", self.epoch)).tolist()

    def __iter__(self) -> Iterator[SampleKey]:
        for index in self.order():
            yield SampleKey(index, derive_seed(self.aug_seed, "augment", self.epoch, index))

    def __len__(self) -> int:
        return self.size
