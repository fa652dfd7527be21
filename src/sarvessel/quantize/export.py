"""Export of the Brevitas network: QONNX for FINN, QCDQ ONNX for onnxruntime.

One function per export format, each returning an :class:`ExportReport`:

- :func:`export_qonnx`: Brevitas ``export_qonnx`` (TorchScript exporter, ``dynamo=False``,
  docs/references.md §6), then ``qonnx.util.cleanup``; the graph input is annotated UINT8 (the
  first conv receives the integer image 0..255, there is no input quantizer:
  docs/references.md §5). Batch 1, as FINN wants.
- :func:`export_qcdq`: Brevitas ``export_onnx_qcdq`` for onnxruntime: weights and activations as
  QuantizeLinear → Clip → DequantizeLinear with float BatchNorm in between, so onnxruntime runs
  every conv in float. Initializers are taken out of the graph inputs (so onnxruntime may fold
  constants) and the batch dimension is made dynamic.
- :func:`export_qcdq_int8`: the same network rewritten so onnxruntime can fuse integer convs
  (QLinearConv): each BatchNorm is folded into its conv's per-channel weight scale and an int32
  bias, the constant weight Clips are applied to the stored int8 weights, the image input gets an
  exact ``QuantizeLinear(scale 1, uint8)``, and a 4-bit activation stays an int8/uint8
  QuantizeLinear/DequantizeLinear pair with its range enforced by an integer Clip between them.
  The int32 bias rounds the BatchNorm shift to the accumulator's LSB, so this variant is not
  bit-exact with Brevitas (see :mod:`sarvessel.quantize.equivalence`).

Each export cuts the graph after the head's last conv (the network's ``forward`` returns the raw
map ``[B, subgrid**2 * (4*reg_max + nc), T/s, T/s]``) and writes the metadata of the network
contract as a JSON sidecar ``<name>.json`` and in the ONNX ``metadata_props`` (key ``sarvessel``).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from sarvessel.runtime.contract import METADATA_KEY, ModelMetadata
from sarvessel.runtime.errors import SarvesselError

log = logging.getLogger(__name__)

__all__ = [
    "ExportError",
    "ExportFormat",
    "ExportReport",
    "build_metadata",
    "export_qcdq",
    "export_qcdq_int8",
    "export_qonnx",
]


class ExportError(SarvesselError):
    """A network cannot be exported (export failure, unexpected graph, bad metadata)."""


class ExportFormat(str, Enum):
    """The exported ONNX flavours."""

    #: QONNX (Quant nodes), cleaned, UINT8 input: the FINN compiler's input.
    QONNX = "qonnx"
    #: Brevitas QCDQ as exported (float convs and BatchNorm in onnxruntime).
    QCDQ = "qcdq"
    #: QCDQ rewritten for onnxruntime's integer conv fusion (BN folded, int32 bias).
    QCDQ_INT8 = "qcdq-int8"
    #: The hardware graph as integer-exact float32 ONNX (:mod:`sarvessel.quantize.intfloat`).
    INTFLOAT = "intfloat"


@dataclass
class ExportReport:
    """What an export wrote.

    path: the ONNX file. sidecar: its metadata JSON. format: the flavour. input_shape,
    output_shape: graph shapes (``"batch"`` for a dynamic batch). op_counts: node count per op
    type. file_bytes: size of the ONNX file. seconds: wall time of the export.
    """

    path: Path
    sidecar: Path
    format: ExportFormat
    input_shape: list[int | str]
    output_shape: list[int | str]
    op_counts: dict[str, int] = field(default_factory=dict)
    file_bytes: int = 0
    seconds: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)


def export_qonnx(
    model: Any, path: Path | str, *, tile: int, channels: int,
    metadata: ModelMetadata | Mapping[str, Any] | None = None,
) -> ExportReport:
    """Export ``model`` (a Brevitas ``nn.Module``) to a cleaned QONNX file for FINN.

    tile: side T of the input tile (px). channels: input channels C. The graph input is
    ``[1, C, T, T]``, annotated UINT8. metadata: the contract metadata; the default (None) takes
    it from ``model.cfg.sidecar()`` (:class:`sarvessel.model.config.ModelConfig`).
    """
    from brevitas.export import export_qonnx as brevitas_export_qonnx
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    path = Path(path)
    meta = build_metadata(model, tile=tile, channels=channels, metadata=metadata)
    t0 = time.perf_counter()
    wrapped, x = _prepare(model, tile=tile, channels=channels)
    try:
        brevitas_export_qonnx(wrapped, x, export_path=str(path), dynamo=False)
    except Exception as exc:  # torch.onnx raises many types; name the stage and keep the cause
        raise ExportError(f"{path}: Brevitas QONNX export failed ({exc})") from exc
    mw = cleanup_model(ModelWrapper(str(path)))
    mw.set_tensor_datatype(mw.graph.input[0].name, DataType["UINT8"])
    _set_metadata_props(mw.model, meta)
    mw.save(str(path))
    return _finish(path, meta, ExportFormat.QONNX, t0)


def export_qcdq(
    model: Any, path: Path | str, *, tile: int, channels: int,
    metadata: ModelMetadata | Mapping[str, Any] | None = None, dynamic_batch: bool = True,
) -> ExportReport:
    """Export ``model`` to QCDQ ONNX (Brevitas ``export_onnx_qcdq``) for onnxruntime.

    tile, channels, metadata: as :func:`export_qonnx`. dynamic_batch: make the batch dimension
    symbolic (``"batch"``); the default is True.
    """
    import onnx

    path = Path(path)
    meta = build_metadata(model, tile=tile, channels=channels, metadata=metadata)
    t0 = time.perf_counter()
    model_proto = _brevitas_qcdq(model, path, tile=tile, channels=channels)
    _tidy(model_proto, dynamic_batch=dynamic_batch)
    _set_metadata_props(model_proto, meta)
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, str(path))
    return _finish(path, meta, ExportFormat.QCDQ, t0)


def export_qcdq_int8(
    model: Any, path: Path | str, *, tile: int, channels: int,
    metadata: ModelMetadata | Mapping[str, Any] | None = None, dynamic_batch: bool = True,
) -> ExportReport:
    """Export ``model`` to QCDQ ONNX rewritten for onnxruntime's integer conv fusion.

    See the module docstring for the rewrite; arguments as :func:`export_qcdq`.
    """
    import onnx

    path = Path(path)
    meta = build_metadata(model, tile=tile, channels=channels, metadata=metadata)
    t0 = time.perf_counter()
    model_proto = _brevitas_qcdq(model, path, tile=tile, channels=channels)
    _tidy(model_proto, dynamic_batch=dynamic_batch)
    _IntegerRewrite(model_proto).run()
    _set_metadata_props(model_proto, meta)
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, str(path))
    return _finish(path, meta, ExportFormat.QCDQ_INT8, t0)


def build_metadata(
    model: Any, *, tile: int, channels: int,
    metadata: ModelMetadata | Mapping[str, Any] | None = None,
) -> ModelMetadata:
    """The contract metadata of an export: ``metadata`` if given, else ``model.cfg.sidecar()``.

    ``tile`` and ``channels`` must agree with it; raises :class:`ExportError` otherwise.
    """
    if metadata is None:
        cfg = getattr(model, "cfg", None)
        if cfg is None or not hasattr(cfg, "sidecar"):
            raise ExportError("no metadata given and the model has no cfg.sidecar()")
        metadata = cfg.sidecar()
    if not isinstance(metadata, ModelMetadata):
        data = dict(metadata)
        data["tile_size"] = tile
        metadata = ModelMetadata.from_dict(data)
    if metadata.tile_size != tile or metadata.channels != channels:
        raise ExportError(f"metadata says tile {metadata.tile_size}, channels "
                          f"{metadata.channels}; export asked for tile {tile}, channels {channels}")
    return metadata


# --- helpers -------------------------------------------------------------------------------


def _prepare(model: Any, *, tile: int, channels: int) -> tuple[Any, Any]:
    """An eval-mode wrapper returning a plain tensor, and the example input ``[1, C, T, T]``."""
    import torch

    class RawOutput(torch.nn.Module):
        """Returns the network's raw map as a plain tensor (unwraps a Brevitas QuantTensor)."""

        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.net(x)
            return y.value if hasattr(y, "value") else y

    model.eval()
    x = torch.zeros(1, channels, tile, tile)
    with torch.no_grad():
        y = RawOutput(model)(x)
    if y.ndim != 4:
        raise ExportError(f"the network returns shape {tuple(y.shape)}, not [B, C, H, W]")
    return RawOutput(model).eval(), x


