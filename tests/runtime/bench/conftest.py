"""Shared helpers of the benchmark-harness tests: a small dB scene and a toy peer network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

#: Side of the toy peer's tiles (px).
PEER_TILE = 64


def write_scene(folder: Path, *, height: int = 700, width: int = 900, seed: int = 0) -> Path:
    """VV/VH float32 dB sea clutter with a few bright points: enough for CFAR to find some."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    vv = (-22 + 3 * rng.standard_normal((height, width))).astype(np.float32)
    for r, c in rng.integers(20, min(height, width) - 20, (5, 2)):
        vv[r - 2 : r + 3, c - 2 : c + 3] = 5.0
    for name, img in (("VV_dB.tif", vv), ("VH_dB.tif", vv - 8)):
        tifffile.imwrite(folder / name, img, tile=(256, 256))
    return folder


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_scene(tmp_path / "S_bench_v")


@pytest.fixture
def peer_path(tmp_path: Path) -> Path:
    """A stock-detector-shaped ONNX: float ``[B, 3, T, T]`` in, ``[B, 84, N]`` out."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    t, s = PEER_TILE, 8
    n = (t // s) ** 2
    graph = helper.make_graph(
        [helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[s, s], strides=[s, s]),
         helper.make_node("Conv", ["p", "w"], ["c"]),
         helper.make_node("Reshape", ["c", "shape"], ["y"])],
        "peer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, t, t])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 84, n])],
        [numpy_helper.from_array(np.full((84, 3, 1, 1), 0.1, np.float32), "w"),
         numpy_helper.from_array(np.array([0, 84, n], np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "peer_64.onnx"
    onnx.save(model, str(path))
    return path
