"""Epoch batches built in-process or by worker processes, and the training device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sarvessel.evaluation.datasets import load_yolo_folder
from sarvessel.model.augment import AugmentConfig
from sarvessel.model.data import ImageDataset
from sarvessel.model.loader import EpochBatches, epoch_loader, resolve_device
from sarvessel.runtime.errors import SarvesselError
from tests.model.conftest import yolo_folder as _yolo_folder


def _dataset(root: Path, n: int = 6) -> ImageDataset:
    items = load_yolo_folder(_yolo_folder(root, n=n) / "train")
    return ImageDataset(items, tile_size=64, train_size=48,
                        augment=AugmentConfig(mosaic=0.5), seed=3)


def _epoch(loader, sampler, epoch: int, mosaic: bool = True) -> list:
    sampler.set_epoch(epoch, mosaic=mosaic)
    return [b for b in loader]


def test_sampler_cuts_a_seeded_permutation_per_epoch() -> None:
    s = EpochBatches(7, batch=3, seed=1)
    s.set_epoch(0)
    e0 = [i for b in s for _, i, _ in b]
    assert sorted(e0) == list(range(7)) and len(s) == 3
    assert [len(b) for b in s] == [3, 3, 1]
    s.set_epoch(1)
    assert [i for b in s for _, i, _ in b] != e0  # a new order each epoch
    capped = EpochBatches(7, batch=3, seed=1, max_batches=2)
    assert len(capped) == 2 and len(list(capped)) == 2
    with pytest.raises(SarvesselError, match="at least one sample"):
        EpochBatches(0, batch=3, seed=1)


def test_worker_processes_build_the_same_batches(tmp_path: Path) -> None:
    ds = _dataset(tmp_path)
    inproc = epoch_loader(ds, batch=4, seed=0, workers=0)
    workers = epoch_loader(_dataset(tmp_path / "again"), batch=4, seed=0, workers=2)
    for epoch in (0, 1):
        a, b = _epoch(*inproc, epoch), _epoch(*workers, epoch)
        assert len(a) == len(b) == 2
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x.images, y.images) and torch.equal(x.boxes, y.boxes)
            assert torch.equal(x.mask, y.mask) and torch.equal(x.labels, y.labels)
    # the epoch reaches the workers: epoch 1's samples differ from epoch 0's
    assert not torch.equal(_epoch(*workers, 0)[0].images, _epoch(*workers, 1)[0].images)
    # so does the mosaic switch (close_mosaic): without mosaics the samples change
    assert not all(torch.equal(x.images, y.images) for x, y in
                   zip(_epoch(*workers, 0), _epoch(*workers, 0, mosaic=False), strict=True))
    with pytest.raises(SarvesselError, match="workers"):
        epoch_loader(ds, batch=4, seed=0, workers=-1)


def test_resolve_device_names_and_refuses_a_missing_gpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == want
    with pytest.raises(SarvesselError, match="not a torch device"):
        resolve_device("gpu0")
    with pytest.raises(SarvesselError, match="cpu or cuda"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(SarvesselError, match="sees no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(SarvesselError):
        resolve_device(f"cuda:{max(torch.cuda.device_count(), 1) + 7}")


def test_default_workers_use_the_cores_only_beside_a_gpu() -> None:
    from sarvessel.model.loader import default_workers

    assert default_workers(torch.device("cpu")) == 0
    n = default_workers(torch.device("cuda"))  # a device object needs no GPU to exist
    assert 0 <= n <= 8
