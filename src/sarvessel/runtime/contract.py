"""The model contract: what a runtime needs to know about a model, one reader, one writer.

Two documents make the contract, and this module is the only code that reads or writes them:

* the **model sidecar** ``<name>.json`` beside ``<name>.onnx`` (also stored in the ONNX
  ``metadata_props`` under :data:`METADATA_KEY`; the sidecar wins): tile size, bands, stride,
  DFL bins, classes, decode thresholds and the optional second stage (:class:`ModelMetadata`);
* the **deploy package** the board loads: a folder with the bitstream, its ``.hwh`` and
  ``driver_config.json`` (schema below), whose ``model`` entry is the sidecar
  (:func:`read_deploy_package`). The board validates a package with this module alone; it never
  imports :mod:`sarvessel.hw`, which writes packages.

The defaults every tool shares (tile size, overlap, thresholds) are defined here once.

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
      "model": {"name": ..., "tile_size": 512, ...},   # the model's JSON sidecar
      "estimate": {"cycles_per_tile": ..., "tiles_per_s": ..., "scene_seconds": ...},
      # optional, read by the board runtime (sarvessel.runtime.board):
      "bitfile_sha256": "<hex>",          # checked before the bitstream is loaded
      "sim": {"model": "sim/accumulators.onnx",   # host tile -> the accelerator's accumulators
              "input_layout": "NHWC", "output_layout": "NHWC"},
      "selftest": {"inputs": "selftest/inputs.npy", "expected_acc": "selftest/expected_acc.npy"},
      "build": {"finn_plus": "1.6.1", "vivado": "2022.2", ...}
    }

Shapes follow FINN's driver conventions: ``shape_folded`` splits the innermost dimension into
(fold, elements per stream word) and ``shape_packed`` is the folded shape with the innermost
dimension in bytes, as finn-plus-driver's ``finnpy_to_packed_bytearray`` packs it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sarvessel.runtime.errors import DeployPackageError, ModelError
from sarvessel.runtime.preprocess import stretch_percentiles

#: Side of the square tiles the shipped models take (px), and the default for new models.
TILE_SIZE = 512
#: Overlap between neighbouring scene tiles (px): 640 m at 10 m pixels, longer than any ship,
#: so an object cut by one tile is whole in the next.
OVERLAP = 64
#: Default decode thresholds written into a new sidecar (score, NMS IoU).
CONF_THRESHOLD = 0.25
IOU_THRESHOLD = 0.5

#: Key of the JSON metadata in the ONNX ``metadata_props``.
METADATA_KEY = "sarvessel"
#: Smallest and largest ``input_scale`` a model may ask for.
INPUT_SCALE_RANGE: tuple[float, float] = (0.1, 10.0)
#: Anchors per output cell and axis a model may have (``subgrid``; it must divide the stride).
SUBGRIDS: tuple[int, ...] = (1, 2, 4)


def read_metadata(
    model_path: Path | str, *, props: Mapping[str, str] | None = None
) -> ModelMetadata:
    """Read the metadata of ``model_path`` (``.onnx``): the sidecar JSON, else ``metadata_props``.

    props: the model's metadata_props if already at hand (e.g. from a loaded session); the
    default (None) reads them from the file when there is no sidecar.
    Raises :class:`ModelError` naming the file when the model is missing, when neither source
    exists, or when the metadata is incomplete or malformed.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"{model_path}: model file not found")
    sidecar = sidecar_path(model_path)
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{sidecar}: cannot read model metadata JSON ({exc})") from exc
        return ModelMetadata.from_dict(data, source=sidecar)
    if props is None:
        props = _onnx_metadata_props(model_path)
    if METADATA_KEY not in props:
        raise ModelError(f"{model_path}: no metadata sidecar {sidecar.name} and no "
                         f"{METADATA_KEY!r} entry in the ONNX metadata_props")
    try:
        data = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise ModelError(f"{model_path}: bad JSON in metadata_props[{METADATA_KEY!r}]") from exc
    return ModelMetadata.from_dict(data, source=model_path)


def sidecar_path(model_path: Path | str) -> Path:
    """The metadata sidecar of a model: ``<name>.json`` next to ``<name>.onnx``."""
    return Path(model_path).with_suffix(".json")


