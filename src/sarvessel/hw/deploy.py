"""The deploy package: what the board runtime loads to run the accelerator.

A deploy package is one folder::

    <package>/
      accelerator.bit        # bitstream (Vivado), required
      accelerator.hwh        # hardware handoff beside it (PYNQ finds it by name), required
      driver_config.json     # this schema, required
      runtime_weights/       # optional: runtime-writable weight files named in the config
      finn_settings.json     # optional: finn-plus-driver settings.json from the build

``driver_config.json`` (``schema_version`` 1)::

    {
      "schema_version": 1,
      "board": "KV260_SOM", "fpga_part": "xck26-sfvc784-2LV-c", "clock_mhz": 200.0,
      "bitfile": "accelerator.bit", "hwh": "accelerator.hwh",
      "host_layout": "NCHW",           # layout of the runtime's uint8 tiles
      "input":  {"finn_datatype": "UINT8", "layout": "NHWC",
                 "transpose_from_host": [0, 2, 3, 1],
                 "shape_normal": [1, 512, 512, 2], "shape_folded": [1, 512, 512, 2, 1],
                 "shape_packed": [1, 512, 512, 2, 1]},
      "output": {"finn_datatype": "INT24", "layout": "NHWC",
                 "shape_normal": [1, 64, 64, 67], "shape_folded": [1, 64, 64, 67, 1],
                 "shape_packed": [1, 64, 64, 67, 3]},
      "cpu_tail": {"transpose": [0, 3, 1, 2],          # NHWC -> NCHW, or null
                   "scale": [67 floats], "bias": [67 floats]},   # per channel of the
                                                    # transposed result: y = acc * scale + bias
      "runtime_weights": ["MVAU_hls_0.dat", ...],      # files in runtime_weights/
      "model": {"name": ..., "tile_size": 512, "channels": 2, "stride": 8, "reg_max": 16,
                "nc": 3, ...},                          # the model's JSON sidecar
      "estimate": {"tiles_per_s": ..., "scene_seconds": ...}   # optional
    }

Shapes follow FINN's driver conventions: ``shape_folded`` splits the innermost dimension into
(fold, elements per stream word) and ``shape_packed`` is the folded shape with the innermost
dimension in bytes, as ``finnpy_to_packed_bytearray`` packs it. The raw output after the CPU
tail is the contract's float ``[B, subgrid**2 * (4*reg_max + nc), T/s, T/s]`` (``subgrid`` 1 for
most models), which the runtime unpacks onto the anchor grid as for the ONNX graph.

:func:`make_driver_config` builds the JSON from the flow's models (no Vivado needed);
:func:`validate_deploy_package` checks a folder before the board runtime loads it.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

from sarvessel.hw.errors import DeployPackageError

#: Current schema version of ``driver_config.json``.
SCHEMA_VERSION = 1
#: File names inside a deploy package.
BITFILE, HWH, DRIVER_CONFIG, RUNTIME_WEIGHTS_DIR = (
    "accelerator.bit",
    "accelerator.hwh",
    "driver_config.json",
    "runtime_weights",
)

_DTYPE_RE = re.compile(r"^(UINT|INT)([1-9][0-9]?)$|^BIPOLAR$|^BINARY$")
_TOP_KEYS = {
    "schema_version": int,
    "board": str,
    "fpga_part": str,
    "clock_mhz": (int, float),
    "bitfile": str,
    "hwh": str,
    "host_layout": str,
    "input": dict,
    "output": dict,
    "cpu_tail": dict,
    "runtime_weights": list,
    "model": dict,
}
_OPTIONAL_KEYS = {"estimate": dict, "finn_settings": str}
_IO_KEYS = ("finn_datatype", "layout", "shape_normal", "shape_folded", "shape_packed")


def validate_deploy_package(path: Path | str) -> dict[str, Any]:
    """Check a deploy package folder; return its parsed ``driver_config.json``.

    Raises :class:`DeployPackageError` naming the folder and the first problem found.
    """
    root = Path(path)
    if not root.is_dir():
        raise DeployPackageError(f"{root}: deploy package folder not found")
    cfg_path = root / DRIVER_CONFIG
    if not cfg_path.is_file():
        raise DeployPackageError(f"{root}: missing {DRIVER_CONFIG}")
    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DeployPackageError(f"{cfg_path}: not valid JSON: {exc}") from exc
    try:
        validate_driver_config(data)
    except DeployPackageError as exc:
        raise DeployPackageError(f"{cfg_path}: {exc}") from exc
    for key in ("bitfile", "hwh"):
        f = root / data[key]
        if not f.is_file() or f.stat().st_size == 0:
            raise DeployPackageError(f"{root}: {key} {data[key]!r} missing or empty")
    if Path(data["bitfile"]).stem != Path(data["hwh"]).stem:
        raise DeployPackageError(
            f"{root}: bitfile and hwh must share a name (PYNQ finds the .hwh beside the .bit)"
        )
    for w in data["runtime_weights"]:
        if not (root / RUNTIME_WEIGHTS_DIR / w).is_file():
            raise DeployPackageError(
                f"{root}: runtime weight file {RUNTIME_WEIGHTS_DIR}/{w} missing"
            )
    return data


def validate_driver_config(data: Any) -> None:
    """Check the ``driver_config.json`` mapping against the schema (no file checks)."""
    if not isinstance(data, dict):
        raise DeployPackageError("driver config must be a JSON object")
    for key, typ in _TOP_KEYS.items():
        if key not in data:
            raise DeployPackageError(f"missing key {key!r}")
        if not isinstance(data[key], typ) or isinstance(data[key], bool):
            raise DeployPackageError(f"{key!r} has the wrong type ({type(data[key]).__name__})")
    unknown = set(data) - set(_TOP_KEYS) - set(_OPTIONAL_KEYS)
    if unknown:
        raise DeployPackageError(f"unknown key(s) {sorted(unknown)}")
    if data["schema_version"] != SCHEMA_VERSION:
        raise DeployPackageError(
            f"schema_version {data['schema_version']} not supported (expected {SCHEMA_VERSION})"
        )
    if data["clock_mhz"] <= 0:
        raise DeployPackageError("clock_mhz must be positive")
    for side in ("input", "output"):
        _validate_io(side, data[side])
    if data["input"].get("finn_datatype") != "UINT8":
        raise DeployPackageError("input finn_datatype must be UINT8 (the runtime's tiles)")
    tail = data["cpu_tail"]
    for key in ("transpose", "scale", "bias"):
        if key not in tail:
            raise DeployPackageError(f"cpu_tail misses {key!r}")
    channels = data["output"]["shape_normal"][-1]
    for key in ("scale", "bias"):
        v = tail[key]
        if not isinstance(v, list) or len(v) not in (1, channels) or not all(
            isinstance(x, (int, float)) and math.isfinite(x) for x in v
        ):
            raise DeployPackageError(
                f"cpu_tail.{key} must be 1 or {channels} finite numbers"
            )
    if tail["transpose"] is not None and sorted(tail["transpose"]) != list(range(4)):
        raise DeployPackageError("cpu_tail.transpose must be a permutation of 0..3 or null")
    model = data["model"]
    if "tile_size" in model:
        t = data["input"]["shape_normal"]
        if model["tile_size"] not in (t[1], t[2]):
            raise DeployPackageError(
                f"model tile_size {model['tile_size']} does not match input shape {t}"
            )
    if not all(isinstance(w, str) for w in data["runtime_weights"]):
        raise DeployPackageError("runtime_weights must be a list of file names")


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
    (out_dir / DRIVER_CONFIG).write_text(json.dumps(cfg, indent=2))
    validate_deploy_package(out_dir)
    return out_dir


def _validate_io(side: str, io: Any) -> None:
    for key in _IO_KEYS:
        if key not in io:
            raise DeployPackageError(f"{side} misses {key!r}")
    if not isinstance(io["finn_datatype"], str) or not _DTYPE_RE.match(io["finn_datatype"]):
        raise DeployPackageError(f"{side}.finn_datatype {io['finn_datatype']!r} is not a FINN "
                                 "integer datatype")
    if io["layout"] != "NHWC":
        raise DeployPackageError(f"{side}.layout must be NHWC, got {io['layout']!r}")
    shapes = {}
    for key in ("shape_normal", "shape_folded", "shape_packed"):
        v = io[key]
        if not isinstance(v, list) or not v or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in v
        ):
            raise DeployPackageError(f"{side}.{key} must be a list of positive integers")
        shapes[key] = v
    n, f, p = shapes["shape_normal"], shapes["shape_folded"], shapes["shape_packed"]
    if len(n) != 4:
        raise DeployPackageError(f"{side}.shape_normal must be [1, H, W, C], got {n}")
    if len(f) != len(n) + 1 or f[:-2] != n[:-1] or f[-2] * f[-1] != n[-1]:
        raise DeployPackageError(f"{side}.shape_folded {f} does not fold shape_normal {n}")
    if len(p) != len(f) or p[:-1] != f[:-1]:
        raise DeployPackageError(f"{side}.shape_packed {p} does not match shape_folded {f}")
    bits = int(_DTYPE_RE.match(io["finn_datatype"]).group(2) or 1)
    if p[-1] != math.ceil(f[-1] * bits / 8):
        raise DeployPackageError(
            f"{side}.shape_packed innermost {p[-1]} bytes != ceil({f[-1]} x {bits} bit / 8)"
        )
