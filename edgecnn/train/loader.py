"""DataLoaders whose order and augmentation depend only on (seed, epoch, position): resumable anywhere."""

from __future__ import annotations

import os
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from edgecnn.data.datasets import Split
from edgecnn.data.transforms import Preprocess


class EpochSampler(Sampler):
    """A seeded permutation of ``n`` indices for one epoch, each paired with its augmentation seed.

    ``start`` skips the first samples (a run resumed mid-epoch); ``set_epoch`` picks the permutation.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch, self.start = n, seed, 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = self._generator()
        order = torch.randperm(self.n, generator=g)
        seeds = torch.randint(0, 2**62, (self.n,), generator=g)
        for i in range(self.start, self.n):
            yield int(order[i]), int(seeds[i])

    def __len__(self) -> int:
        return self.n - self.start


class SplitDataset(Dataset):
    """A :class:`Split` through a transform: ``Preprocess`` (eval) or ``TrainTransform`` (index, seed)."""

    def __init__(self, split: Split, transform: Callable) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item):  # noqa: ANN001 (int, or (int, seed) from EpochSampler)
        if isinstance(item, tuple):
            i, seed = item
            x = self.transform(self.split.image(i), seed)
        else:
            i = item
            x = self.transform(self.split.image(i))
        return x, int(self.split.labels[i])


def default_workers() -> int:
    """DataLoader worker processes: CPU cores - 1, at least 1, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def train_loader(split: Split, transform: Callable, batch_size: int, seed: int, workers: int,
                 pin_memory: bool = False, start_method: str | None = None) -> tuple[DataLoader, EpochSampler]:
    """Shuffled, augmented, ``drop_last`` batches; the returned sampler sets epoch and start position.

    ``start_method`` of the worker processes: ``None`` is the platform's (fork on Linux); ``"spawn"``
    once threaded runtimes (JAX, TensorFlow) are loaded, which a fork can deadlock.
    """
    sampler = EpochSampler(len(split), seed)
    loader = DataLoader(SplitDataset(split, transform), batch_size=batch_size, sampler=sampler,
                        num_workers=workers, drop_last=True, pin_memory=pin_memory,
                        persistent_workers=False, generator=torch.Generator().manual_seed(seed),
                        multiprocessing_context=start_method if workers else None)
    return loader, sampler


def eval_loader(split: Split, preprocess: Preprocess, batch_size: int, workers: int,
                pin_memory: bool = False, start_method: str | None = None) -> DataLoader:
    """Batches of ``split`` in order, through the evaluation transform (``start_method``: see :func:`train_loader`)."""
    return DataLoader(SplitDataset(split, preprocess), batch_size=batch_size, shuffle=False,
                      num_workers=workers, pin_memory=pin_memory,
                      multiprocessing_context=start_method if workers else None)