@dataclass
class ModelMetadata:
    """What a runtime needs to know about an exported model (the shared network contract).

    name: model name. tile_size: side T of the square input tiles (px). channels: C, the number
    of input bands. bands: band names in channel order (``["VV_dB", "VH_dB"]`` or ``["grey"]``).
    stride: pixels per output cell. reg_max: DFL bins per box side. nc: number of classes.
    class_names: one per class. conf_threshold, iou_threshold: default decode thresholds.
    input_scale: factor images are resampled by before tiling (1: native pixels; sidecars
    without it are 1). subgrid: anchors per output cell and axis (1, 2 or 4; sidecars without
    it are 1): the graph packs ``subgrid**2`` anchors' predictions per cell into its channels
    (:func:`~sarvessel.runtime.post.decode.unpack_subgrid`). stretch: the (low, high) percentiles
    the model's 16-bit or float training images were brought to 8 bits with
    (``sarvessel train --stretch``), which ``sarvessel eval`` then applies by default; None (and
    sidecars without it): the model takes 8-bit images as they are. rescorer: the second-stage
    tree model that rescores each detection (:class:`~sarvessel.runtime.post.rescore.RescorerSpec`;
    None: none). bit_widths: quantisation
    widths by role (informative). extra: any other keys, kept as read.
    """

    name: str
    tile_size: int
    channels: int
    stride: int
    reg_max: int
    nc: int
    bands: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    conf_threshold: float = CONF_THRESHOLD
    iou_threshold: float = IOU_THRESHOLD
    input_scale: float = 1.0
    subgrid: int = 1
    stretch: list[float] | None = None
    rescorer: dict[str, Any] | None = None
    bit_widths: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("tile_size", "channels", "stride", "reg_max", "nc", "subgrid"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
            setattr(self, key, int(value))
        if self.tile_size % self.stride:
            raise ValueError(f"tile_size {self.tile_size} is not a multiple of stride "
                             f"{self.stride}")
        if not self.class_names:
            self.class_names = [str(i) for i in range(self.nc)]
        if len(self.class_names) != self.nc:
            raise ValueError(f"{len(self.class_names)} class_names for nc={self.nc}")
        if self.bands and len(self.bands) != self.channels:
            raise ValueError(f"{len(self.bands)} bands for channels={self.channels}")
        if not 0.0 < float(self.conf_threshold) < 1.0:
            raise ValueError(f"conf_threshold must be in (0, 1), got {self.conf_threshold}")
        if not 0.0 <= float(self.iou_threshold) <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {self.iou_threshold}")
        lo, hi = INPUT_SCALE_RANGE
        if not lo <= float(self.input_scale) <= hi:
            raise ValueError(f"input_scale must be in [{lo:g}, {hi:g}], got {self.input_scale}")
        if self.stretch is not None:
            try:
                self.stretch = list(stretch_percentiles(self.stretch))
            except ValueError as exc:
                raise ValueError(f"stretch must be percentiles: {exc}") from None
        if self.rescorer is not None:
            from sarvessel.runtime.post.rescore import (
                RescorerSpec,  # the spec validates its own keys
            )

            self.rescorer = RescorerSpec.from_dict(self.rescorer).to_dict()
        if self.subgrid not in SUBGRIDS or self.stride % self.subgrid:
            raise ValueError(f"subgrid must be one of {SUBGRIDS} and divide the stride "
                             f"{self.stride}, got {self.subgrid}")

    @property
    def out_channels(self) -> int:
        """Channels of the decoded head map (one anchor): ``4 * reg_max + nc``."""
        return 4 * self.reg_max + self.nc

    @property
    def graph_channels(self) -> int:
        """Channels of the graph's own output: ``subgrid**2 * out_channels``."""
        return self.subgrid ** 2 * self.out_channels

    @property
    def graph_size(self) -> int:
        """Side of the graph's own output map: ``tile_size // stride``."""
        return self.tile_size // self.stride

    @property
    def out_size(self) -> int:
        """Side of the head map on the anchor grid: ``subgrid * tile_size // stride``."""
        return self.subgrid * self.graph_size

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``extra`` keys merged at the top level)."""
        data = asdict(self)
        extra = data.pop("extra")
        return {**extra, **data}

    def to_json(self) -> str:
        """The JSON sidecar text."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def write_sidecar(self, model_path: Path | str) -> Path:
        """Write the sidecar ``<name>.json`` of ``model_path`` atomically; returns its path."""
        return write_sidecar(model_path, self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: Path | str = "<metadata>"
                  ) -> ModelMetadata:
        """Build from the JSON form; raises :class:`ModelError` naming ``source`` if unusable."""
        if not isinstance(data, Mapping):
            raise ModelError(f"{source}: model metadata must be a JSON object")
        required = ("name", "tile_size", "channels", "stride", "reg_max", "nc")
        missing = [k for k in required if k not in data]
        if missing:
            raise ModelError(f"{source}: model metadata lacks {missing}")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        try:
            return cls(**kwargs, extra=extra)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{source}: bad model metadata: {exc}") from exc


