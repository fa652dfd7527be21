"""The integer-exact float graph ("intfloat"): the accelerator's integer network for onnxruntime.

The QCDQ export makes onnxruntime spend its time in QuantizeLinear/DequantizeLinear and
elementwise nodes. This export starts instead from the hardware graph, the FINN-streamlined
model that the accelerator is compiled from (integer weights, ``MultiThreshold``
requantisation, a float tail ``y = acc * scale + bias``; :func:`hardware_graph`), and writes it
as plain float32 ONNX that onnxruntime's fast float kernels run exactly:

- Weights and activations are their integer values in float32. Every partial sum of every conv
  stays an integer (or a multiple of a small power of two, with the bias below) under 2**24,
  so float32 convolution gives the exact accumulator whatever the summation order (checked
  per layer from the weights and the input range; the export refuses a graph where it fails).
- A layer's thresholds ``T[c, k]`` (``q = #{k : acc >= T[c, k]}``, the hardware's own
  comparison) become ``q = Clip(Floor((acc + beta_c) / d_c), 0, K)``: ``d_c`` and ``beta_c`` are
  fitted per channel with the largest margin (a small linear programme) and the formula is then
  checked in float32 for *every* integer accumulator the layer can produce, so it equals the
  thresholds by construction, not on test tiles. ``beta_c`` is the conv's bias, on a grid fine
  enough for the margin and coarse enough to keep the partial sums exact.
- A max-pool after a requantisation is moved before it (the requantisation is monotone, so
  ``max(q(a)) == q(max(a))``): the elementwise nodes then touch a quarter of the values.
- No Q/DQ nodes. The last conv's output is the accumulator ``acc`` (the integer stream the
  accelerator returns); the CPU tail ``acc * scale + bias`` comes only at the very end, so the
  one graph serves both the CPU fallback (output ``raw``) and a board simulator
  (:func:`accumulator_model` cuts the tail, :func:`tail_of` gives its scale and bias).

The runtime's ONNX backend runs the file unchanged: input float ``[B, C, T, T]`` carrying
0..255, output float32 ``[B, graph_channels, T/s, T/s]``, JSON sidecar beside it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sarvessel.quantize.export import ExportError, ExportFormat, ExportReport, _set_metadata_props
from sarvessel.runtime.contract import ModelMetadata, read_metadata

log = logging.getLogger(__name__)

__all__ = [
    "IntLayer",
    "RequantFit",
    "accumulator_model",
    "export_intfloat",
    "fit_requant",
    "hardware_graph",
    "parse_hardware_graph",
    "tail_of",
]

#: float32 represents every integer up to this exactly.
_EXACT = 2**24
#: Finest bias grid tried (2**-_MAX_FRACTION_BITS).
_MAX_FRACTION_BITS = 12
#: Names of the graph's tensors.
INPUT, OUTPUT, ACCUMULATOR = "x", "raw", "acc"


@dataclass
class IntLayer:
    """One conv of the hardware graph. weight: integer ``[Cout, Cin, kh, kw]``. stride,
    dilation, pads (top, left, bottom, right). thresholds: ``[Cout, K]`` integer thresholds of
    the requantisation after it (None: the last conv). pool: (kernel, stride) of a max-pool
    after the requantisation, or None. in_max: largest input value (255 for the image, K of
    the previous requantisation)."""

    weight: np.ndarray
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: tuple[int, int, int, int]
    thresholds: np.ndarray | None
    pool: tuple[int, int] | None
    in_max: int

    def acc_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Smallest and largest accumulator per output channel over inputs in [0, in_max]."""
        w = self.weight.reshape(len(self.weight), -1).astype(np.int64)
        return (np.minimum(w, 0).sum(1) * self.in_max, np.maximum(w, 0).sum(1) * self.in_max)


@dataclass
class RequantFit:
    """``q = clip(floor((acc + bias) / divisor), 0, levels)`` per channel, float32, equal to the
    thresholds for every reachable accumulator. margin: the smallest distance (accumulator
    units) of a fitted boundary from the nearest integer it must not cross (> 0).
    fraction_bits: the bias grid 2**-fraction_bits."""

    divisor: np.ndarray
    bias: np.ndarray
    levels: int
    margin: float
    fraction_bits: int


