"""Deploy package reading: schema errors name the problem, manifest, estimate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sarvessel.runtime.board.errors import ChecksumError, PackageError
from sarvessel.runtime.board.overlay import io_shape_dict, overlay_args
from sarvessel.runtime.board.package import (
    load_package,
    read_manifest,
    validate_driver_config,
    verify_manifest,
    write_manifest,
)

from .conftest import driver_config, make_package


def test_load_package(package: Path) -> None:
    pkg = load_package(package, need_bitstream=True)
    assert pkg.has_bitstream and pkg.selftest is not None
    assert pkg.seconds_per_tile == pytest.approx(548864 / 200e6)
    assert pkg.check_bitstream() == pkg.config["bitfile_sha256"]
    assert pkg.sim_model == package / "sim" / "accumulators.onnx"


@pytest.mark.parametrize(("change", "message"), [
    ({"schema_version": 2}, "schema_version 2 not supported"),
    ({"clock_mhz": 0}, "clock_mhz must be positive"),
    ({"surprise": 1}, "unknown key"),
    ({"bitfile_sha256": "abc"}, "64 hex digits"),
    ({"sim": {"model": 3}}, "sim.model"),
    ({"estimate": {"cycles_per_tile": -1}}, "estimate.cycles_per_tile"),
    ({"cpu_tail": {"transpose": [0, 3, 1, 2], "scale": [1.0, 2.0], "bias": [0.0]}},
     "cpu_tail.scale must be 1 or 5"),
])
def test_schema_errors(change: dict, message: str) -> None:
    with pytest.raises(PackageError, match=message):
        validate_driver_config(driver_config(**change))


def test_io_errors() -> None:
    cfg = driver_config()
    cfg["input"]["finn_datatype"] = "INT8"
    with pytest.raises(PackageError, match="input finn_datatype must be UINT8"):
        validate_driver_config(cfg)
    cfg = driver_config()
    cfg["output"]["shape_folded"] = [1, 2, 2, 4, 1]
    with pytest.raises(PackageError, match="does not fold"):
        validate_driver_config(cfg)


def test_files_and_manifest(tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "p", bitstream=False, manifest=False)
    with pytest.raises(PackageError, match="bitstream"):
        load_package(pkg, need_bitstream=True)
    load_package(pkg)  # a simulator package
    digests = write_manifest(pkg)
    assert read_manifest(pkg) == digests and "driver_config.json" in digests
    verify_manifest(pkg)
    (pkg / "extra.txt").write_text("x")
    with pytest.raises(ChecksumError, match="not in the manifest"):
        verify_manifest(pkg)
    (pkg / "extra.txt").unlink()
    (pkg / "selftest" / "inputs.npy").unlink()
    with pytest.raises(ChecksumError, match="missing"):
        verify_manifest(pkg)
    (pkg / "driver_config.json").write_text("{not json")
    with pytest.raises(PackageError, match="not valid JSON"):
        load_package(pkg)
    with pytest.raises(PackageError, match="not found"):
        load_package(tmp_path / "none")


def test_overlay_args(package: Path) -> None:
    pkg = load_package(package)
    d = io_shape_dict(pkg.config)
    assert d["idt"] == ["DataType['UINT8']"] and d["odt"] == ["DataType['INT24']"]
    assert d["oshape_packed"] == [[1, 2, 2, 5, 3]] and d["num_inputs"] == d["num_outputs"] == 1
    args = overlay_args(pkg, batch_size=4)
    assert args.driver_type == "FINNDMAOverlay" and args.bitfile == str(pkg.bitfile)
    assert args.kwargs["platform"] == "zynq-iodma" and args.kwargs["batch_size"] == 4
    assert args.kwargs["fclk_mhz"] == 200.0
    assert args.kwargs["runtime_weight_dir"] == str(package / "runtime_weights")
    cfg = json.loads((package / "driver_config.json").read_text())
    cfg["finn_settings"] = "finn_settings.json"
    (package / "driver_config.json").write_text(json.dumps(cfg))
    (package / "finn_settings.json").write_text("[]")
    with pytest.raises(PackageError, match="not a finn-plus settings.json"):
        overlay_args(load_package(package))
