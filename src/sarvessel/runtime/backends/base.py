"""The interface every backend implements (CFAR, ONNX/CPU, FINN/FPGA, simulated board).

A backend is one method: ``infer(batch)`` takes preprocessed tiles ``uint8 [B, C, T, T]`` (the
output of :func:`sarvessel.runtime.preprocess.preprocess`) and returns what its accelerator
returns: for a network, the float32 head map on the anchor grid
``[B, 4*reg_max + nc, S, S]`` (the backend's ``metadata`` says how to read it); for a detector
that finds objects itself (CFAR, noop), one :class:`~sarvessel.runtime.detections.Detections`
per tile in that tile's pixel coordinates. Post-processing (decode, second stage, lengths) is
one shared stage, :mod:`sarvessel.runtime.post`, composed with the backend by
:class:`~sarvessel.runtime.detector.Detector`. A backend keeps no state the caller has to track.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from sarvessel.runtime.contract import TILE_SIZE
from sarvessel.runtime.detections import Detections

#: What :meth:`Backend.infer` returns: a head map, or detections per tile.
RawOutput = np.ndarray | list[Detections]


@runtime_checkable
class Backend(Protocol):
    """A tile inference engine: what the pipeline and test-time augmentation call."""

    #: Short name shown in logs and benchmark tables.
    name: str
    #: Number of input channels (bands) it expects, in :data:`preprocess.DEFAULT_BANDS` order.
    channels: int
    #: Side of the square tiles it takes (pixels); the tiler makes every tile this size.
    tile_size: int
    #: Everything that changes its output (model bytes, settings): a resumed scene reuses
    #: finished rows only from the same fingerprint.
    fingerprint: str

    def infer(self, batch: np.ndarray) -> RawOutput:
        """Run ``batch`` (``uint8 [B, C, tile_size, tile_size]``); one result per tile."""
        ...


class NoopBackend:
    """Returns no detections: measures the read → tile → preprocess → merge → write path alone."""

    name = "noop"
    fingerprint = "noop"

    def __init__(self, *, channels: int = 2, tile_size: int = TILE_SIZE) -> None:
        self.channels = channels
        self.tile_size = tile_size

    def infer(self, batch: np.ndarray) -> list[Detections]:
        return [Detections() for _ in range(len(batch))]
