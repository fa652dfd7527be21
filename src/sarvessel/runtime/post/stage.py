"""The post-processing stage: what turns a network's head map into detections.

One stage for every network backend (onnxruntime, the board simulator, the FPGA): each returns
the head map its accelerator computes, and this stage, composed once from the model contract,
does the rest on the CPU, in this order:

    decode (DFL boxes, scores, NMS) → refine small boxes → rescore → threshold → length

The refiner and the rescorer are the optional second stage the sidecar names
(:class:`~sarvessel.runtime.post.rescore.RescorerSpec`); without them the stage is decode,
threshold and, for scene models, vessel length from the image. Backends that already return
detections (CFAR, noop) go through :class:`PassThrough`.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Protocol

import numpy as np

from sarvessel.runtime.contract import ModelMetadata
from sarvessel.runtime.detections import Detections
from sarvessel.runtime.errors import ModelError
from sarvessel.runtime.post.decode import decode
from sarvessel.runtime.post.length import measure_lengths
from sarvessel.runtime.post.refine import BoxRefiner
from sarvessel.runtime.post.rescore import Rescorer, RescorerSpec, valid_extent

#: Most detections kept per tile.
MAX_DET = 300


def check_head_map(raw: np.ndarray, metadata: ModelMetadata, tiles: int) -> None:
    """Refuse a head map whose shape is not the contract's ``[tiles, 4*reg_max + nc,
    subgrid*T/stride, subgrid*T/stride]``.

    Why: a graph with symbolic output dims passes the load-time check, and a larger map
    decodes into boxes far outside the tile (thousands of them, rows past the scene's end).
    A tuple compare, so it runs on every batch, the first one included.
    """
    m = metadata
    want = (tiles, m.out_channels, m.out_size, m.out_size)
    if tuple(raw.shape) != want:
        raise ModelError(
            f"model {m.name}: the backend returned a head map of shape {list(raw.shape)} for "
            f"{tiles} tile(s); its contract says {list(want)} ([B, 4*{m.reg_max}+{m.nc}, "
            f"{m.subgrid}*{m.tile_size}/{m.stride}, ...]): wrong model or sidecar")


class PostStage(Protocol):
    """Raw backend output of a batch in, one :class:`Detections` per tile out (tile pixels)."""

    #: Everything that changes the detections it makes (settings, fitted files' bytes).
    fingerprint: str

    def __call__(self, raw: np.ndarray | list[Detections], batch: np.ndarray
                 ) -> list[Detections]:
        ...


class PassThrough:
    """The post stage of backends that return detections themselves (CFAR, noop)."""

    fingerprint = "none"

    def __call__(self, raw: np.ndarray | list[Detections], batch: np.ndarray
                 ) -> list[Detections]:
        if isinstance(raw, np.ndarray):
            raise TypeError("PassThrough takes detections, not a head map")
        return list(raw)


class HeadMapPost:
    """Decode a head map and run the model's second stage.

    metadata: the model contract. model_dir: folder the sidecar's file names are relative to.
    conf_threshold, iou_threshold: override the contract's decode thresholds. max_det: most
    detections per tile; the default is :data:`MAX_DET`. second_stage: run the refiner and
    rescorer the sidecar names (the default); False decodes the network's own scores.
    """

    def __init__(
        self,
        metadata: ModelMetadata,
        model_dir: Path | str,
        *,
        conf_threshold: float | None = None,
        iou_threshold: float | None = None,
        max_det: int = MAX_DET,
        second_stage: bool = True,
    ) -> None:
        self.metadata = metadata
        self.conf_threshold = float(
            metadata.conf_threshold if conf_threshold is None else conf_threshold)
        self.iou_threshold = float(
            metadata.iou_threshold if iou_threshold is None else iou_threshold)
        if not 0.0 < self.conf_threshold < 1.0:
            raise ModelError(f"conf_threshold must be in (0, 1), got {self.conf_threshold}")
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise ModelError(f"iou_threshold must be in [0, 1], got {self.iou_threshold}")
        self.max_det = int(max_det)
        spec = (RescorerSpec.from_dict(metadata.rescorer)
                if second_stage and metadata.rescorer is not None else None)
        #: The box refiner (runs first) and the rescorer the sidecar names (None: none).
        self.refiner: BoxRefiner | None = None
        self.rescorer: Rescorer | None = None
        if spec is not None:
            self.rescorer = Rescorer(spec, Path(model_dir))
            if spec.refiner is not None:
                self.refiner = BoxRefiner(Path(model_dir) / spec.refiner,
                                          max_side=spec.refine_max_side)
        #: Scene models measure vessel length on the VV band.
        self.length_band: int | None = (list(metadata.bands).index("VV_dB")
                                        if "VV_dB" in metadata.bands else None)
        self.seconds = 0.0
        self._fingerprint: str | None = None

    @property
    def files(self) -> list[Path]:
        """The fitted second-stage models it reads (rescorer, then refiner)."""
        return ([self.rescorer.path] if self.rescorer else []) + (
            [self.refiner.path] if self.refiner else [])

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256()
            for path in self.files:
                h.update(path.read_bytes())
            stage = h.hexdigest()[:16] if self.files else "none"
            self._fingerprint = (f"conf={self.conf_threshold!r}:iou={self.iou_threshold!r}:"
                                 f"max_det={self.max_det}:second_stage={stage}")
        return self._fingerprint

    def __call__(self, raw: np.ndarray | list[Detections], batch: np.ndarray
                 ) -> list[Detections]:
        """Detections of each tile of ``batch`` (``uint8 [B, C, T, T]``) from its head map."""
        if not isinstance(raw, np.ndarray):
            raise TypeError("HeadMapPost takes a head map, not detections")
        m = self.metadata
        check_head_map(raw, m, len(batch))
        t0 = time.perf_counter()
        conf = self.conf_threshold
        if self.rescorer is not None:  # the rescorer sees every box down to its pre_conf
            conf = min(conf, self.rescorer.spec.pre_conf)
        dets = decode(raw, stride=m.stride, reg_max=m.reg_max, subgrid=m.subgrid,
                      conf_threshold=conf, iou_threshold=self.iou_threshold,
                      max_det=self.max_det)
        if self.rescorer is not None:
            dets = [self._second_stage(tile[0], d) for tile, d in zip(batch, dets, strict=True)]
        if self.length_band is not None:  # length from the image, not the (>= 16 px) box
            for tile, d in zip(batch, dets, strict=True):
                if len(d):
                    d.lengths_px = measure_lengths(tile[self.length_band], d)
        self.seconds += time.perf_counter() - t0
        return dets

    def _second_stage(self, grey: np.ndarray, dets: Detections) -> Detections:
        """Refine, rescore and threshold one tile's detections (features from ``grey``)."""
        assert self.rescorer is not None
        idx = self.rescorer.can_pass(dets, self.conf_threshold)
        if self.refiner is not None and len(idx):
            dets = self.refiner.refine(grey, dets, index=idx, extent=valid_extent(grey))
        new = self.rescorer.rescore(grey, dets, index=idx)
        return new.select(np.flatnonzero(new.scores > self.conf_threshold)[: self.max_det])
