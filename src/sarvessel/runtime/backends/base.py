"""The backend interface every detector implements (CFAR, ONNX/CPU, FINN/FPGA, simulated board).

A backend is one method: ``detect(batch)`` takes preprocessed tiles ``uint8 [B, C, T, T]`` (the
output of :func:`sarvessel.runtime.preprocess.preprocess`) and returns one
:class:`~sarvessel.runtime.detections.Detections` per tile, in that tile's pixel coordinates.
It keeps no state the caller has to track. Shifting to scene coordinates and merging across
overlapping tiles is done once per scene by the pipeline.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from sarvessel.runtime.detections import Detections


@runtime_checkable
class Backend(Protocol):
    """A tile detector."""

    #: Short name shown in logs and benchmark tables.
    name: str
    #: Number of input channels (bands) it expects, in :data:`preprocess.DEFAULT_BANDS` order.
    channels: int
    #: Side of the square tiles it takes (pixels); the tiler makes every tile this size.
    tile_size: int
    # Optional: ``fingerprint: str``, everything that changes its detections (model bytes,
    # thresholds, settings). A resumed scene reuses rows only from the same fingerprint; a
    # backend without one is identified by ``name`` alone.

    def detect(self, batch: np.ndarray) -> list[Detections]:
        """Detect in ``batch`` (``uint8 [B, C, tile_size, tile_size]``); one result per tile."""
        ...


class NoopBackend:
    """Returns no detections: measures the read → tile → preprocess → merge → write path alone."""

    name = "noop"
    fingerprint = "noop"

    def __init__(self, *, channels: int = 2, tile_size: int = 512) -> None:
        self.channels = channels
        self.tile_size = tile_size

    def detect(self, batch: np.ndarray) -> list[Detections]:
        return [Detections() for _ in range(len(batch))]
