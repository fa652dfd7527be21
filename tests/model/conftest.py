"""Shared helpers of the model tests.

Model tests run torch on one thread: their tensors are tiny, and on a shared machine several
threads per test oversubscribe the cores (a 7 s test took over 15 min with the default)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sarvessel.evaluation.datasets import LabeledImage, write_yolo_labels


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def yolo_folder(root: Path, n: int = 4) -> Path:
    """A tiny YOLO dataset (train/val, n 80 x 64 images with one bright box each) in root."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 40, (64, 80)).astype(np.uint8)
            x, y = int(rng.integers(4, 50)), int(rng.integers(4, 30))
            img[y:y + 16, x:x + 12] = 230
            path = root / split / "images" / f"{i}.png"
            Image.fromarray(img).save(path)
            item = LabeledImage(path, 80, 64, np.array([[x, y, x + 12, y + 16]], np.float32),
                                np.array([0]))
            write_yolo_labels(root / split / "labels" / f"{i}.txt", item)
    return root