@dataclass
class IntFloatReport(ExportReport):
    """An :class:`ExportReport` with the per-layer requantisation fits."""

    layers: list[dict[str, Any]] = field(default_factory=list)


def export_intfloat(
    qonnx_path: Path | str, path: Path | str, *,
    metadata: ModelMetadata | Mapping[str, Any] | None = None, dynamic_batch: bool = True,
) -> IntFloatReport:
    """Write the integer-exact float graph of the cleaned QONNX model ``qonnx_path`` to
    ``path`` with its JSON sidecar.

    metadata: the contract metadata; the default (None) reads the QONNX file's sidecar.
    dynamic_batch: a symbolic batch dimension ``"batch"``; the default is True.
    Raises :class:`ExportError` if the hardware graph is not a plain conv chain or a layer
    cannot be made exact in float32.
    """
    import onnx

    qonnx_path, path = Path(qonnx_path), Path(path)
    t0 = time.perf_counter()
    meta = metadata if metadata is not None else read_metadata(qonnx_path)
    if not isinstance(meta, ModelMetadata):
        meta = ModelMetadata.from_dict(dict(meta))
    layers, scale, bias = parse_hardware_graph(hardware_graph(qonnx_path))
    proto, fits = build_intfloat(layers, scale, bias, channels=meta.channels,
                                 tile=meta.tile_size, dynamic_batch=dynamic_batch)
    data = meta.to_dict()
    data["graph"] = "intfloat"
    meta = ModelMetadata.from_dict(data)
    _set_metadata_props(proto, meta)
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    sidecar = meta.write_sidecar(path)
    dims = [[d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
            for vi in (proto.graph.input[0], proto.graph.output[0])]
    report = IntFloatReport(
        path=path, sidecar=sidecar, format=ExportFormat.INTFLOAT, input_shape=dims[0],
        output_shape=dims[1], op_counts=dict(Counter(n.op_type for n in proto.graph.node)),
        file_bytes=path.stat().st_size, seconds=time.perf_counter() - t0,
        metadata=meta.to_dict(),
        layers=[{"levels": f.levels, "margin": f.margin, "fraction_bits": f.fraction_bits}
                if f is not None else {"levels": None} for f in fits],
    )
    want = [meta.graph_channels, meta.graph_size, meta.graph_size]
    if list(report.output_shape[1:]) != want:
        raise ExportError(f"{path}: output shape {report.output_shape} is not [B, {want}]")
    log.info("exported %s (intfloat): %d layers, smallest requantisation margin %.3g, %.1f kB",
             path, len(layers), min(f.margin for f in fits if f is not None),
             report.file_bytes / 1e3)
    return report


def hardware_graph(qonnx_path: Path | str) -> Any:
    """The FINN-streamlined graph of ``qonnx_path`` (the accelerator's integer network:
    Im2Col + integer MatMul + MultiThreshold, then the float tail), built with the hardware
    flow's own steps (tidy-up, QONNX to FINN, streamline). Returns a qonnx ``ModelWrapper``."""
    from qonnx.core.modelwrapper import ModelWrapper

    from sarvessel.hw.config import HWConfig
    from sarvessel.hw.steps import step_qonnx_to_finn, step_streamline, step_tidy_up

    cfg = HWConfig(output_dir=Path(qonnx_path).parent)
    model = ModelWrapper(str(qonnx_path))
    for step in (step_tidy_up, step_qonnx_to_finn, step_streamline):
        model = step(model, cfg)
    return model


def parse_hardware_graph(model: Any) -> tuple[list[IntLayer], np.ndarray, np.ndarray]:
    """The conv layers of a streamlined plain chain and its tail ``(scale, bias)``, each
    ``[C]``. Raises :class:`ExportError` for any other structure."""
    from onnx import helper

    def attrs(node: Any) -> dict[str, Any]:
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    layers: list[IntLayer] = []
    pending: dict[str, Any] | None = None
    in_max, scale, bias = 255, None, None
    for node in model.graph.node:
        op = node.op_type
        if op == "Transpose":
            continue
        if op == "Im2Col":
            a = attrs(node)
            if a.get("depthwise", 0):
                raise ExportError("depthwise Im2Col is not supported by the intfloat export")
            pending = {"kernel": tuple(a["kernel_size"]), "stride": tuple(a["stride"]),
                       "dilation": tuple(a.get("dilations", (1, 1))),
                       "pads": tuple(a["pad_amount"])}
        elif op == "MatMul":
            w = model.get_initializer(node.input[1])
            if w is None or not np.array_equal(w, np.rint(w)):
                raise ExportError(f"MatMul {node.name} has no integer weight")
            geo = pending or {"kernel": (1, 1), "stride": (1, 1), "dilation": (1, 1),
                              "pads": (0, 0, 0, 0)}
            kh, kw = geo["kernel"]
            cout = w.shape[1]
            weight = w.reshape(kh, kw, -1, cout).transpose(3, 2, 0, 1).astype(np.float32)
            layers.append(IntLayer(weight, geo["stride"], geo["dilation"], geo["pads"], None,
                                   None, in_max))
            pending = None
        elif op == "MultiThreshold":
            t = model.get_initializer(node.input[1])
            a = attrs(node)
            if not layers or layers[-1].thresholds is not None or t is None:
                raise ExportError(f"MultiThreshold {node.name} does not follow a conv")
            if a.get("out_bias", 0.0) != 0.0 or a.get("out_scale", 1.0) != 1.0:
                raise ExportError(f"MultiThreshold {node.name} has an output scale or bias")
            if not np.array_equal(t, np.rint(t)) or np.any(np.diff(t, axis=1) < 0):
                raise ExportError(f"MultiThreshold {node.name}: thresholds not integer, sorted")
            layers[-1].thresholds = t.astype(np.int64)
            in_max = t.shape[1]
        elif op == "MaxPoolNHWC":
            a = attrs(node)
            k, s = tuple(a["kernel_shape"]), tuple(a["strides"])
            if k[0] != k[1] or s[0] != s[1] or any(a.get("pads", [0])):
                raise ExportError(f"MaxPoolNHWC {node.name}: only square unpadded pools")
            layers[-1].pool = (k[0], s[0])
        elif op == "Mul" and scale is None:
            scale = model.get_initializer(node.input[1])
        elif op == "Add" and bias is None:
            bias = model.get_initializer(node.input[1])
        else:
            raise ExportError(f"unexpected {op} node {node.name} in the hardware graph")
    if not layers or layers[-1].thresholds is not None or scale is None:
        raise ExportError("the hardware graph does not end in a conv and a float tail")
    cout = len(layers[-1].weight)
    scale = np.broadcast_to(np.asarray(scale, np.float32).reshape(-1), (cout,)).copy()
    bias = (np.zeros(cout, np.float32) if bias is None else
            np.broadcast_to(np.asarray(bias, np.float32).reshape(-1), (cout,)).copy())
    return layers, scale, bias


def fit_requant(thresholds: np.ndarray, lo: np.ndarray, hi: np.ndarray, *,
                fraction_bits: int) -> RequantFit:
    """Fit ``clip(floor((acc + bias) / divisor), 0, K)`` to the integer ``thresholds``
    ``[C, K]`` for every integer ``acc`` in ``[lo[c], hi[c]]``, then check it in float32 on
    all of them. fraction_bits: the finest bias grid the layer's exactness allows. Raises
    :class:`ExportError` if a channel has no exact fit."""
    from scipy.optimize import linprog

    c_out, levels = thresholds.shape
    divisor = np.zeros(c_out, np.float32)
    bias = np.zeros(c_out, np.float32)
    margin = np.inf
    k = np.arange(1, levels + 1, dtype=np.float64)
    for c in range(c_out):
        t = thresholds[c].astype(np.float64)
        reach = t <= hi[c]
        # boundary b_k = k*u - v (u = divisor, v = -bias): T_k - 1 + m <= b_k <= T_k - m for a
        # reachable threshold, b_k >= hi + m for one above the range; maximise m (<= 0.5)
        a_ub, b_ub = [], []
        for kk, tk, r in zip(k, t, reach, strict=True):
            if r:
                a_ub.append([kk, -1.0, 1.0])
                b_ub.append(tk)
                if tk - 1 >= lo[c]:
                    a_ub.append([-kk, 1.0, 1.0])
                    b_ub.append(-(tk - 1))
            else:
                a_ub.append([-kk, 1.0, 1.0])
                b_ub.append(-float(hi[c]))
        res = linprog([0.0, 0.0, -1.0], A_ub=np.array(a_ub), b_ub=np.array(b_ub),
                      bounds=[(1e-9, None), (None, None), (None, 0.5)], method="highs")
        if res.status != 0 or res.x[2] <= 1e-6:
            raise ExportError(f"requantisation channel {c}: no linear floor fits its "
                              f"thresholds (status {res.status})")
        u, v, m = res.x
        grid = 2.0 ** -fraction_bits
        bias[c] = np.float32(np.rint(v / grid) * grid)  # acc >= k*u - v  <=>  acc + v >= k*u
        divisor[c] = np.float32(u)
        margin = min(margin, m)
    fit = RequantFit(divisor=divisor, bias=bias, levels=levels, margin=float(margin),
                     fraction_bits=fraction_bits)
    _check_requant(fit, thresholds, lo, hi)
    return fit


def build_intfloat(
    layers: list[IntLayer], scale: np.ndarray, bias: np.ndarray, *, channels: int, tile: int,
    dynamic_batch: bool = True,
) -> tuple[Any, list[RequantFit | None]]:
    """The ONNX ``ModelProto`` of the integer-exact float graph and the requantisation fits
    (None for the last conv). Raises :class:`ExportError` where float32 is not exact."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, fits = [], [], []

    def const(arr: np.ndarray, name: str) -> str:
        inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    x = INPUT
    if layers[0].weight.shape[1] != channels:
        raise ExportError(f"the first conv takes {layers[0].weight.shape[1]} channels, the "
                          f"metadata says {channels}")
    for i, layer in enumerate(layers):
        lo, hi = layer.acc_range()
        worst = int(np.abs(layer.weight.reshape(len(layer.weight), -1)).sum(1).max()
                    * layer.in_max)
        if worst >= _EXACT:
            raise ExportError(f"layer {i}: partial sums up to {worst} are not exact in float32")
        conv_in = [x, const(layer.weight, f"w{i}")]
        fit = None
        if layer.thresholds is not None:
            bits = min(_MAX_FRACTION_BITS, int(np.floor(np.log2(_EXACT / (worst + hi.max() + 1
                                                                          + abs(lo.min()))))))
            fit = fit_requant(layer.thresholds, lo, hi, fraction_bits=bits)
            conv_in.append(const(fit.bias, f"b{i}"))
        kh, kw = layer.weight.shape[2:]
        t, left, b, r = layer.pads
        out = f"conv{i}" if layer.thresholds is not None else ACCUMULATOR
        nodes.append(helper.make_node(
            "Conv", conv_in, [out], name=f"conv{i}", kernel_shape=[kh, kw],
            strides=list(layer.stride), dilations=list(layer.dilation), pads=[t, left, b, r]))
        fits.append(fit)
        if fit is None:
            x = out
            continue
        if layer.pool is not None:
            k, s = layer.pool
            nodes.append(helper.make_node("MaxPool", [out], [f"pool{i}"], name=f"pool{i}",
                                          kernel_shape=[k, k], strides=[s, s]))
            out = f"pool{i}"
        nodes += [
            helper.make_node("Div", [out, const(fit.divisor.reshape(1, -1, 1, 1), f"d{i}")],
                             [f"scaled{i}"], name=f"requant{i}_div"),
            helper.make_node("Floor", [f"scaled{i}"], [f"floor{i}"], name=f"requant{i}_floor"),
            helper.make_node("Clip", [f"floor{i}", const(np.float32(0), f"lo{i}"),
                                      const(np.float32(fit.levels), f"hi{i}")], [f"q{i}"],
                             name=f"requant{i}_clip"),
        ]
        x = f"q{i}"
    if x != ACCUMULATOR:
        raise ExportError("the last layer has a requantisation; expected a bare conv")
    nodes += [
        helper.make_node("Mul", [ACCUMULATOR, const(scale.reshape(1, -1, 1, 1), "tail_scale")],
                         ["scaled_acc"], name="tail_scale"),
        helper.make_node("Add", ["scaled_acc", const(bias.reshape(1, -1, 1, 1), "tail_bias")],
                         [OUTPUT], name="tail_bias"),
    ]
    batch: int | str = "batch" if dynamic_batch else 1
    size = tile
    for layer in layers:
        kh = layer.weight.shape[2]
        eff = layer.dilation[0] * (kh - 1) + 1
        size = (size + layer.pads[0] + layer.pads[2] - eff) // layer.stride[0] + 1
        if layer.pool is not None:
            size = (size - layer.pool[0]) // layer.pool[1] + 1
    graph = helper.make_graph(
        nodes, "sarvessel_intfloat",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [batch, channels, tile, tile])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT,
                                       [batch, len(scale), size, size])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="sarvessel.quantize.intfloat")
    model.ir_version = 8
    return model, fits


def accumulator_model(path: Path | str) -> Any:
    """The tail-less form of an intfloat graph (a ``ModelProto``): the same nodes up to the
    last conv, whose output ``acc`` ``[B, C, T/s, T/s]`` holds the accelerator's integer
    accumulators in float32. What a board simulator runs; :func:`tail_of` gives the tail."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    graph = model.graph
    out = graph.output[0]
    dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    keep = [n for n in graph.node if not n.name.startswith("tail_")]
    del graph.node[:]
    graph.node.extend(keep)
    names = {"tail_scale", "tail_bias"}
    inits = [i for i in graph.initializer if i.name not in names]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(ACCUMULATOR, TensorProto.FLOAT, dims))
    return model


