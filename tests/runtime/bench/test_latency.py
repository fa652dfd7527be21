"""Per-tile latency by stage: the detector wrapper and the pipeline's per-row hook."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sarvessel.runtime.bench.latency import (
    LatencyRecorder,
    Stage,
    percentiles,
    timed_detector,
)
from sarvessel.runtime.detector import make_detector
from sarvessel.runtime.io.scene import open_scene
from sarvessel.runtime.pipeline import PipelineConfig, StageTimings, run_scene
from sarvessel.runtime.tiling import tile_starts


def test_percentiles() -> None:
    lat = percentiles(np.arange(1, 101) / 1e3)
    assert lat.p50_ms == pytest.approx(50.5)
    assert lat.p99_ms == pytest.approx(99.01)
    assert lat.mean_ms == pytest.approx(50.5)
    assert lat.samples == 100
    assert percentiles([]) is None


def test_recorder_takes_row_deltas_per_tile() -> None:
    rec = LatencyRecorder()
    t = StageTimings(read=0.1, preprocess=0.2, infer=0.4, post=0.1, merge=0.05)
    rec.on_row(0, 4, t)
    t2 = StageTimings(read=0.3, preprocess=0.2, infer=0.8, post=0.2, merge=0.05)
    rec.on_row(1, 8, t2)
    assert rec.samples[Stage.READ] == pytest.approx([0.025, 0.05])
    assert rec.samples[Stage.PREPROCESS] == pytest.approx([0.05, 0.0])
    assert rec.samples[Stage.TOTAL] == pytest.approx([0.85 / 4, 0.7 / 4])
    rec.add_batch(Stage.INFER, 0.8, 8)
    rec.add_write(0.16, 8)
    s = rec.summary()
    assert s["infer"]["p50_ms"] == pytest.approx(100.0)
    assert s["write"]["samples"] == 1 and s["write"]["p50_ms"] == pytest.approx(20.0)


def test_timed_detector_gives_the_same_detections_and_one_sample_per_batch(
        scene: Path) -> None:
    det = make_detector("cfar")
    rec = LatencyRecorder()
    cfg = PipelineConfig(batch_size=2)
    with open_scene(scene) as sc:
        plain = run_scene(sc, det, config=cfg)
    rows_seen: list[tuple[int, int]] = []

    def hook(i: int, done: int, timings: StageTimings) -> None:
        rows_seen.append((i, done))
        rec.on_row(i, done, timings)

    with open_scene(scene) as sc:
        timed = run_scene(sc, timed_detector(det, rec), config=cfg, on_row=hook)
    assert len(timed.detections) == len(plain.detections) > 0
    np.testing.assert_array_equal(timed.detections.rows, plain.detections.rows)
    rows = tile_starts(700, 512, cfg.overlap)
    cols = tile_starts(900, 512, cfg.overlap)
    assert rows_seen == [(i, (i + 1) * len(cols)) for i in range(len(rows))]
    batches = len(rows) * -(-len(cols) // 2)
    assert len(rec.samples[Stage.INFER]) == len(rec.samples[Stage.POST]) == batches
    assert rec.tiles_inferred == timed.tiles_run
    assert len(rec.samples[Stage.READ]) == len(rows)
    # the wrapper forwards what the pipeline and the journal read
    wrapped = timed_detector(det, rec)
    assert wrapped.name == "cfar" and wrapped.fingerprint == det.fingerprint
    assert wrapped.tile_size == det.tile_size and wrapped.metadata is None
