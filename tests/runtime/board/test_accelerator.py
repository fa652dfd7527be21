"""The fpga and sim cores: one path (pack, accelerator, unpack, CPU tail), its errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sarvessel.runtime.board.accelerator import (
    FpgaAccelerator,
    SimAccelerator,
    board_present,
    open_accelerator,
    require_board,
)
from sarvessel.runtime.board.errors import ChecksumError, NoBoardError, PackageError
from sarvessel.runtime.board.tail import CpuTail

from .conftest import C, T, driver_config, make_package, toy_accumulators, write_sim_model


def _tiles(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, C, T, T), dtype=np.uint8)


def _expected_head(tiles: np.ndarray) -> np.ndarray:
    return CpuTail.from_config(driver_config()["cpu_tail"])(toy_accumulators(tiles))


class FakeClock:
    """Scripted time: sleep advances it, nothing waits."""

    def __init__(self) -> None:
        self.t, self.slept = 100.0, []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


@pytest.mark.parametrize("batch_size", [1, 3])
def test_sim_accumulators_and_head_map(package: Path, batch_size: int) -> None:
    tiles = _tiles(7)
    sim = SimAccelerator(package, batch_size=batch_size)
    assert (sim.name, sim.channels, sim.tile_size) == ("sim", C, T)
    np.testing.assert_array_equal(sim.accumulators(tiles), toy_accumulators(tiles))
    head = sim.infer(tiles)
    assert head.dtype == np.float32 and head.shape == (7, *sim.out_shape)
    np.testing.assert_array_equal(head, _expected_head(tiles))


def test_sim_nchw_model_and_override(tmp_path: Path, package: Path) -> None:
    from .conftest import toy_weights

    model = write_sim_model(tmp_path / "nchw.onnx", toy_weights(), input_nchw=True)
    cfg = json.loads((package / "driver_config.json").read_text())
    cfg["sim"]["input_layout"] = "NCHW"
    (package / "driver_config.json").write_text(json.dumps(cfg))
    tiles = _tiles(2)
    sim = SimAccelerator(package, model=model)
    np.testing.assert_array_equal(sim.accumulators(tiles), toy_accumulators(tiles))


def test_sim_pacing_uses_the_package_estimate(package: Path) -> None:
    clock = FakeClock()
    sim = SimAccelerator(package, batch_size=2, paced=True, clock=clock)
    sim.infer(_tiles(5))
    per_tile = 548864 / 200e6
    assert clock.slept == pytest.approx([2 * per_tile, 2 * per_tile, per_tile])
    assert sim.paced_wait_s == pytest.approx(5 * per_tile)


def test_sim_rejects_non_accumulator_outputs(tmp_path: Path) -> None:
    from .conftest import toy_weights

    pkg = make_package(tmp_path / "p")
    write_sim_model(pkg / "sim" / "accumulators.onnx", toy_weights() * 0.5)  # half-integers
    with pytest.raises(Exception, match="not integer accumulators"):
        SimAccelerator(pkg).infer(_tiles(1))
    write_sim_model(pkg / "sim" / "accumulators.onnx", toy_weights() * 2000.0)  # > INT24
    with pytest.raises(Exception, match="do not fit INT24"):
        SimAccelerator(pkg).infer(np.full((1, C, T, T), 255, np.uint8))


def test_sim_needs_no_bitstream_but_a_model(tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "p", bitstream=False)
    SimAccelerator(pkg).infer(_tiles(1))
    (pkg / "sim" / "accumulators.onnx").unlink()
    with pytest.raises(PackageError, match="simulator model"):
        SimAccelerator(pkg)


def test_wrong_tiles_are_one_line(package: Path) -> None:
    with pytest.raises(Exception, match=r"tiles must be uint8 \[B, 2, 16, 16\]"):
        SimAccelerator(package).infer(np.zeros((1, C, T, T), np.float32))


# --- fpga: PYNQ faked at the hardware boundary, finn-plus-driver's FINNDMAOverlay real ------


@pytest.mark.parametrize("batch_size", [1, 4])
def test_fpga_path_through_the_real_overlay_class(package: Path, fake_pynq, no_board_check,
                                                  batch_size: int) -> None:
    tiles = _tiles(6, seed=2)
    fpga = FpgaAccelerator(package, batch_size=batch_size, board_check=no_board_check)
    from finn_plus_driver.overlays.dma import FINNDMAOverlay

    assert type(fpga.overlay) is FINNDMAOverlay
    assert fpga.overlay.platform == "zynq-iodma"
    assert fpga.clock_mhz == 187.5  # from the .hwh's clock wizard, as on a board
    head = fpga.infer(tiles)
    np.testing.assert_array_equal(head, _expected_head(tiles))
    np.testing.assert_array_equal(fpga.accumulators(tiles), toy_accumulators(tiles))
    # the same head maps as the simulator, through the same buffers
    np.testing.assert_array_equal(head, SimAccelerator(package).infer(tiles))
    assert fake_pynq.tiles_seen == 12
    assert fake_pynq.runs == 2 * -(-6 // batch_size)
    assert fake_pynq.flushes >= fake_pynq.runs and fake_pynq.invalidates >= fake_pynq.runs
    fpga.close()
    assert fake_pynq.freed == 2


def test_fpga_takes_the_builds_settings_verbatim(package: Path, fake_pynq,
                                                 no_board_check) -> None:
    from sarvessel.runtime.board.overlay import io_shape_dict

    cfg = json.loads((package / "driver_config.json").read_text())
    info = {"driver_type": "FINNDMAOverlay", "platform": "zynq-iodma",
            "io_shape_dict": io_shape_dict(cfg), "runtime_weights": False}
    (package / "finn_settings.json").write_text(json.dumps({"driver_information": info}))
    cfg["finn_settings"] = "finn_settings.json"
    (package / "driver_config.json").write_text(json.dumps(cfg))
    (package / "MANIFEST.sha256").unlink()
    fpga = FpgaAccelerator(package, board_check=no_board_check)
    np.testing.assert_array_equal(fpga.infer(_tiles(1)), _expected_head(_tiles(1)))
    # a settings.json for another accelerator is refused before the overlay loads
    info["io_shape_dict"]["oshape_normal"] = [[1, 4, 4, 5]]
    (package / "finn_settings.json").write_text(json.dumps({"driver_information": info}))
    with pytest.raises(PackageError, match="oshape_normal"):
        FpgaAccelerator(package, board_check=no_board_check)


def test_fpga_errors_come_first_and_in_one_line(tmp_path: Path, package: Path) -> None:
    calls = []

    def board_ok() -> None:
        calls.append(1)

    # no board: before anything else is looked at
    with pytest.raises(NoBoardError, match="no FPGA board here: this is x86_64"):
        FpgaAccelerator(tmp_path / "nowhere",
                        board_check=lambda: require_board(machine="x86_64"))
    # a package that does not validate
    bad = tmp_path / "bad"
    shutil.copytree(package, bad)
    cfg = json.loads((bad / "driver_config.json").read_text())
    cfg["output"]["shape_packed"] = [1, 2, 2, 5, 2]
    (bad / "driver_config.json").write_text(json.dumps(cfg))
    with pytest.raises(PackageError, match="shape_packed innermost 2 bytes"):
        FpgaAccelerator(bad, board_check=board_ok)
    # a simulator-only package
    with pytest.raises(PackageError, match="bitstream"):
        FpgaAccelerator(make_package(tmp_path / "sim", bitstream=False), board_check=board_ok)
    # a bitstream that is not the package's
    (package / "accelerator.bit").write_bytes(b"another design")
    with pytest.raises(ChecksumError, match="bitstream does not match its package"):
        FpgaAccelerator(package, board_check=board_ok)
    assert len(calls) == 3


def test_fpga_without_pynq_is_one_line(package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pynq", None)  # import pynq raises ImportError
    with pytest.raises(NoBoardError, match="needs pynq and finn-plus-driver"):
        FpgaAccelerator(package, board_check=lambda: None)


def test_board_detection(tmp_path: Path) -> None:
    mgr = tmp_path / "fpga_manager"
    assert not board_present(machine="aarch64", fpga_manager=mgr)
    mgr.mkdir()
    assert not board_present(machine="aarch64", fpga_manager=mgr)
    (mgr / "fpga0").mkdir()
    assert board_present(machine="aarch64", fpga_manager=mgr)
    assert not board_present(machine="x86_64", fpga_manager=mgr)
    require_board(machine="aarch64", fpga_manager=mgr)
    with pytest.raises(NoBoardError, match="no FPGA manager"):
        require_board(machine="aarch64", fpga_manager=tmp_path / "none")


def test_open_accelerator(package: Path) -> None:
    assert isinstance(open_accelerator("sim", package), SimAccelerator)
    with pytest.raises(NoBoardError):
        open_accelerator("fpga", package, board_check=lambda: require_board(machine="x86_64"))