def _brevitas_qcdq(model: Any, path: Path, *, tile: int, channels: int) -> Any:
    """Run Brevitas' QCDQ export into ``path`` and load the result."""
    import onnx
    from brevitas.export import export_onnx_qcdq

    wrapped, x = _prepare(model, tile=tile, channels=channels)
    try:
        export_onnx_qcdq(wrapped, x, export_path=str(path), dynamo=False)
    except Exception as exc:  # torch.onnx raises many types; name the stage and keep the cause
        raise ExportError(f"{path}: Brevitas QCDQ export failed ({exc})") from exc
    return onnx.load(str(path))


def _tidy(model_proto: Any, *, dynamic_batch: bool) -> None:
    """Drop initializers from the graph inputs, drop stale value_info, optionally free the batch."""
    graph = model_proto.graph
    inits = {i.name for i in graph.initializer}
    keep = [i for i in graph.input if i.name not in inits]
    del graph.input[:]
    graph.input.extend(keep)
    del graph.value_info[:]
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ExportError(f"exported graph has {len(graph.input)} inputs and "
                          f"{len(graph.output)} outputs, expected one each")
    graph.input[0].name, old = "x", graph.input[0].name
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = "x"
    out_old = graph.output[0].name
    for node in graph.node:
        for k, name in enumerate(node.output):
            if name == out_old:
                node.output[k] = "raw"
    graph.output[0].name = "raw"
    if dynamic_batch:
        for vi in (graph.input[0], graph.output[0]):
            dim = vi.type.tensor_type.shape.dim[0]
            dim.ClearField("dim_value")
            dim.dim_param = "batch"


