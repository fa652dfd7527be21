"""Model tests run torch on one thread: their tensors are tiny, and on a shared machine several
threads per test oversubscribe the cores (a 7 s test took over 15 min with the default)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
