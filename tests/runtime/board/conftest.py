"""Shared helpers of the board tests: a small deploy package, and PYNQ faked at its boundary.

The package is a toy accelerator (a stride-s convolution with integer weights: uint8 tiles in,
INT24 accumulators out) with everything a real one has: driver_config.json v1, a simulator ONNX
graph, self-test tiles with expected accumulators, a bitstream and .hwh (random bytes and a
minimal hardware handoff), the bitstream's SHA-256 and a manifest.

The fake PYNQ replaces only what touches hardware: ``pynq.Overlay`` (the base class: IP
attributes from the .hwh), ``pynq.allocate`` (contiguous buffers with a device address) and the
IODMAs' registers. A fake fabric behind the DMA registers reads the input buffer by address,
computes the toy accelerator and writes its output, packed by finn-plus-driver's own packing.
Everything above that boundary (FINNDMAOverlay, our packing, the CPU tail) is the real code.
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sarvessel.runtime.board.package import sha256_file, write_manifest

#: Toy accelerator geometry: tile T, channels C, stride S, output channels CO.
T, C, S, CO = 16, 2, 8, 5

HWH = """<?xml version="1.0" encoding="UTF-8"?>
<EDKSYSTEM><MODULES>
<MODULE INSTANCE="clk_wiz_0" MODTYPE="clk_wiz"><PARAMETERS>
<PARAMETER NAME="CLKOUT1_OUT_FREQ" VALUE="187.5"/></PARAMETERS></MODULE>
</MODULES></EDKSYSTEM>
"""


def toy_weights(co: int = CO, c: int = C, s: int = S) -> np.ndarray:
    """Integer conv weights ``[CO, C, S, S]`` in -3..3."""
    return np.random.default_rng(7).integers(-3, 4, size=(co, c, s, s)).astype(np.float32)


def toy_accumulators(tiles: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """The toy accelerator in numpy: ``uint8 [B, C, T, T]`` to int32 ``[B, T/S, T/S, CO]``."""
    w = toy_weights() if w is None else w
    b, c, t, _ = tiles.shape
    s = w.shape[-1]
    blocks = tiles.astype(np.int64).reshape(b, c, t // s, s, t // s, s)
    acc = np.einsum("bchiwj,ocij->bhwo", blocks, w.astype(np.int64))
    return acc.astype(np.int32)


def write_sim_model(path: Path, w: np.ndarray, *, input_nchw: bool = False) -> Path:
    """ONNX graph host tile (float, NHWC or NCHW) to NHWC accumulators: [Transpose] Conv
    Transpose."""
    onnx = pytest.importorskip("onnx", reason="onnx is needed to build the toy simulator graph")
    from onnx import TensorProto, helper, numpy_helper

    s = w.shape[-1]
    nodes = []
    x_shape = ["N", C, T, T] if input_nchw else ["N", T, T, C]
    src = "x"
    if not input_nchw:
        nodes.append(helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]))
        src = "xt"
    nodes += [helper.make_node("Conv", [src, "w"], ["y"], kernel_shape=[s, s], strides=[s, s]),
              helper.make_node("Transpose", ["y"], ["acc"], perm=[0, 2, 3, 1])]
    graph = helper.make_graph(
        nodes, "toy_accumulators",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("acc", TensorProto.FLOAT, ["N", T // s, T // s, CO])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def driver_config(**overrides: Any) -> dict[str, Any]:
    """The toy package's driver_config.json."""
    rng = np.random.default_rng(3)
    g = T // S
    cfg: dict[str, Any] = {
        "schema_version": 1, "board": "KV260_SOM", "fpga_part": "xck26-sfvc784-2LV-c",
        "clock_mhz": 200.0, "bitfile": "accelerator.bit", "hwh": "accelerator.hwh",
        "host_layout": "NCHW",
        "input": {"finn_datatype": "UINT8", "layout": "NHWC", "transpose_from_host": [0, 2, 3, 1],
                  "shape_normal": [1, T, T, C], "shape_folded": [1, T, T, C, 1],
                  "shape_packed": [1, T, T, C, 1]},
        "output": {"finn_datatype": "INT24", "layout": "NHWC",
                   "shape_normal": [1, g, g, CO], "shape_folded": [1, g, g, CO, 1],
                   "shape_packed": [1, g, g, CO, 3]},
        "cpu_tail": {"transpose": [0, 3, 1, 2],
                     "scale": [float(v) for v in rng.uniform(0.01, 0.1, CO)],
                     "bias": [float(v) for v in rng.uniform(-1, 1, CO)]},
        "runtime_weights": [],
        "model": {"name": "toy", "tile_size": T, "channels": C, "stride": S, "reg_max": 1,
                  "nc": 1},
        "estimate": {"cycles_per_tile": 548864, "tiles_per_s": 364.4},
        "sim": {"model": "sim/accumulators.onnx", "input_layout": "NHWC",
                "output_layout": "NHWC"},
        "selftest": {"inputs": "selftest/inputs.npy", "expected_acc": "selftest/expected_acc.npy"},
        "build": {"finn_plus": "1.6.1", "vivado": "2022.2"},
    }
    cfg.update(overrides)
    return cfg


