"""DataLoaders whose order and augmentation depend only on (seed, epoch, position): resumable anywhere."""

from __future__ import annotations

import os
import re
import sys
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from edgecnn.data.datasets import Split
from edgecnn.errors import EdgeCNNError


class EpochSampler(Sampler):
    """A seeded permutation of ``n`` indices for one epoch, each paired with its augmentation seed.

    ``start`` skips the first samples (a run resumed mid-epoch); ``set_epoch`` picks the permutation.
    ``shard=(rank, world)``: this process's share of a distributed run, every ``world``-th position
    from ``start + rank`` (the role of torch's DistributedSampler; the permutation, the seeds and
    ``start`` are global, so batch ``k`` of all ranks together is batch ``k`` of one process).
    """

    def __init__(self, n: int, seed: int, shard: tuple[int, int] = (0, 1)) -> None:
        self.n, self.seed, self.epoch, self.start = n, seed, 0, 0
        self.rank, self.world = shard

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = self._generator()
        order = torch.randperm(self.n, generator=g)
        seeds = torch.randint(0, 2**62, (self.n,), generator=g)
        for i in range(self.start + self.rank, self.n, self.world):
            yield int(order[i]), int(seeds[i])

    def __len__(self) -> int:
        return len(range(self.start + self.rank, self.n, self.world))


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


class OneLineLoader(DataLoader):
    """A DataLoader whose workers' input errors surface as the one line they were raised with.

    PyTorch re-raises a worker's exception with the worker's whole traceback in its message; for an
    :class:`EdgeCNNError` (e.g. an image that became unreadable) only its own last line is kept.
    """

    def __iter__(self) -> Iterator:
        batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except EdgeCNNError as exc:
                last = (str(exc).strip().splitlines() or [""])[-1]
                raise EdgeCNNError(re.sub(r"^[\w.]+Error: ", "", last)) from None
            yield batch


def default_workers() -> int:
    """DataLoader worker processes: CPU cores - 1, at least 1, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def worker_start_method(workers: int) -> str | None:
    """How DataLoader workers start: ``"spawn"`` once a threaded runtime (JAX, TensorFlow: loaded by
    the converters and by QAT) is in the process, since forking it can deadlock; else None, the
    platform's default (fork on Linux, the fastest). None without workers."""
    if workers and any(name in sys.modules for name in ("jax", "tensorflow")):
        return "spawn"
    return None


def train_loader(split: Split, transform: Callable, batch_size: int, seed: int, workers: int,
                 pin_memory: bool = False, shard: tuple[int, int] = (0, 1)) -> tuple[DataLoader, EpochSampler]:
    """Shuffled, augmented, ``drop_last`` batches (``batch_size`` per process); the returned sampler
    sets epoch and start position; workers start as :func:`worker_start_method` says."""
    sampler = EpochSampler(len(split), seed, shard)
    loader = OneLineLoader(SplitDataset(split, transform), batch_size=batch_size, sampler=sampler,
                           num_workers=workers, drop_last=True, pin_memory=pin_memory,
                           persistent_workers=False, generator=torch.Generator().manual_seed(seed),
                           multiprocessing_context=worker_start_method(workers))
    return loader, sampler


def eval_loader(split: Split, preprocess: Callable, batch_size: int, workers: int,
                pin_memory: bool = False, shard: tuple[int, int] = (0, 1)) -> DataLoader:
    """Batches of ``split`` in order, through the evaluation transform (a :class:`Preprocess`, or any
    callable of a PIL image); with ``shard=(rank, world)`` only every ``world``-th image from ``rank``."""
    rank, world = shard
    return OneLineLoader(SplitDataset(split, preprocess), batch_size=batch_size, shuffle=False,
                         sampler=range(rank, len(split), world) if world > 1 else None,
                         num_workers=workers, pin_memory=pin_memory,
                         multiprocessing_context=worker_start_method(workers))
