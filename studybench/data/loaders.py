"""The run's data loaders: the training order and augmentation of one seed, evaluation lists.

Both depend on nothing but the dataset, the batch size and the seed (``rng``'s streams, through
``sampler.EpochSampler``), never on the number of workers or the global generators: every method
of a study sees the same batches.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from studybench.data.base import SegDataset
from studybench.data.sampler import EpochSampler
from studybench.engine.rng import torch_generator


def train_loader_for(
    dataset: SegDataset, batch_size: int, seed: int, workers: int, pin_memory: bool = False, aug_seed: int | None = None
) -> DataLoader:
    """Shuffled full batches in the order of ``(seed, epoch)``, each sample augmented from its own
    stream (``EpochSampler``): the batches are the same whatever ``workers`` is. Workers persist
    from epoch to epoch: a sample's augmentation is keyed by (seed, epoch, index), never by the
    worker's own state, so keeping them changes nothing but the start-up cost of each epoch.
    ``aug_seed``: the augmentation's own seed when a study gives seeds by source (default ``seed``)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), seed, aug_seed=aug_seed),
        drop_last=len(dataset) >= batch_size,
        num_workers=workers,
        generator=torch_generator(seed, "workers"),  # workers' own seeds; never the global generator
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
        collate_fn=_collate,
    )


def val_loader_for(
    dataset: SegDataset, batch_size: int, seed: int, workers: int, pin_memory: bool = False
) -> DataLoader:
    """The evaluation split in order, as lists of inputs and native-size masks (see ``evaluation``)."""
    return DataLoader(
        dataset,
        batch_size=min(batch_size, len(dataset)),
        shuffle=False,
        num_workers=workers,
        generator=torch_generator(seed, "workers"),
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
        collate_fn=_collate_lists,
    )


def _collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = {tuple(img.shape) for img, _ in batch}
    if len(shapes) > 1:
        raise ValueError(
            f"training images of one batch differ in size ({sorted(shapes)[:3]}...): set data.crop, or "
            "data.resize to [height, width]"
        )
    return torch.stack([img for img, _ in batch]), torch.stack([m for _, m in batch])


def _collate_lists(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Evaluation batches stay lists: inputs and native masks may differ in size from image to image."""
    return [img for img, _ in batch], [m for _, m in batch]
