"""Per-tile latency by pipeline stage: samples per batch and per tile row, and their p50/p99.

The pipeline accumulates seconds per stage (:class:`~sarvessel.runtime.pipeline.StageTimings`);
a benchmark also needs the spread. :func:`timed_detector` wraps a detector so every backend call
and every post-processing call is timed on its own (one sample per batch), and
:class:`LatencyRecorder` takes the pipeline's per-row hook
(:data:`~sarvessel.runtime.pipeline.RowHook`) for the stages that work on whole tile rows.

A sample is seconds per tile of its unit of work:

- ``read``, ``preprocess``, ``merge``: the row's seconds / tiles in the row (these stages read,
  scale and merge a whole band of rows at once);
- ``infer``, ``post``: the batch's seconds / tiles in the batch;
- ``write``: the scene's output writing / tiles run (one sample per scene);
- ``total``: the row's seconds over every stage / tiles in the row (its infer and post included).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from sarvessel.runtime.detector import Detector
from sarvessel.runtime.pipeline import StageTimings

__all__ = ["LatencyRecorder", "Stage", "StageLatency", "percentiles", "timed_detector"]


class Stage(str, Enum):
    """Pipeline stages a latency is reported for, in pipeline order."""

    READ = "read"
    PREPROCESS = "preprocess"
    INFER = "infer"
    POST = "post"
    MERGE = "merge"
    WRITE = "write"
    TOTAL = "total"


#: Stages that the pipeline times per tile row.
ROW_STAGES = (Stage.READ, Stage.PREPROCESS, Stage.MERGE)
#: Stages timed per backend batch.
BATCH_STAGES = (Stage.INFER, Stage.POST)


@dataclass
class StageLatency:
    """Milliseconds per tile of one stage: p50, p99, mean and how many samples."""

    p50_ms: float
    p99_ms: float
    mean_ms: float
    samples: int

    def to_dict(self) -> dict[str, float | int]:
        return {"p50_ms": round(self.p50_ms, 4), "p99_ms": round(self.p99_ms, 4),
                "mean_ms": round(self.mean_ms, 4), "samples": self.samples}


def percentiles(per_tile_s: list[float] | np.ndarray) -> StageLatency | None:
    """p50/p99/mean of per-tile seconds, in ms; None without samples.

    >>> percentiles([0.001, 0.002, 0.003]).p50_ms
    2.0
    """
    x = np.asarray(per_tile_s, np.float64)
    if x.size == 0:
        return None
    p50, p99 = np.percentile(x, [50, 99])
    return StageLatency(1e3 * float(p50), 1e3 * float(p99), 1e3 * float(x.mean()), int(x.size))


@dataclass
class LatencyRecorder:
    """Collects per-batch and per-row samples of one scene run (seconds per tile by stage)."""

    samples: dict[Stage, list[float]] = field(
        default_factory=lambda: {s: [] for s in Stage})
    #: Tiles the backend ran, counted from the batches.
    tiles_inferred: int = 0
    _last: dict[str, float] = field(default_factory=dict, repr=False)
    _last_done: int = 0

    def add_batch(self, stage: Stage, seconds: float, tiles: int) -> None:
        """One backend or post-processing call over ``tiles`` tiles."""
        if tiles > 0:
            self.samples[stage].append(seconds / tiles)
            if stage is Stage.INFER:
                self.tiles_inferred += tiles

    def on_row(self, row: int, tiles_done: int, timings: StageTimings) -> None:
        """The pipeline's :data:`~sarvessel.runtime.pipeline.RowHook`: this row's share of each
        row stage, and of all stages together, per tile of the row."""
        now = timings.as_dict()
        tiles = tiles_done - self._last_done
        if tiles > 0:
            d = {k: now[k] - self._last.get(k, 0.0) for k in now}
            for s in ROW_STAGES:
                self.samples[s].append(d[s.value] / tiles)
            busy = sum(d[s.value] for s in (*ROW_STAGES, *BATCH_STAGES))
            self.samples[Stage.TOTAL].append(busy / tiles)
        self._last, self._last_done = now, tiles_done

    def add_write(self, seconds: float, tiles: int) -> None:
        """The scene's output writing, shared over the tiles run."""
        if tiles > 0:
            self.samples[Stage.WRITE].append(seconds / tiles)

    def summary(self) -> dict[str, dict[str, Any]]:
        """p50/p99/mean ms per tile by stage (stages without samples are left out)."""
        out = {}
        for s in Stage:
            lat = percentiles(self.samples[s])
            if lat is not None:
                out[s.value] = lat.to_dict()
        return out


def timed_detector(detector: Detector, recorder: LatencyRecorder) -> Detector:
    """``detector`` with its backend and post stage timed per call into ``recorder``; it
    computes the same detections (every other attribute is the wrapped object's)."""
    return Detector(_Timed(detector.backend, "infer", Stage.INFER, recorder),
                    _Timed(detector.post, "__call__", Stage.POST, recorder))


class _Timed:
    """Times one method of ``inner`` per call (tiles = the batch's length); forwards the rest."""

    def __init__(self, inner: Any, method: str, stage: Stage, recorder: LatencyRecorder) -> None:
        self._inner = inner
        self._method = getattr(inner, method)
        self._stage = stage
        self._recorder = recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _timed(self, *args: Any) -> Any:
        batch = args[-1]  # infer(batch) and post(raw, batch): the tiles are the last argument
        t0 = time.perf_counter()
        out = self._method(*args)
        self._recorder.add_batch(self._stage, time.perf_counter() - t0, len(batch))
        return out

    def infer(self, batch: Any) -> Any:
        return self._timed(batch)

    def __call__(self, raw: Any, batch: Any) -> Any:
        return self._timed(raw, batch)