def make_package(root: Path, *, bitstream: bool = True, manifest: bool = True,
                 selftest_tiles: int = 8, **overrides: Any) -> Path:
    """Write the toy deploy package into ``root``; return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    w = toy_weights()
    write_sim_model(root / "sim" / "accumulators.onnx", w)
    tiles = np.random.default_rng(11).integers(0, 256, size=(selftest_tiles, C, T, T),
                                               dtype=np.uint8)
    (root / "selftest").mkdir(exist_ok=True)
    np.save(root / "selftest" / "inputs.npy", tiles)
    np.save(root / "selftest" / "expected_acc.npy", toy_accumulators(tiles, w))
    cfg = driver_config(**overrides)
    if bitstream:
        (root / "accelerator.bit").write_bytes(np.random.default_rng(5).bytes(4096))
        (root / "accelerator.hwh").write_text(HWH)
        cfg.setdefault("bitfile_sha256", sha256_file(root / "accelerator.bit"))
    (root / "driver_config.json").write_text(json.dumps(cfg, indent=2))
    if manifest:
        write_manifest(root)
    return root


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A complete toy deploy package (bitstream, simulator, self-test, manifest)."""
    return make_package(tmp_path / "pkg")


# --- PYNQ faked at its hardware boundary -------------------------------------------------


class FakeBuffer(np.ndarray):
    """``pynq.allocate``'s PynqBuffer: a contiguous array with a physical address."""

    device_address: int

    def flush(self) -> None:
        self.fabric.flushes += 1  # type: ignore[attr-defined]

    def invalidate(self) -> None:
        self.fabric.invalidates += 1  # type: ignore[attr-defined]

    def freebuffer(self) -> None:
        self.fabric.freed += 1  # type: ignore[attr-defined]


class FakeFabric:
    """Memory and the toy accelerator behind the IODMAs' registers."""

    def __init__(self) -> None:
        self.buffers: dict[int, FakeBuffer] = {}
        self.next_address = 0x4000_0000
        self.flushes = self.invalidates = self.freed = self.runs = 0
        self.tiles_seen = 0
        self.overlays: list[Any] = []

    def allocate(self, shape: Any, dtype: Any = np.uint8, cacheable: bool = True,
                 target: Any = None, **_: Any) -> FakeBuffer:
        buf = np.zeros(shape, dtype).view(FakeBuffer)
        buf.device_address = self.next_address
        buf.fabric = self  # type: ignore[attr-defined]
        self.buffers[self.next_address] = buf
        self.next_address += (buf.nbytes + 0xFFF) & ~0xFFF
        return buf

    def run(self, idma: FakeDMA, odma: FakeDMA) -> None:
        """The input DMA was started: compute the toy accelerator into the output buffer."""
        from finn_plus_driver.packing import finnpy_to_packed_bytearray
        from qonnx.core.datatype import DataType

        n = idma.regs[0x1C]
        assert odma.regs[0x1C] == n, "output DMA programmed for another batch size"
        ibuf = self.buffers[idma.address()]
        obuf = self.buffers[odma.address()]
        nhwc = np.asarray(ibuf[:n]).reshape(n, T, T, C)
        acc = toy_accumulators(nhwc.transpose(0, 3, 1, 2))
        packed = finnpy_to_packed_bytearray(acc.reshape(n, T // S, T // S, CO, 1).astype(
            np.float32), DataType["INT24"], reverse_inner=True, reverse_endian=True)
        obuf[:n] = packed
        self.runs += 1
        self.tiles_seen += n
        odma.regs[0x00] = 0x6  # done | idle