def tail_of(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """The CPU tail of an intfloat graph: ``(scale, bias)``, each float32 ``[C]``, with
    ``raw = acc * scale[c] + bias[c]``."""
    import onnx
    from onnx import numpy_helper

    inits = {i.name: i for i in onnx.load(str(path)).graph.initializer}
    if "tail_scale" not in inits:
        raise ExportError(f"{path} is not an intfloat graph (no tail_scale)")
    return (numpy_helper.to_array(inits["tail_scale"]).reshape(-1),
            numpy_helper.to_array(inits["tail_bias"]).reshape(-1))


# --- helpers -------------------------------------------------------------------------------


def _check_requant(fit: RequantFit, thresholds: np.ndarray, lo: np.ndarray, hi: np.ndarray
                   ) -> None:
    """Evaluate the fitted formula as onnxruntime does (float32 add inside the conv, float32
    Div, Floor, Clip) for every integer accumulator in ``[lo, hi]``; raise on any difference
    from the threshold count."""
    for c in range(len(thresholds)):
        acc = np.arange(lo[c], hi[c] + 1, dtype=np.int64)
        want = np.searchsorted(thresholds[c], acc, side="right")
        y = acc.astype(np.float32) + fit.bias[c]
        if not np.array_equal(y.astype(np.float64), acc + np.float64(fit.bias[c])):
            raise ExportError(f"requantisation channel {c}: accumulator + bias is not exact")
        got = np.clip(np.floor(y / fit.divisor[c]), 0, fit.levels)
        bad = np.flatnonzero(got != want)
        if bad.size:
            raise ExportError(f"requantisation channel {c}: {bad.size} accumulators differ "
                              f"from the thresholds (first {acc[bad[0]]})")

