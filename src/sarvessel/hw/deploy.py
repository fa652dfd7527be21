"""Writing the deploy package the board runtime loads to run the accelerator.

The package's format (``driver_config.json`` schema, file names) and its reader/validator are
the runtime's model contract, :mod:`sarvessel.runtime.contract`, so the board validates a
package without importing this host-side module. Here: :func:`make_driver_config` builds the
JSON from the flow's models (no Vivado needed) and :func:`write_deploy_package` assembles and
validates a folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sarvessel.runtime.contract import (
    BITFILE,
    DRIVER_CONFIG,
    HWH,
    RUNTIME_WEIGHTS_DIR,
    SCHEMA_VERSION,
    read_deploy_package,
    validate_deploy_package,
    validate_driver_config,
)
from sarvessel.runtime.io.outputs import write_json

__all__ = ["BITFILE", "DRIVER_CONFIG", "HWH", "RUNTIME_WEIGHTS_DIR", "SCHEMA_VERSION",
           "make_driver_config", "read_deploy_package", "validate_deploy_package",
           "validate_driver_config", "write_deploy_package"]

def make_driver_config(
    dataflow_model: Any,
    parent_model: Any,
    *,
    board: str,
    fpga_part: str,
    clock_mhz: float,
    model_metadata: dict[str, Any] | None = None,
    estimate: dict[str, Any] | None = None,
    runtime_weights: list[str] | None = None,
) -> dict[str, Any]:
    """Build ``driver_config.json`` from the folded dataflow model and its parent graph.

    ``dataflow_model`` is the specialised, folded partition (a qonnx ModelWrapper);
    ``parent_model`` the graph around it (input transpose, partition, CPU tail).
    """
    import numpy as np
    from finn.util.data_packing import finnpy_to_packed_bytearray
    from qonnx.custom_op.registry import getCustomOp

    from sarvessel.hw.verify import cpu_tail

    first = getCustomOp(dataflow_model.graph.node[0])
    last = getCustomOp(dataflow_model.graph.node[-1])

    def io(shape_normal: Any, shape_folded: Any, dt: Any) -> dict[str, Any]:
        packed = finnpy_to_packed_bytearray(
            np.zeros(shape_folded, dtype=np.float32), dt, reverse_endian=True, reverse_inner=True
        ).shape
        return {
            "finn_datatype": dt.name,
            "layout": "NHWC",
            "shape_normal": [int(v) for v in shape_normal],
            "shape_folded": [int(v) for v in shape_folded],
            "shape_packed": [int(v) for v in packed],
        }

    inp = io(first.get_normal_input_shape(), first.get_folded_input_shape(),
             first.get_input_datatype())
    first_sdp = next(
        i for i, n in enumerate(parent_model.graph.node)
        if n.op_type == "StreamingDataflowPartition"
    )
    head = [n for n in list(parent_model.graph.node)[:first_sdp] if n.op_type == "Transpose"]
    inp["transpose_from_host"] = (
        [int(v) for a in head[0].attribute if a.name == "perm" for v in a.ints] if head else None
    )
    out = io(last.get_normal_output_shape(), last.get_folded_output_shape(),
             last.get_output_datatype())
    tail = cpu_tail(parent_model, after=first_sdp)
    return {
        "schema_version": SCHEMA_VERSION,
        "board": board,
        "fpga_part": fpga_part,
        "clock_mhz": float(clock_mhz),
        "bitfile": BITFILE,
        "hwh": HWH,
        "host_layout": "NCHW",
        "input": inp,
        "output": out,
        "cpu_tail": {
            "transpose": tail.perm,
            "scale": [float(v) for v in np.ravel(tail.scale)],
            "bias": [float(v) for v in np.ravel(tail.bias)],
        },
        "runtime_weights": list(runtime_weights or []),
        "model": dict(model_metadata or {}),
        **({"estimate": estimate} if estimate else {}),
    }


def write_deploy_package(
    out_dir: Path,
    driver_config: dict[str, Any],
    *,
    bitfile: Path,
    hwh: Path,
    runtime_weights_dir: Path | None = None,
    finn_settings: Path | None = None,
) -> Path:
    """Assemble a deploy package in ``out_dir`` and validate it; return ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bitfile, out_dir / BITFILE)
    shutil.copyfile(hwh, out_dir / HWH)
    cfg = dict(driver_config)
    if runtime_weights_dir is not None and runtime_weights_dir.is_dir():
        dst = out_dir / RUNTIME_WEIGHTS_DIR
        shutil.copytree(runtime_weights_dir, dst, dirs_exist_ok=True)
        cfg["runtime_weights"] = sorted(p.name for p in dst.iterdir() if p.is_file())
    if finn_settings is not None and finn_settings.is_file():
        shutil.copyfile(finn_settings, out_dir / "finn_settings.json")
        cfg["finn_settings"] = "finn_settings.json"
    write_json(out_dir / DRIVER_CONFIG, cfg)
    validate_deploy_package(out_dir)
    return out_dir