class FakeDMA:
    """A FINN IODMA's AXI-lite registers: 0x00 control (start / done / idle), 0x10/0x14 buffer
    address, 0x1C repetitions (tiles)."""

    def __init__(self, fabric: FakeFabric, name: str) -> None:
        self.fabric, self.name = fabric, name
        self.regs: dict[int, int] = {0x00: 0x4}
        self.peer: FakeDMA | None = None

    def address(self) -> int:
        return self.regs[0x10] | (self.regs.get(0x14, 0) << 32)

    def read(self, offset: int) -> int:
        return self.regs.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        self.regs[offset] = value
        if offset == 0x00 and value & 1:
            if self.name.startswith("odma"):
                self.regs[0x00] = 0x0  # busy until the fabric finishes
            else:
                assert self.peer is not None
                self.fabric.run(self, self.peer)


def fake_pynq_modules(fabric: FakeFabric) -> dict[str, types.ModuleType]:
    """``pynq`` and ``pynq.ps`` replaced at the hardware boundary."""

    class Overlay:
        def __init__(self, bitfile_name: str, download: bool = True, device: Any = None,
                     **_: Any) -> None:
            if not Path(bitfile_name).is_file():
                raise OSError(f"{bitfile_name} not found")
            self.bitfile_name, self.download, self.device = bitfile_name, download, device
            idma, odma = FakeDMA(fabric, "idma0"), FakeDMA(fabric, "odma0")
            idma.peer = odma
            self.ip_dict = {"idma0": {}, "odma0": {}}
            self.idma0, self.odma0 = idma, odma
            fabric.overlays.append(self)

    class Clocks:
        fclk0_mhz = 100.0

    class Bitstream:  # imported by the instrumentation overlays, unused by FINNDMAOverlay
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise AssertionError("Bitstream is not part of the DMA overlay's path")

    pynq = types.ModuleType("pynq")
    pynq.Overlay = Overlay  # type: ignore[attr-defined]
    pynq.allocate = fabric.allocate  # type: ignore[attr-defined]
    pynq.Bitstream = Bitstream  # type: ignore[attr-defined]
    ps = types.ModuleType("pynq.ps")
    ps.Clocks = Clocks  # type: ignore[attr-defined]
    pynq.ps = ps  # type: ignore[attr-defined]
    return {"pynq": pynq, "pynq.ps": ps}


@pytest.fixture
def fake_pynq(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFabric]:
    """Install the fake ``pynq``; finn-plus-driver's overlay module is imported afresh on it."""
    pytest.importorskip("finn_plus_driver",
                        reason="finn-plus-driver is not installed here (board env: "
                               "scripts/board_env.sh)")
    fabric = FakeFabric()
    for name, mod in fake_pynq_modules(fabric).items():
        monkeypatch.setitem(sys.modules, name, mod)
    for name in [m for m in sys.modules if m.startswith("finn_plus_driver.overlays")]:
        monkeypatch.delitem(sys.modules, name)
    yield fabric
    for name in [m for m in sys.modules if m.startswith("finn_plus_driver.overlays")]:
        sys.modules.pop(name, None)


@pytest.fixture
def no_board_check() -> Callable[[], None]:
    """A board check that passes (the fake PYNQ stands in for the board)."""
    return lambda: None
