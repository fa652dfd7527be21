"""A simulator deploy package written without Vivado (``sarvessel hw package``), run by the
``sim`` backend: its accumulators equal FINN's execution of the hardware graph bit for bit, its
packing is FINN's, and its detections are the CPU graph's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.hw.conftest import _finn_or_skip, export_contract_qonnx

TILES = 8


@pytest.fixture(scope="module")
def sim_package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The scene network at a 64 px tile: QONNX, its intfloat graph, and its sim package."""
    _finn_or_skip()
    from sarvessel.hw.config import HWConfig
    from sarvessel.hw.package import write_sim_package
    from sarvessel.quantize.intfloat import export_intfloat

    root = tmp_path_factory.mktemp("simpkg")
    qonnx, which = export_contract_qonnx(root / "scene_64.onnx", tile=64)
    if which != "sarvessel.model.network":
        pytest.skip("the real network is needed for an intfloat graph")
    meta = {"name": "scene_64", "tile_size": 64, "channels": 2, "stride": 8, "reg_max": 16,
            "nc": 3, "bands": ["VV_dB", "VH_dB"],
            "class_names": ["non_vessel", "vessel", "fishing"], "conf_threshold": 0.05}
    intfloat = root / "scene_64_intfloat.onnx"
    export_intfloat(qonnx, intfloat, metadata=meta)
    cfg = HWConfig(output_dir=root / "flow", tile_size=64, tile_overlap=8)
    pkg = write_sim_package(qonnx, intfloat, root / "pkg", cfg, selftest_tiles=2)
    return qonnx, intfloat, pkg


@pytest.mark.finn
def test_sim_accumulators_equal_the_hardware_graph_through_finn_packing(sim_package) -> None:
    from finn.util.data_packing import finnpy_to_packed_bytearray
    from qonnx.core.datatype import DataType
    from qonnx.core.onnx_exec import execute_onnx

    from sarvessel.hw.verify import synthetic_sar_tiles
    from sarvessel.quantize.intfloat import hardware_graph
    from sarvessel.runtime.backends.accelerator import sim_backend
    from sarvessel.runtime.board.packing import pack, unpack

    qonnx, _, pkg = sim_package
    tiles = synthetic_sar_tiles(TILES, tile=64, seed=7)
    sim = sim_backend(pkg, batch_size=3)
    acc = sim.accumulators(tiles)  # NHWC, through the package's pack/unpack path
    hw = hardware_graph(qonnx)
    last = [n for n in hw.graph.node if n.op_type == "MatMul"][-1].output[0]
    for i in range(TILES):
        ctx = execute_onnx(hw, {hw.graph.input[0].name: tiles[i:i + 1].astype(np.float32)},
                           return_full_exec_context=True)
        np.testing.assert_array_equal(ctx[last], acc[i:i + 1], err_msg=f"tile {i}")
    # the output words are what FINN's own packing makes of these accumulators
    cfg = json.loads((pkg / "driver_config.json").read_text())
    dt, folded = cfg["output"]["finn_datatype"], cfg["output"]["shape_folded"]
    x = acc[:1].reshape(folded).astype(np.float32)
    finn = finnpy_to_packed_bytearray(x, DataType[dt], reverse_endian=True, reverse_inner=True)
    ours = pack(acc[:1].reshape(folded), dt)
    np.testing.assert_array_equal(ours, finn)
    np.testing.assert_array_equal(unpack(finn, dt, folded[-1]).reshape(acc[:1].shape), acc[:1])


@pytest.mark.finn
def test_sim_detects_what_the_cpu_graph_detects(sim_package) -> None:
    from sarvessel.hw.verify import synthetic_sar_tiles
    from sarvessel.runtime.backends.accelerator import sim_backend
    from sarvessel.runtime.backends.onnx import OnnxBackend
    from sarvessel.runtime.detector import compose

    _, intfloat, pkg = sim_package
    tiles = synthetic_sar_tiles(TILES, tile=64, seed=8)
    sim, cpu = compose(sim_backend(pkg)), compose(OnnxBackend(intfloat))
    np.testing.assert_array_equal(sim.infer(tiles), cpu.infer(tiles))
    found = 0
    for a, b in zip(sim.detect(tiles), cpu.detect(tiles), strict=True):
        for key in ("rows", "cols", "scores", "classes", "boxes", "lengths_px"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
        found += len(a)
    assert found > 0  # a 0.05 threshold on an untrained network finds plenty


@pytest.mark.finn
def test_the_package_validates_and_its_self_test_passes(sim_package) -> None:
    from sarvessel.runtime.board.package import load_package, verify_manifest
    from sarvessel.runtime.board.tools import check

    _, _, pkg = sim_package
    p = load_package(pkg)
    assert p.sim_model is not None and p.selftest is not None and not p.has_bitstream
    assert p.seconds_per_tile is not None and p.seconds_per_tile > 0
    verify_manifest(pkg)
    report = check(pkg, backend="sim", power=lambda: None)
    assert report.passed