def _set_metadata_props(model_proto: Any, meta: ModelMetadata) -> None:
    """Store the metadata JSON in ``metadata_props[METADATA_KEY]`` (replacing an older entry)."""
    keep = [p for p in model_proto.metadata_props if p.key != METADATA_KEY]
    del model_proto.metadata_props[:]
    model_proto.metadata_props.extend(keep)
    model_proto.metadata_props.add(key=METADATA_KEY,
                                   value=json.dumps(meta.to_dict(), allow_nan=False))


def _finish(path: Path, meta: ModelMetadata, fmt: ExportFormat, t0: float) -> ExportReport:
    """Write the sidecar and describe the exported file."""
    import onnx

    sidecar = meta.write_sidecar(path)
    proto = onnx.load(str(path))

    def dims(vi: Any) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    report = ExportReport(
        path=path, sidecar=sidecar, format=fmt,
        input_shape=dims(proto.graph.input[0]), output_shape=dims(proto.graph.output[0]),
        op_counts=dict(Counter(n.op_type for n in proto.graph.node)),
        file_bytes=path.stat().st_size, seconds=time.perf_counter() - t0,
        metadata=meta.to_dict(),
    )
    out = report.output_shape
    want = [meta.graph_channels, meta.graph_size, meta.graph_size]
    if len(out) != 4 or list(out[1:]) != want:
        raise ExportError(f"{path}: exported output shape {out} is not [B, {want[0]}, "
                          f"{want[1]}, {want[2]}] from the metadata")
    log.info("exported %s (%s): %d nodes, %.1f kB, %.1f s", path, fmt.value,
             sum(report.op_counts.values()), report.file_bytes / 1e3, report.seconds)
    return report


#: Largest pair sum ``w1*x1 + w2*x2`` that x86 AVX2 U8S8 kernels (VPMADDUBSW, int16
#: accumulation) compute without saturating; convs that could exceed it stay in float.
_U8S8_SAFE = 32767