def write_sidecar(model_path: Path | str, metadata: ModelMetadata | Mapping[str, Any]) -> Path:
    """Write the sidecar of ``model_path`` (validated through :class:`ModelMetadata`) with a
    temporary file and a rename, so a reader never sees half a sidecar; returns its path.

    The one writer of sidecars: the export, the second-stage fit and the hardware flow call it.
    """
    meta = (metadata if isinstance(metadata, ModelMetadata)
            else ModelMetadata.from_dict(metadata, source=str(model_path)))
    path = sidecar_path(model_path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(meta.to_json())
    tmp.replace(path)
    return path


def _onnx_metadata_props(model_path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, read with onnxruntime (no onnx package needed)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(model_path), sess_options=opts,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise ModelError(f"{model_path}: onnxruntime cannot load the model ({exc})") from exc
    return dict(sess.get_modelmeta().custom_metadata_map)


# -- deploy package -------------------------------------------------------------------------

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
_OPTIONAL_KEYS = {"estimate": dict, "finn_settings": str, "bitfile_sha256": str, "sim": dict,
                  "selftest": dict, "build": dict}
_LAYOUTS = ("NHWC", "NCHW")
_IO_KEYS = ("finn_datatype", "layout", "shape_normal", "shape_folded", "shape_packed")


def read_deploy_package(path: Path | str, *, need_bitstream: bool = True) -> dict[str, Any]:
    """Check a deploy package folder; return its parsed ``driver_config.json``.

    Its ``model`` entry must be a valid sidecar (:class:`ModelMetadata`); the files it names
    (runtime weights, the simulator graph) must be there. need_bitstream: require the bitstream
    and its ``.hwh`` (the default); False accepts a simulator package written without Vivado.
    Raises :class:`DeployPackageError` naming the folder and the first problem found.
    """
    root = Path(path)
    if not root.is_dir():
        raise DeployPackageError(f"{root}: deploy package folder not found")
    cfg_path = root / DRIVER_CONFIG
    if not cfg_path.is_file():
        raise DeployPackageError(f"{root}: not a deploy package (no {DRIVER_CONFIG})")
    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DeployPackageError(f"{cfg_path}: not valid JSON: {exc}") from exc
    try:
        validate_driver_config(data)
    except DeployPackageError as exc:
        raise DeployPackageError(f"{cfg_path}: {exc}") from exc
    if Path(data["bitfile"]).stem != Path(data["hwh"]).stem:
        raise DeployPackageError(
            f"{root}: bitfile and hwh must share a name (PYNQ finds the .hwh beside the .bit)"
        )
    if need_bitstream:
        for key in ("bitfile", "hwh"):
            f = root / data[key]
            if not f.is_file() or f.stat().st_size == 0:
                raise DeployPackageError(f"{root}: bitstream file {data[key]!r} ({key}) missing "
                                         "or empty (a simulator-only package cannot drive the "
                                         "FPGA)")
    for w in data["runtime_weights"]:
        if not (root / RUNTIME_WEIGHTS_DIR / w).is_file():
            raise DeployPackageError(
                f"{root}: runtime weight file {RUNTIME_WEIGHTS_DIR}/{w} missing"
            )
    sim = data.get("sim")
    if sim is not None and not (root / sim["model"]).is_file():
        raise DeployPackageError(f"{root}: simulator model {sim['model']} missing")
    return data


#: The name the hardware flow has used for :func:`read_deploy_package`.
validate_deploy_package = read_deploy_package


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
    if model:
        try:
            ModelMetadata.from_dict(model, source="model")
        except ModelError as exc:
            raise DeployPackageError(str(exc)) from exc
    if not all(isinstance(w, str) for w in data["runtime_weights"]):
        raise DeployPackageError("runtime_weights must be a list of file names")
    for key, typ in _OPTIONAL_KEYS.items():
        if key in data and (not isinstance(data[key], typ) or isinstance(data[key], bool)):
            raise DeployPackageError(f"{key!r} has the wrong type ({type(data[key]).__name__})")
    perm = data["input"].get("transpose_from_host")
    if perm not in (None, [0, 2, 3, 1]):
        raise DeployPackageError("input.transpose_from_host must be [0, 2, 3, 1] (NCHW tiles to "
                                 f"NHWC) or null, got {perm}")
    sim = data.get("sim")
    if sim is not None:
        if not isinstance(sim.get("model"), str):
            raise DeployPackageError("sim.model must name the simulator's ONNX file")
        for key in ("input_layout", "output_layout"):
            if sim.get(key, "NHWC") not in _LAYOUTS:
                raise DeployPackageError(f"sim.{key} must be one of {_LAYOUTS}")
    sha = data.get("bitfile_sha256")
    if sha is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha):
        raise DeployPackageError("bitfile_sha256 must be 64 hex digits")
    est = data.get("estimate") or {}
    for key in ("cycles_per_tile", "tiles_per_s"):
        v = est.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
            raise DeployPackageError(f"estimate.{key} must be a positive number")


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
