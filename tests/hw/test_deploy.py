"""Deploy package schema: built from the flow's models, validated before the board loads it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from sarvessel.hw.deploy import (
    DRIVER_CONFIG,
    validate_deploy_package,
    validate_driver_config,
    write_deploy_package,
)
from sarvessel.hw.errors import DeployPackageError


def _example_config() -> dict:
    return {
        "schema_version": 1,
        "board": "KV260_SOM",
        "fpga_part": "xck26-sfvc784-2LV-c",
        "clock_mhz": 200.0,
        "bitfile": "accelerator.bit",
        "hwh": "accelerator.hwh",
        "host_layout": "NCHW",
        "input": {
            "finn_datatype": "UINT8", "layout": "NHWC", "transpose_from_host": [0, 2, 3, 1],
            "shape_normal": [1, 512, 512, 2], "shape_folded": [1, 512, 512, 1, 2],
            "shape_packed": [1, 512, 512, 1, 2],
        },
        "output": {
            "finn_datatype": "INT21", "layout": "NHWC",
            "shape_normal": [1, 64, 64, 67], "shape_folded": [1, 64, 64, 67, 1],
            "shape_packed": [1, 64, 64, 67, 3],
        },
        "cpu_tail": {"transpose": [0, 3, 1, 2], "scale": [0.5] * 67, "bias": [0.0] * 67},
        "runtime_weights": [],
        "model": {"name": "x", "tile_size": 512, "channels": 2, "stride": 8, "reg_max": 16,
                  "nc": 3},
    }


def _package(tmp_path: Path, cfg: dict) -> Path:
    bit, hwh = tmp_path / "a.bit", tmp_path / "a.hwh"
    bit.write_bytes(b"\x00\x09bitstream")
    hwh.write_text("<hwh/>")
    return write_deploy_package(tmp_path / "pkg", cfg, bitfile=bit, hwh=hwh)


def test_the_model_entry_must_be_a_sidecar_the_runtime_accepts(tmp_path: Path) -> None:
    """The board validates a package with the runtime's contract alone: a model entry the
    runtime could not run is refused when the package is written, not on the board."""
    cfg = _example_config()
    del cfg["model"]["nc"]
    with pytest.raises(DeployPackageError, match=r"model metadata lacks \['nc'\]"):
        _package(tmp_path, cfg)


def test_valid_package_roundtrip(tmp_path: Path) -> None:
    pkg = _package(tmp_path, _example_config())
    data = validate_deploy_package(pkg)
    assert data["output"]["shape_normal"] == [1, 64, 64, 67]
    assert (pkg / "accelerator.bit").is_file() and (pkg / "accelerator.hwh").is_file()


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda c: c.pop("cpu_tail"), "missing key 'cpu_tail'"),
        (lambda c: c.update(extra=1), "unknown key"),
        (lambda c: c.update(schema_version=2), "schema_version 2"),
        (lambda c: c["input"].update(finn_datatype="INT8"), "UINT8"),
        (lambda c: c["output"].update(finn_datatype="FLOAT32"), "not a FINN integer"),
        (lambda c: c["output"].update(shape_folded=[1, 64, 64, 60, 1]), "does not fold"),
        (lambda c: c["output"].update(shape_packed=[1, 64, 64, 67, 4]), "ceil"),
        (lambda c: c["cpu_tail"].update(scale=[1.0] * 3), "cpu_tail.scale"),
        (lambda c: c["cpu_tail"].update(transpose=[0, 1, 1, 2]), "permutation"),
        (lambda c: c["model"].update(tile_size=256), "tile_size 256"),
        (lambda c: c.update(clock_mhz="fast"), "clock_mhz"),
    ],
)
def test_schema_violations(mutate, match: str) -> None:
    cfg = copy.deepcopy(_example_config())
    validate_driver_config(cfg)
    mutate(cfg)
    with pytest.raises(DeployPackageError, match=match):
        validate_driver_config(cfg)


def test_package_file_problems(tmp_path: Path) -> None:
    pkg = _package(tmp_path, _example_config())
    (pkg / "accelerator.hwh").unlink()
    with pytest.raises(DeployPackageError,
                       match=r"bitstream file 'accelerator.hwh' \(hwh\) missing"):
        validate_deploy_package(pkg)
    with pytest.raises(DeployPackageError, match="not found"):
        validate_deploy_package(tmp_path / "nothing")
    (pkg / DRIVER_CONFIG).write_text("{broken")
    with pytest.raises(DeployPackageError, match="not valid JSON"):
        validate_deploy_package(pkg)
    cfg = _example_config()
    cfg["runtime_weights"] = ["w0.dat"]
    (pkg / "accelerator.hwh").write_text("<hwh/>")
    (pkg / DRIVER_CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(DeployPackageError, match="runtime_weights/w0.dat"):
        validate_deploy_package(pkg)


@pytest.mark.finn
def test_driver_config_from_the_flow(flow_64, tmp_path: Path) -> None:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from sarvessel.hw.deploy import make_driver_config
    from sarvessel.hw.steps import parent_model_path

    cfg, result = flow_64
    df = result.model
    parent = ModelWrapper(str(parent_model_path(df)))
    dc = make_driver_config(
        df, parent, board="KV260_SOM", fpga_part=cfg.fpga_part, clock_mhz=cfg.clock_mhz,
        model_metadata={"name": "t", "tile_size": 64, "channels": 2, "stride": 8, "reg_max": 16,
                        "nc": 3},
    )
    validate_driver_config(dc)
    assert dc["input"]["shape_normal"] == [1, 64, 64, 2]
    assert dc["input"]["transpose_from_host"] == [0, 2, 3, 1]
    last = getCustomOp(df.graph.node[-1])
    assert dc["output"]["finn_datatype"] == last.get_output_datatype().name
    assert dc["output"]["shape_normal"] == list(last.get_normal_output_shape())
    assert len(dc["cpu_tail"]["scale"]) == dc["output"]["shape_normal"][-1]
    assert dc["cpu_tail"]["transpose"] == [0, 3, 1, 2]
    pkg = _package(tmp_path, dc)
    assert validate_deploy_package(pkg)["model"]["name"] == "t"
