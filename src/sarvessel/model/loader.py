"""Training batches of one epoch, built in the training process or by worker processes, the
same batches either way; and the torch device a run trains on.

Why workers: on a GPU host one process cannot augment samples (PIL resizes, speckle draws) as
fast as the accelerator consumes them, so torch's ``DataLoader`` spreads them over worker
processes. Why the batches do not change with the number of workers: each sample's random
stream is fixed by (seed, epoch, index) (:meth:`ImageDataset.__getitem__`) and the epoch's order
by (seed, epoch), and both are drawn from the index keys this sampler sends, not from state a
worker process would have to share. A run is thus reproducible from 2 CPU cores to a GPU host.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sarvessel.model.data import Batch, collate
from sarvessel.runtime.errors import SarvesselError

__all__ = ["EpochBatches", "EpochSamples", "SampleKey", "default_workers", "epoch_loader",
           "resolve_device"]

#: One sample's key: (epoch, index into the dataset, mosaics allowed).
SampleKey = tuple[int, int, bool]


class _EpochDataset(Protocol):
    def __len__(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...
    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


class EpochSamples(Dataset):
    """``dataset`` indexed by :data:`SampleKey`: each key carries its epoch (and whether mosaics
    are on), so a worker process draws the sample the training process would have drawn."""

    def __init__(self, dataset: _EpochDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        epoch, index, mosaic = key
        self.dataset.set_epoch(epoch)
        if hasattr(self.dataset, "use_mosaic"):
            self.dataset.use_mosaic = mosaic
        return self.dataset[index]


class EpochBatches(Sampler[list[SampleKey]]):
    """The batches of one epoch: a permutation seeded by (seed, epoch), cut into ``batch``-sized
    runs, at most ``max_batches`` of them. Call :meth:`set_epoch` before iterating.

    >>> s = EpochBatches(5, batch=2, seed=0)
    >>> s.set_epoch(3)
    >>> [[i for _, i, _ in b] for b in s] == [[int(i) for i in p] for p in
    ...     np.array_split(np.random.default_rng([0, 3]).permutation(5), [2, 4])]
    True
    """

    def __init__(self, n: int, *, batch: int, seed: int, max_batches: int | None = None) -> None:
        if n < 1 or batch < 1:
            raise SarvesselError(f"need at least one sample and a batch of >= 1 (got {n} "
                                 f"samples, batch {batch})")
        self.n, self.batch, self.seed = n, batch, seed
        full = -(-n // batch)
        self.n_batches = min(full, max_batches) if max_batches else full
        self.epoch, self.mosaic = 0, True

    def set_epoch(self, epoch: int, *, mosaic: bool = True) -> None:
        """Select ``epoch``'s order; ``mosaic``: whether its samples may be mosaics."""
        self.epoch, self.mosaic = epoch, mosaic

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list[SampleKey]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        for b in range(self.n_batches):
            yield [(self.epoch, int(i), self.mosaic)
                   for i in order[b * self.batch:(b + 1) * self.batch]]


def epoch_loader(dataset: _EpochDataset, *, batch: int, seed: int, workers: int = 0,
                 max_batches: int | None = None, pin_memory: bool = False
                 ) -> tuple[DataLoader[Batch], EpochBatches]:
    """A loader of collated :class:`Batch` es (uint8 images) and its sampler (set its epoch
    before each pass).

    workers: 0 builds batches in the calling process; n > 0 in n persistent worker processes
    (each keeps its own image cache), prefetching while the model trains."""
    if workers < 0:
        raise SarvesselError(f"workers must be >= 0, got {workers}")
    sampler = EpochBatches(len(dataset), batch=batch, seed=seed, max_batches=max_batches)
    # uint8 images: a quarter of the bytes through shared memory (often 64 MB in containers)
    # and to the GPU; Batch.to makes them float
    loader = DataLoader(EpochSamples(dataset), batch_sampler=sampler,
                        collate_fn=partial(collate, dtype=torch.uint8),
                        num_workers=workers, persistent_workers=workers > 0,
                        pin_memory=pin_memory)
    return loader, sampler


def default_workers(device: torch.device) -> int:
    """Batch-building processes when none are asked for: 0 on the CPU, otherwise one per
    core but one, at most 8. Why 0 on the CPU: the model's own threads need the cores, and a
    sample takes only ~2 ms to build (3-10 % of a training step at 384 px on 2 cores)."""
    if device.type == "cpu":
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` names: ``auto`` (CUDA when PyTorch sees a GPU, else the CPU),
    ``cpu``, ``cuda`` or ``cuda:N``. A CUDA name without a visible GPU is an error, not a
    silent fall-back: a run meant for a GPU would otherwise take hours on the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise SarvesselError(f"device {name!r}: not a torch device name (auto, cpu, cuda, "
                             f"cuda:N)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SarvesselError(f"device {name!r}: PyTorch sees no CUDA GPU here "
                                 "(torch.cuda.is_available() is False); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SarvesselError(f"device {name!r}: only {torch.cuda.device_count()} CUDA "
                                 "device(s) visible")
    elif dev.type != "cpu":
        raise SarvesselError(f"device {name!r}: training runs on cpu or cuda")
    return dev