class _IntegerRewrite:
    """Rewrite a Brevitas QCDQ graph so that onnxruntime can fuse DQ → Conv → Q into QLinearConv.

    A conv whose integer weights and input codes could saturate the int16 pair sums of
    onnxruntime's AVX2 U8S8 kernel (``2 * max|w| * max(x) > 32767``, e.g. 8-bit weights on the
    0..255 image) is left in float, unfused.

    Steps: apply Clips on constant weights; fold each Conv → BatchNormalization into the conv's
    per-channel weight scale and an int32 bias (a negative BN gain flips the sign of that
    channel's integer weights, which a narrow symmetric range keeps in range); quantise the float
    graph input with scale 1 (exact for 0..255); move MaxPool before its DequantizeLinear.
    A context branch adds a fork (one DequantizeLinear feeding the Concat and the branch's
    MaxPool: each consumer gets its own copy), a nearest Resize (moved before its
    DequantizeLinear like MaxPool) and a Concat of two DequantizeLinears with one scale (the
    shared quantizer: concatenated as integers, dequantised once), so the convs behind the
    MaxPool and the Concat see a DequantizeLinear input and can fuse too.
    """

    def __init__(self, model_proto: Any) -> None:
        self.model = model_proto
        self.graph = model_proto.graph
        self.inits = {i.name: i for i in self.graph.initializer}
        self.counter = 0

    def run(self) -> None:
        self._fold_weight_clips()
        self._quantize_graph_input()
        self._split_shared_dequant()
        self._maxpool_before_dequant()
        self._concat_before_dequant()
        for conv in [n for n in self.graph.node if n.op_type == "Conv"]:
            self._fold_bn(conv)
        self._prune()

    # graph access
    def _array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        if name not in self.inits:
            raise ExportError(f"expected a constant for {name!r} in the QCDQ graph")
        return numpy_helper.to_array(self.inits[name])

    def _add_init(self, arr: np.ndarray, hint: str) -> str:
        from onnx import numpy_helper

        self.counter += 1
        name = f"{hint}_i8rw{self.counter}"
        tensor = numpy_helper.from_array(arr, name)
        self.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name

    def _producer(self, tensor: str) -> Any:
        return next((n for n in self.graph.node if tensor in n.output), None)

    def _consumers(self, tensor: str) -> list[Any]:
        return [n for n in self.graph.node if tensor in n.input]

    # steps
    def _fold_weight_clips(self) -> None:
        """Replace ``Clip(constant int8, lo, hi)`` by the clipped constant."""
        for node in list(self.graph.node):
            if node.op_type != "Clip" or node.input[0] not in self.inits:
                continue
            lo = self._array(node.input[1]) if len(node.input) > 1 and node.input[1] else None
            hi = self._array(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            w = self._array(node.input[0])
            clipped = np.clip(w, lo, hi).astype(w.dtype)
            name = self._add_init(clipped, node.input[0])
            for consumer in self._consumers(node.output[0]):
                for k, t in enumerate(consumer.input):
                    if t == node.output[0]:
                        consumer.input[k] = name
            self.graph.node.remove(node)

    def _quantize_graph_input(self) -> None:
        """Insert an exact ``QuantizeLinear(x, 1, 0:uint8) → DequantizeLinear`` on the input."""
        from onnx import helper

        x = self.graph.input[0].name
        consumers = self._consumers(x)
        if all(c.op_type == "QuantizeLinear" for c in consumers):
            return
        one = self._add_init(np.array(1.0, np.float32), "input_scale")
        zp = self._add_init(np.array(0, np.uint8), "input_zp")
        q = helper.make_node("QuantizeLinear", [x, one, zp], ["x_q"], name="input_quant")
        dq = helper.make_node("DequantizeLinear", ["x_q", one, zp], ["x_dq"], name="input_dequant")
        for c in consumers:
            for k, t in enumerate(c.input):
                if t == x:
                    c.input[k] = "x_dq"
        self.graph.node.insert(0, dq)
        self.graph.node.insert(0, q)

    def _split_shared_dequant(self) -> None:
        """Give every consumer of an activation DequantizeLinear its own copy (the context
        branch's fork feeds the Concat and a MaxPool from one), so that each can be moved."""
        for dq in [n for n in self.graph.node if n.op_type == "DequantizeLinear"]:
            if dq.input[0] in self.inits:
                continue
            consumers = self._consumers(dq.output[0])
            for k, consumer in enumerate(consumers[1:], start=1):
                twin = type(dq)()
                twin.CopyFrom(dq)
                twin.name = f"{dq.name}_copy{k}"
                twin.output[0] = f"{dq.output[0]}_copy{k}"
                for j, t in enumerate(consumer.input):
                    if t == dq.output[0]:
                        consumer.input[j] = twin.output[0]
                self.graph.node.insert(list(self.graph.node).index(dq) + 1, twin)

    def _maxpool_before_dequant(self) -> None:
        """Turn ``DequantizeLinear → MaxPool`` into ``MaxPool → DequantizeLinear`` (exact: the
        scale, per tensor or per channel, is positive, so dequantisation is monotone within each
        channel), and the same for a
        nearest Resize (it only copies values)."""
        for pool in [n for n in self.graph.node if n.op_type == "MaxPool" or (
                n.op_type == "Resize" and any(a.name == "mode" and a.s == b"nearest"
                                              for a in n.attribute))]:
            dq = self._producer(pool.input[0])
            if (dq is None or dq.op_type != "DequantizeLinear"
                    or len(self._consumers(dq.output[0])) != 1
                    or np.any(self._array(dq.input[1]) <= 0)):
                continue
            q_tensor, pooled = dq.input[0], pool.output[0]
            pool.input[0] = q_tensor
            pool.output[0] = f"{pooled}_int"
            dq.input[0] = f"{pooled}_int"
            dq.output[0] = pooled
            nodes = list(self.graph.node)
            i_dq, i_pool = nodes.index(dq), nodes.index(pool)
            if i_dq < i_pool:  # keep the node list topologically sorted: pool first
                moved = type(pool)()
                moved.CopyFrom(pool)
                self.graph.node.remove(pool)
                self.graph.node.insert(i_dq, moved)

    def _concat_before_dequant(self) -> None:
        """Turn a Concat of DequantizeLinears with one per-tensor scale and zero point into
        ``Concat(integers) → DequantizeLinear`` (exact: the same affine map on every input)."""
        for cat in [n for n in self.graph.node if n.op_type == "Concat"]:
            dqs = [self._producer(t) for t in cat.input]
            if any(d is None or d.op_type != "DequantizeLinear" or d.input[0] in self.inits
                   or len(self._consumers(d.output[0])) != 1 or len(d.input) < 3 for d in dqs):
                continue
            scales = [self._array(d.input[1]) for d in dqs]
            zps = [self._array(d.input[2]) for d in dqs]
            if any(x.size != 1 or not np.array_equal(x, scales[0]) for x in scales) or any(
                    z.size != 1 or z.dtype != zps[0].dtype or not np.array_equal(z, zps[0])
                    for z in zps):
                continue
            out = cat.output[0]
            for k, d in enumerate(dqs):
                cat.input[k] = d.input[0]
            cat.output[0] = f"{out}_int"
            dq = type(dqs[0])()
            dq.CopyFrom(dqs[0])
            dq.input[0], dq.output[0] = cat.output[0], out
            for d in dqs:
                self.graph.node.remove(d)
            self.graph.node.insert(list(self.graph.node).index(cat) + 1, dq)

    def _fold_bn(self, conv: Any) -> None:
        """Fold a following BatchNormalization into ``conv``; give the conv an int32 bias."""
        from onnx import helper

        wdq = self._producer(conv.input[1])
        xdq = self._producer(conv.input[0])
        if (wdq is None or wdq.op_type != "DequantizeLinear" or xdq is None
                or xdq.op_type != "DequantizeLinear"):
            log.debug("conv %s: inputs are not DequantizeLinear; left as is", conv.name)
            return
        w_int = self._array(wdq.input[0])
        w_scale = self._array(wdq.input[1]).astype(np.float64).reshape(-1)
        w_zp = self._array(wdq.input[2]) if len(wdq.input) > 2 else np.zeros(1, w_int.dtype)
        if np.any(w_zp != 0):
            return
        x_scale = self._array(xdq.input[1]).astype(np.float64)
        cout = w_int.shape[0]
        if w_scale.size == 1:
            w_scale = np.full(cout, w_scale[0])
        x_in, unit_dq = xdq.output[0], None
        if x_scale.size != 1:
            # per-channel input scales (``dw_in_per_channel``): QLinearConv takes one input
            # scale, but a depthwise conv's output channel c reads only input channel c, so
            # channel c's scale moves exactly into channel c's weight scale
            group = next((a.i for a in conv.attribute if a.name == "group"), 1)
            x_zp = self._array(xdq.input[2]) if len(xdq.input) > 2 else np.zeros(1, np.uint8)
            if not (group == cout == x_scale.size and w_int.shape[1] == 1) or np.any(x_zp != 0):
                return
            w_scale = w_scale * x_scale.reshape(-1)
            x_scale = np.ones(1)
            x_in = f"{xdq.output[0]}_unit"
            one = self._add_init(np.array(1.0, np.float32), "x_scale")
            zero = self._add_init(np.zeros((), x_zp.dtype), "x_zp")
            unit_dq = helper.make_node("DequantizeLinear", [xdq.input[0], one, zero], [x_in],
                                       name=f"{xdq.name}_unit")
        bias = (self._dequantized_const(conv.input[2]) if len(conv.input) > 2 and conv.input[2]
                else np.zeros(cout))
        gain, shift = np.ones(cout), np.zeros(cout)
        consumers = self._consumers(conv.output[0])
        bn = consumers[0] if len(consumers) == 1 else None
        if bn is not None and bn.op_type == "BatchNormalization":
            g, b, mean, var = (self._array(t).astype(np.float64) for t in bn.input[1:5])
            eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
            gain = g / np.sqrt(var + eps)
            shift = b - mean * gain
        else:
            bn = None
        sign = np.where(gain < 0, -1, 1)
        if np.any(sign < 0):
            lim = np.iinfo(w_int.dtype).max
            if np.abs(w_int.astype(np.int64)).max() > lim:
                return
        new_w = (w_int.astype(np.int64) * sign.reshape(-1, *([1] * (w_int.ndim - 1))))
        max_code = self._max_code(conv.input[0])
        if 2 * int(np.abs(new_w).max(initial=0)) * max_code > _U8S8_SAFE:
            log.debug("conv %s: |w| <= %d on inputs <= %d could saturate onnxruntime's U8S8 "
                      "kernel; left in float", conv.name, np.abs(new_w).max(), max_code)
            return
        requant = self._requant_after(bn.output[0] if bn is not None else conv.output[0])
        out_scale = self._per_channel_scales(requant, cout)
        new_scale = (w_scale * np.abs(gain) / out_scale).astype(np.float32)
        new_bias = gain * bias + shift
        acc_scale = (float(x_scale.reshape(())) * new_scale.astype(np.float64))
        bias_int = np.rint(new_bias / out_scale / acc_scale)
        if np.abs(bias_int).max(initial=0) >= 2**31 - 1:
            return
        w_name = self._add_init(new_w.astype(w_int.dtype), "w")
        ws_name = self._add_init(new_scale, "w_scale")
        wz_name = self._add_init(np.zeros(cout, w_int.dtype), "w_zp")
        new_wdq = helper.make_node("DequantizeLinear", [w_name, ws_name, wz_name],
                                   [f"{w_name}_dq"], axis=0)
        b_name = self._add_init(bias_int.astype(np.int32), "b")
        bs_name = self._add_init(acc_scale.astype(np.float32), "b_scale")
        bz_name = self._add_init(np.zeros(cout, np.int32), "b_zp")
        new_bdq = helper.make_node("DequantizeLinear", [b_name, bs_name, bz_name],
                                   [f"{b_name}_dq"], axis=0)
        idx = list(self.graph.node).index(conv)
        self.graph.node.insert(idx, new_bdq)
        self.graph.node.insert(idx, new_wdq)
        if unit_dq is not None:
            self.graph.node.insert(idx, unit_dq)
        del conv.input[:]
        conv.input.extend([x_in, f"{w_name}_dq", f"{b_name}_dq"])
        if np.any(out_scale != 1):
            self._unit_requant(requant)
        if bn is not None:
            out = bn.output[0]
            self.graph.node.remove(bn)
            conv.output[0] = out

    def _requant_after(self, tensor: str) -> Any:
        """The ``QuantizeLinear`` that ``tensor`` feeds through a lone Relu, if any."""
        consumers = self._consumers(tensor)
        if len(consumers) != 1 or consumers[0].op_type != "Relu":
            return None
        after = self._consumers(consumers[0].output[0])
        return after[0] if len(after) == 1 and after[0].op_type == "QuantizeLinear" else None

    def _per_channel_scales(self, q: Any, cout: int) -> np.ndarray:
        """Per-channel scales of ``q``, the ``QuantizeLinear`` after a conv's Relu (all ones
        when there is none or it is per tensor). QLinearConv takes one output scale; dividing
        channel c's weight scale and bias by its scale (ReLU commutes with a positive scale)
        leaves a unit one."""
        if q is None:
            return np.ones(cout)
        scale = self._array(q.input[1]).astype(np.float64).reshape(-1)
        zp = self._array(q.input[2]) if len(q.input) > 2 else np.zeros(1)
        if scale.size != cout or np.any(scale <= 0) or np.any(zp != 0):
            return np.ones(cout)
        return scale

    def _unit_requant(self, q: Any) -> None:
        """Give ``q`` (a ``QuantizeLinear``) a unit per-tensor scale: its per-channel scales
        were folded into the conv before it; the DequantizeLinear after it keeps them."""
        zp = self._array(q.input[2])
        q.input[1] = self._add_init(np.array(1.0, np.float32), "y_scale")
        q.input[2] = self._add_init(np.zeros((), zp.dtype), "y_zp")
        for a in list(q.attribute):
            if a.name == "axis":
                q.attribute.remove(a)

    def _max_code(self, tensor: str) -> int:
        """Largest integer code a dequantised activation can carry (255 when unknown)."""
        node = self._producer(tensor)
        while node is not None and node.op_type in ("DequantizeLinear", "MaxPool", "Resize"):
            node = self._producer(node.input[0])
        if node is not None and node.op_type == "Concat":
            return max(self._max_code(t) for t in node.input)
        if node is not None and node.op_type == "Clip" and len(node.input) > 2 and node.input[2]:
            return int(np.abs(self._array(node.input[2])).max())
        return 255

    def _dequantized_const(self, tensor: str) -> np.ndarray:
        """The float value of a constant, or of ``DequantizeLinear(constant, scale, zp)``."""
        if tensor in self.inits:
            return self._array(tensor).astype(np.float64)
        dq = self._producer(tensor)
        if dq is None or dq.op_type != "DequantizeLinear":
            raise ExportError(f"conv bias {tensor!r} is neither a constant nor dequantized")
        q = self._array(dq.input[0]).astype(np.float64)
        s = self._array(dq.input[1]).astype(np.float64)
        zp = self._array(dq.input[2]).astype(np.float64) if len(dq.input) > 2 else 0.0
        return (q - zp) * s

    def _prune(self) -> None:
        """Remove nodes and initializers nothing uses any more."""
        needed = {o.name for o in self.graph.output}
        alive = []
        for node in reversed(list(self.graph.node)):
            if any(o in needed for o in node.output):
                alive.append(node)
                needed.update(node.input)
        alive.reverse()
        del self.graph.node[:]
        self.graph.node.extend(alive)
        inits = [i for i in self.graph.initializer if i.name in needed]
        del self.graph.initializer[:]
        self.graph.initializer.extend(inits)
