"""The pre-screen inside run_scene: the land test changes no detection, the gate counts what it
skips, and neither runs without the land filter. Skipped until the pipeline takes
``PipelineConfig.prescreen`` (the wiring in docs/prescreen.md)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from sarvessel.runtime.detector import make_detector
from sarvessel.runtime.io.scene import open_scene
from sarvessel.runtime.pipeline import PipelineConfig, run_scene
from sarvessel.runtime.prescreen import PrescreenConfig

pytestmark = pytest.mark.skipif(
    "prescreen" not in {f.name for f in dataclasses.fields(PipelineConfig)},
    reason="the pre-screen is not wired into the pipeline yet")


@pytest.fixture(scope="module")
def land_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sarvessel.synth.generate import synthesize_scene

    return synthesize_scene(tmp_path_factory.mktemp("land"), height=1536, width=2048,
                            seed=5).scene_dir


@pytest.mark.parametrize("concurrent", [True, False])
def test_land_prescreen_changes_no_detection(land_scene: Path, concurrent: bool):
    det = make_detector("onnx")

    def run(**kw):
        with open_scene(land_scene) as sc:
            return run_scene(sc, det, config=PipelineConfig(concurrent=concurrent, **kw))

    off = run(prescreen=PrescreenConfig(skip_land=False))
    on = run()
    assert on.tiles_skipped_land > 0
    assert on.tiles_run + on.tiles_skipped_land == off.tiles_run
    for k in ("rows", "cols", "scores", "classes", "boxes", "lengths_px"):
        np.testing.assert_array_equal(getattr(on.detections, k), getattr(off.detections, k))
    gated = run(prescreen=PrescreenConfig(min_u8=200))
    assert gated.tiles_skipped_dark > 0
    assert gated.tiles_run + gated.tiles_skipped_dark == on.tiles_run
    assert run(mask_land=False).tiles_skipped_land == 0  # land detections kept: land tiles run
