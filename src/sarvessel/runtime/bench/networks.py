"""Networks timed per tile, and a peer network run through the same tiling as ours.

:class:`PeerBackend` runs an exported stock detector (the YOLOv8n peer: float input
``[B, 3, T, T]`` in 0..1, output ``[B, 4 + nc, N]``) as a pipeline backend: the pipeline's uint8
VV/VH tiles become the float image (VV, VH, VV), so it reads, tiles and preprocesses exactly what
our model gets. Its weights are random (timing does not depend on them), so its detections would
mean nothing: it returns none and its post-processing (ultralytics' NMS) is not counted, which
favours the peer in every ratio.

:func:`time_networks` times several backends' ``infer`` on the same random tiles, round-robin
(so a shared, loaded machine slows each alike), at each batch size.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sarvessel.runtime.backends.base import Backend
from sarvessel.runtime.detections import Detections
from sarvessel.runtime.errors import ModelError

log = logging.getLogger(__name__)

__all__ = ["PeerBackend", "network_ratios", "time_networks"]


class PeerBackend:
    """A stock float detector exported to ONNX, run on the pipeline's tiles; returns no
    detections (see the module docstring).

    path: the ``.onnx`` file (input ``[B, 3, T, T]`` float, fixed T). threads: onnxruntime
    intra-op threads; the default (None) is onnxruntime's (one per physical core). name: shown
    in tables; the default is ``<file stem>``.
    """

    #: The pipeline's bands: VV, VH (the third input channel repeats VV).
    channels = 2

    def __init__(self, path: Path | str, *, threads: int | None = None,
                 name: str | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: peer model not found")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise ModelError(f"{self.path}: onnxruntime cannot load the peer ({exc})") from exc
        (inp,) = self.session.get_inputs()
        shape = list(inp.shape)
        if len(shape) != 4 or not isinstance(shape[2], int) or shape[2] != shape[3]:
            raise ModelError(f"{self.path}: peer input shape {shape} is not [B, C, T, T]")
        self.input_channels = int(shape[1])
        self.tile_size = int(shape[2])
        self._input = inp.name
        self.name = name or self.path.stem
        self.fingerprint = "peer:" + hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]

    def infer(self, batch: np.ndarray) -> list[Detections]:
        """Run the network on ``batch`` (``uint8 [B, 2, T, T]``); no detections (see above)."""
        self.forward(batch)
        return [Detections() for _ in range(len(batch))]

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """The network's raw output for ``batch`` (``uint8 [B, 2, T, T]``)."""
        b = len(batch)
        x = np.empty((b, self.input_channels, self.tile_size, self.tile_size), np.float32)
        np.multiply(batch[:, :2], np.float32(1 / 255), out=x[:, :2])
        for c in range(2, self.input_channels):
            x[:, c] = x[:, 0]
        return self.session.run(None, {self._input: x})[0]


def time_networks(
    backends: Mapping[str, Backend],
    *,
    batch_sizes: Sequence[int] = (1, 8),
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Milliseconds per tile of each backend's ``infer`` at each batch size.

    backends: label → backend (its ``tile_size`` and ``channels`` give the tiles). batch_sizes:
    the default is (1, 8), the pipeline's batch. repeats: timed calls per backend and batch size;
    the default is 5. warmup: untimed calls first; the default is 1.
    Returns ``{label: {"tile": T, "batch<B>": {"ms_per_tile_median", "ms_per_tile_min",
    "ms_per_mpx_median", "repeats"}}}``.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Any]] = {k: {"tile": int(b.tile_size)} for k, b in backends.items()}
    for bs in batch_sizes:
        batches = {k: rng.integers(0, 256, (bs, b.channels, b.tile_size, b.tile_size), np.uint8)
                   for k, b in backends.items()}
        for k, b in backends.items():
            for _ in range(warmup):
                b.infer(batches[k])
        times: dict[str, list[float]] = {k: [] for k in backends}
        for _ in range(repeats):
            for k, b in backends.items():
                t0 = time.perf_counter()
                b.infer(batches[k])
                times[k].append((time.perf_counter() - t0) / bs)
        for k, b in backends.items():
            t = np.asarray(times[k])
            mpx = b.tile_size ** 2 / 1e6
            out[k][f"batch{bs}"] = {
                "ms_per_tile_median": round(1e3 * float(np.median(t)), 3),
                "ms_per_tile_min": round(1e3 * float(t.min()), 3),
                "ms_per_mpx_median": round(1e3 * float(np.median(t)) / mpx, 3),
                "repeats": int(len(t)),
            }
            log.info("%s batch %d: %.1f ms per tile", k, bs, 1e3 * float(np.median(t)))
    return out


def network_ratios(timings: Mapping[str, Mapping[str, Any]], reference: str
                   ) -> dict[str, dict[str, float]]:
    """Each network's median time over ``reference``'s: per tile at each batch size, and per
    megapixel at the largest batch (networks at another tile size compare per pixel)."""
    ref = timings.get(reference)
    if not ref:
        return {}
    out: dict[str, dict[str, float]] = {}
    batches = [k for k in ref if k.startswith("batch")]
    for name, v in timings.items():
        r: dict[str, float] = {}
        for k in batches:
            a, b = v.get(k, {}).get("ms_per_tile_median"), ref[k].get("ms_per_tile_median")
            if a and b and v["tile"] == ref["tile"]:
                r[k] = round(a / b, 3)
        if batches:
            last = max(batches, key=lambda k: int(k[5:]))
            a, b = v.get(last, {}).get("ms_per_mpx_median"), ref[last].get("ms_per_mpx_median")
            if a and b:
                r["per_mpx"] = round(a / b, 3)
        out[name] = r
    return out
