"""The CPU backend: an exported ONNX network run by onnxruntime.

The model file is an export of the Brevitas network (:mod:`sarvessel.quantize.export`): its
graph input is float but carries the integer values 0..255 of the preprocessed tiles (there is
no input quantizer, see ``docs/references.md`` §5), so :meth:`OnnxBackend.infer` casts the
uint8 batch to the graph's input type, runs the graph and returns the raw head map on the
anchor grid, exactly what the accelerator's output becomes after its CPU tail. Decoding and the
second stage are the shared post-processing stage (:mod:`sarvessel.runtime.post`).

Everything the backend needs to know about the model comes from the contract
(:class:`~sarvessel.runtime.contract.ModelMetadata`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sarvessel.runtime.contract import ModelMetadata, read_metadata, sidecar_path
from sarvessel.runtime.errors import ModelError
from sarvessel.runtime.post.decode import unpack_subgrid

log = logging.getLogger(__name__)

#: ONNX input element types and the numpy dtype a uint8 batch is cast to.
_ORT_INPUT_DTYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
}


class OnnxBackend:
    """Run an exported model with onnxruntime on the CPU; return its raw head maps.

    model_path: the ``.onnx`` file; its metadata comes from the sidecar JSON or metadata_props
    (:func:`~sarvessel.runtime.contract.read_metadata`). threads: onnxruntime intra-op threads;
    the default (None) lets onnxruntime use one per physical core. providers: onnxruntime
    execution providers; the default is the CPU provider.

    Raises :class:`ModelError` for a missing file or metadata, or when the graph's input or
    output shape disagrees with the metadata.
    """

    name = "onnx"

    def __init__(
        self,
        model_path: Path | str,
        *,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelError(f"{self.model_path}: model file not found")
        self.metadata: ModelMetadata = read_metadata(self.model_path)
        exact_tail = self.metadata.extra.get("graph") == "intfloat"
        self.session = _session(self.model_path, threads=threads, providers=providers,
                                exact_tail=exact_tail)
        self.channels = self.metadata.channels
        self.tile_size = self.metadata.tile_size
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
        #: Seconds spent in onnxruntime since construction, and tiles seen.
        self.seconds_infer = 0.0
        self.tiles = 0
        self._fingerprint: str | None = None
        log.info("loaded %s (%s): tile %d, %d channels, stride %d, %d classes",
                 self.model_path, m.name, m.tile_size, m.channels, m.stride, m.nc)

    @property
    def model_dir(self) -> Path:
        """Folder of the model: files the sidecar names are relative to it."""
        return self.model_path.parent

    @property
    def fingerprint(self) -> str:
        """The model's bytes (graph and sidecar, SHA-256): a resumed scene reuses finished rows
        only from the same network (the post-processing stage adds its own settings)."""
        if self._fingerprint is None:
            h = hashlib.sha256(self.model_path.read_bytes())
            sidecar = sidecar_path(self.model_path)
            if sidecar.is_file():
                h.update(sidecar.read_bytes())
            self._fingerprint = f"onnx:{h.hexdigest()[:32]}"
        return self._fingerprint

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The raw head map of ``batch`` (``uint8 [B, C, T, T]``) on the anchor grid,
        ``float32 [B, 4*reg_max + nc, subgrid*T/stride, subgrid*T/stride]`` (the graph output
        unpacked by :func:`~sarvessel.runtime.post.decode.unpack_subgrid`)."""
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


#: onnxruntime fusions that fold a per-channel Mul/Add after a conv into its weights and bias.
#: An integer-exact graph keeps them off: its last conv's output is the accelerator's integer
#: accumulators, and the tail after it must round as written (``acc * scale + bias`` in
#: float32), as the board's CPU tail does, so the CPU fallback and the ``sim``/``fpga`` backends
#: give bit-identical head maps (folded, they differ by an ulp).
EXACT_TAIL_DISABLED_OPTIMIZERS = ("ConvMulFusion", "ConvAddFusion")


def _session(
    model_path: Path, *, threads: int | None = None, providers: Sequence[str] | None = None,
    exact_tail: bool = False,
) -> Any:
    """An onnxruntime session: sequential, one inter-op thread, full graph optimisation (less
    :data:`EXACT_TAIL_DISABLED_OPTIMIZERS` with ``exact_tail``)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3  # silences "initializer appears in graph inputs" of old exports
    try:
        return ort.InferenceSession(
            str(model_path), sess_options=opts,
            providers=list(providers or ["CPUExecutionProvider"]),
            disabled_optimizers=list(EXACT_TAIL_DISABLED_OPTIMIZERS) if exact_tail else None)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise ModelError(f"{model_path}: onnxruntime cannot load the model ({exc})") from exc
