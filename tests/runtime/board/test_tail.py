"""The CPU tail against the float graph's own order of operations."""

from __future__ import annotations

import numpy as np
import pytest

from sarvessel.runtime.board.tail import CpuTail


@pytest.mark.parametrize("per_channel", [True, False])
def test_tail_matches_transpose_then_affine(per_channel: bool) -> None:
    rng = np.random.default_rng(0)
    acc = rng.integers(-(1 << 23), 1 << 23, size=(2, 4, 5, 7), dtype=np.int32)
    n = 7 if per_channel else 1
    scale, bias = rng.random(n).astype(np.float32), rng.random(n).astype(np.float32)
    tail = CpuTail.from_config({"transpose": [0, 3, 1, 2], "scale": scale.tolist(),
                                "bias": bias.tolist()})
    ref = acc.transpose(0, 3, 1, 2).astype(np.float32)
    ref = ref * scale.reshape(-1, 1, 1) + bias.reshape(-1, 1, 1)  # Mul then Add, float32
    got = tail(acc)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, ref)


def test_tail_without_transpose_and_errors() -> None:
    acc = np.arange(24, dtype=np.int32).reshape(1, 3, 2, 4)
    np.testing.assert_array_equal(CpuTail(None, [2.0], [1.0])(acc), acc * 2.0 + 1.0)
    with pytest.raises(ValueError, match="2 values for 3 channels"):
        CpuTail(None, [1.0, 2.0], [0.0])(acc)
    with pytest.raises(ValueError, match="permutation"):
        CpuTail([0, 1, 1, 2], [1.0], [0.0])
