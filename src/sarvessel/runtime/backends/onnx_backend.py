"""The CPU backend: an exported ONNX network run by onnxruntime, decoded by
:func:`sarvessel.runtime.decode.decode`.

The model file is the QCDQ export of the Brevitas network (:mod:`sarvessel.quantize.export`):
its graph input is float but carries the integer values 0..255 of the preprocessed tiles (there
is no input quantizer, NOTES §5), so :meth:`OnnxBackend.detect` casts the uint8 batch to the
graph's input type, runs the graph and decodes the raw head map ``[B, 4*reg_max + nc, H, W]``.

Everything the backend needs to know about the model (tile size, channels, stride, reg_max,
classes, thresholds) comes from :class:`ModelMetadata`, stored as a JSON sidecar
``<name>.json`` next to ``<name>.onnx`` and also in the ONNX ``metadata_props`` under the key
:data:`METADATA_KEY`; the sidecar wins when both exist.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sarvessel.runtime.decode import decode, unpack_subgrid
from sarvessel.runtime.detections import Detections
from sarvessel.runtime.errors import ModelError
from sarvessel.runtime.length import measure_lengths
from sarvessel.runtime.preprocess import stretch_percentiles
from sarvessel.runtime.rescore import Rescorer, RescorerSpec

log = logging.getLogger(__name__)

#: Key of the JSON metadata in the ONNX ``metadata_props``.
METADATA_KEY = "sarvessel"

#: Smallest and largest ``input_scale`` a model may ask for.
INPUT_SCALE_RANGE: tuple[float, float] = (0.1, 10.0)
#: Anchors per output cell and axis a model may have (``subgrid``; it must divide the stride).
SUBGRIDS: tuple[int, ...] = (1, 2, 4)

#: ONNX input element types and the numpy dtype a uint8 batch is cast to.
_ORT_INPUT_DTYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
}


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
    (:func:`~sarvessel.runtime.decode.unpack_subgrid`). stretch: the (low, high) percentiles
    the model's 16-bit or float training images were brought to 8 bits with
    (``sarvessel train --stretch``), which ``sarvessel eval`` then applies by default; None (and
    sidecars without it): the model takes 8-bit images as they are. rescorer: the second-stage
    tree model that rescores each detection (:class:`~sarvessel.runtime.rescore.RescorerSpec`;
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
    conf_threshold: float = 0.25
    iou_threshold: float = 0.5
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
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def write_sidecar(self, model_path: Path | str) -> Path:
        """Write the sidecar ``<name>.json`` of ``model_path``; returns its path."""
        path = sidecar_path(model_path)
        path.write_text(self.to_json())
        return path

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


class OnnxBackend:
    """Run an exported model with onnxruntime on the CPU and decode its raw output.

    model_path: the ``.onnx`` file; its metadata comes from the sidecar JSON or metadata_props
    (:func:`read_metadata`). threads: onnxruntime intra-op threads; the default (None) lets
    onnxruntime use one per physical core. conf_threshold, iou_threshold: override the
    metadata's decode thresholds. max_det: most detections per tile; the default is 300.
    providers: onnxruntime execution providers; the default is the CPU provider.

    Raises :class:`ModelError` for a missing file or metadata, or when the graph's input or
    output shape disagrees with the metadata.
    """

    name = "onnx"

    def __init__(
        self,
        model_path: Path | str,
        *,
        threads: int | None = None,
        conf_threshold: float | None = None,
        iou_threshold: float | None = None,
        max_det: int = 300,
        providers: Sequence[str] | None = None,
        rescore: bool = True,
    ) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelError(f"{self.model_path}: model file not found")
        self.session = _session(self.model_path, threads=threads, providers=providers)
        self.metadata = read_metadata(
            self.model_path, props=self.session.get_modelmeta().custom_metadata_map)
        self.channels = self.metadata.channels
        self.tile_size = self.metadata.tile_size
        self.conf_threshold = float(
            self.metadata.conf_threshold if conf_threshold is None else conf_threshold)
        self.iou_threshold = float(
            self.metadata.iou_threshold if iou_threshold is None else iou_threshold)
        if not 0.0 < self.conf_threshold < 1.0:
            raise ValueError(f"conf_threshold must be in (0, 1), got {self.conf_threshold}")
        self.max_det = max_det
        #: The second-stage rescorer the sidecar names (None: none, or ``rescore=False``).
        self.rescorer: Rescorer | None = None
        if rescore and self.metadata.rescorer is not None:
            self.rescorer = Rescorer(RescorerSpec.from_dict(self.metadata.rescorer),
                                     self.model_path.parent)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{self.model_path}: expected one graph input and one output, got "
                             f"{len(inputs)} and {len(outputs)}")
        self._input_name = inputs[0].name
        if inputs[0].type not in _ORT_INPUT_DTYPES:
            raise ModelError(f"{self.model_path}: unsupported graph input type {inputs[0].type}")
        self._input_dtype = _ORT_INPUT_DTYPES[inputs[0].type]
        shape = list(inputs[0].shape)
        want = [None, self.channels, self.tile_size, self.tile_size]
        if len(shape) != 4 or any(isinstance(s, int) and w is not None and s != w
                                  for s, w in zip(shape, want, strict=True)):
            raise ModelError(f"{self.model_path}: graph input shape {shape} does not match the "
                             f"metadata (channels={self.channels}, tile_size={self.tile_size})")
        #: Largest batch the graph takes in one run (1 for a fixed-batch export).
        self.max_batch: int | None = shape[0] if isinstance(shape[0], int) else None
        out_shape = list(outputs[0].shape)
        m = self.metadata
        want_out = [None, m.graph_channels, m.graph_size, m.graph_size]
        if len(out_shape) != 4 or any(isinstance(s, int) and w is not None and s != w
                                      for s, w in zip(out_shape, want_out, strict=True)):
            raise ModelError(f"{self.model_path}: graph output shape {out_shape} does not match "
                             f"the metadata ([B, {m.subgrid ** 2}*(4*{m.reg_max}+{m.nc}), "
                             f"{m.graph_size}, {m.graph_size}])")
        #: Seconds spent in onnxruntime and in decoding since construction, and tiles seen.
        self.seconds_infer = 0.0
        self.seconds_decode = 0.0
        self.tiles = 0
        self._fingerprint: str | None = None
        log.info("loaded %s (%s): tile %d, %d channels, stride %d, %d classes",
                 self.model_path, m.name, m.tile_size, m.channels, m.stride, m.nc)

    @property
    def fingerprint(self) -> str:
        """The model's bytes (graph and sidecar, SHA-256) and the decode settings: a resumed
        scene reuses finished rows only from the same model run the same way."""
        if self._fingerprint is None:
            h = hashlib.sha256(self.model_path.read_bytes())
            sidecar = sidecar_path(self.model_path)
            if sidecar.is_file():
                h.update(sidecar.read_bytes())
            if self.rescorer is not None:
                for path in self.rescorer.files:
                    h.update(path.read_bytes())
            self._fingerprint = (f"onnx:{h.hexdigest()[:32]}:conf={self.conf_threshold!r}:"
                                 f"iou={self.iou_threshold!r}:max_det={self.max_det}")
        return self._fingerprint

    def detect(self, batch: np.ndarray) -> list[Detections]:
        """Detect in ``batch`` (``uint8 [B, C, tile_size, tile_size]``); one result per tile.

        Boxes are in tile pixel coordinates (see :func:`~sarvessel.runtime.decode.decode`).
        """
        return self.decode_raw(self.infer(batch), batch)

    def decode_raw(self, raw: np.ndarray, batch: np.ndarray) -> list[Detections]:
        """Decode the raw head map ``raw`` of ``batch`` with this backend's thresholds (and, for
        scene models, measure vessel lengths on the tiles' VV band)."""
        t0 = time.perf_counter()
        m = self.metadata
        conf = self.conf_threshold
        if self.rescorer is not None:  # the rescorer sees every box down to its pre_conf
            conf = min(conf, self.rescorer.spec.pre_conf)
        dets = decode(raw, stride=m.stride, reg_max=m.reg_max, subgrid=m.subgrid,
                      conf_threshold=conf, iou_threshold=self.iou_threshold,
                      max_det=self.max_det)
        if self.rescorer is not None:
            dets = self.rescorer.apply(batch, dets, conf_threshold=self.conf_threshold,
                                       max_det=self.max_det)
        if "VV_dB" in m.bands:  # scene models: length from the image, not the (>= 16 px) box
            vv = list(m.bands).index("VV_dB")
            for tile, d in zip(batch, dets, strict=True):
                if len(d):
                    d.lengths_px = measure_lengths(tile[vv], d)
        self.seconds_decode += time.perf_counter() - t0
        return dets

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The raw head map of ``batch`` on the anchor grid, ``float32 [B, 4*reg_max + nc,
        subgrid*T/stride, subgrid*T/stride]`` (the graph output unpacked by
        :func:`~sarvessel.runtime.decode.unpack_subgrid`)."""
        batch = np.asarray(batch)
        if batch.ndim == 3:
            batch = batch[None]
        want = (self.channels, self.tile_size, self.tile_size)
        if batch.ndim != 4 or batch.shape[1:] != want:
            raise ModelError(f"{self.model_path}: batch shape {batch.shape} does not fit the "
                             f"model (expects [B, {want[0]}, {want[1]}, {want[2]}])")
        if batch.dtype != np.uint8:
            raise ModelError(f"{self.model_path}: batch must be uint8 (the preprocess output), "
                             f"got {batch.dtype}")
        x = batch.astype(self._input_dtype)
        m = self.metadata
        if len(x) == 0:
            return np.zeros((0, m.out_channels, m.out_size, m.out_size), np.float32)
        t0 = time.perf_counter()
        step = self.max_batch or len(x)
        parts = [self.session.run(None, {self._input_name: x[i:i + step]})[0]
                 for i in range(0, len(x), step)]
        self.seconds_infer += time.perf_counter() - t0
        self.tiles += len(x)
        raw = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return unpack_subgrid(np.asarray(raw, np.float32), m.subgrid)


def _session(
    model_path: Path, *, threads: int | None = None, providers: Sequence[str] | None = None,
    optimize: bool = True,
) -> Any:
    """An onnxruntime session: sequential, one inter-op thread, full graph optimisation."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3  # silences "initializer appears in graph inputs" of old exports
    try:
        return ort.InferenceSession(str(model_path), sess_options=opts,
                                    providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise ModelError(f"{model_path}: onnxruntime cannot load the model ({exc})") from exc


def _onnx_metadata_props(model_path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, read with onnxruntime (no onnx package needed)."""
    sess = _session(model_path, optimize=False)
    return dict(sess.get_modelmeta().custom_metadata_map)
