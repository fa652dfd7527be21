"""The governor wired into the real scene pipeline: a scripted sensor whose draw rises while the
backend works, a manual clock the backend advances (no real sleeps)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from sarvessel.runtime.detect import detect_scene
from sarvessel.runtime.detections import Detections
from sarvessel.runtime.pipeline import PipelineConfig
from sarvessel.runtime.power import (
    Activity,
    ManualClock,
    PowerBudgetError,
    PowerGovernor,
    ScriptedSensor,
    max_window_average,
)
from tests.runtime.conftest import bright_pixel_detections

IDLE_W, BUSY_W, WINDOW_S = 4.0, 6.0, 5.0
TARGETS = [(40, 50), (300, 700), (700, 130), (900, 900)]


class ClockedBrightest:
    """Reports every 255 pixel of channel 0; each call takes 1 s per tile on ``clock``."""

    name = "clocked"
    fingerprint = "clocked"
    channels = 2
    tile_size = 256

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock

    def infer(self, batch: np.ndarray) -> list[Detections]:
        self.clock.advance(1.0 * len(batch))
        return bright_pixel_detections(batch)


def _scene(root: Path) -> Path:
    rng = np.random.default_rng(0)
    vv = rng.normal(-22.0, 1.5, (1000, 1000)).astype(np.float32)
    for r, c in TARGETS:
        vv[r, c] = 25.0  # maps to 255
    folder = root / "scene"
    folder.mkdir(parents=True)
    tifffile.imwrite(folder / "VV_dB.tif", vv, tile=(256, 256))
    tifffile.imwrite(folder / "VH_dB.tif", vv - 8, tile=(256, 256))
    return folder


def _governor(budget: float | None) -> tuple[PowerGovernor, ManualClock, Activity]:
    clock = ManualClock(100.0)
    act = Activity(clock)
    sensor = ScriptedSensor(IDLE_W, BUSY_W, activity=act, clock=clock)
    return PowerGovernor(sensor, budget, WINDOW_S, clock=clock, activity=act), clock, act


def _run(tmp_path: Path, name: str, budget: float | None):
    gov, clock, act = _governor(budget)
    cfg = PipelineConfig(overlap=0, batch_size=2, mask_land=False)
    with gov:
        res, paths = detect_scene(_scene(tmp_path / name), ClockedBrightest(clock),
                                  out_dir=tmp_path / name / "out", config=cfg, governor=gov)
    return res, paths, gov, act


def test_a_budget_under_the_unthrottled_draw_paces_the_scene_and_changes_no_detection(
        tmp_path: Path) -> None:
    free, free_paths, free_gov, _ = _run(tmp_path, "free", None)
    free_w = free.power.average_w
    assert free_w is not None and free_w > IDLE_W + 1  # busy most of the time
    budget = IDLE_W + 0.5 * (free_w - IDLE_W)
    res, paths, gov, act = _run(tmp_path, "paced", budget)
    # the same detections, every tile run
    assert paths["csv"].read_text() == free_paths["csv"].read_text()
    assert res.tiles_run == free.tiles_run == 16
    # the true draw (the activity log) stays under the budget over every window after warm-up
    t = np.unique([gov.started_at, *[h[0] for h in act.history], gov.stopped_at])
    e = np.array([IDLE_W * (x - t[0]) + BUSY_W * (act.busy_time(x) - act.busy_time(t[0]))
                  for x in t])
    worst, _ = max_window_average(t, e, WINDOW_S, start=gov.batches[0].t1)
    assert worst <= budget + 1e-9
    # the slowdown is reported, in the summary JSON and the timings
    summary = json.loads(paths["json"].read_text(), parse_constant=lambda c: 1 / 0)
    power = summary["power"]
    assert power["budget_w"] == pytest.approx(budget) and power["throttled_s"] > 0
    assert power["within_budget"] is True and power["sensor"] == gov.sensor.name
    assert summary["timings_s"]["throttle"] >= 0
    assert paths["power_png"].is_file() and paths["power_png"].stat().st_size > 1000
    assert free_gov.pauses == []


def test_a_budget_under_idle_fails_before_any_tile_runs(tmp_path: Path) -> None:
    gov, clock, _ = _governor(IDLE_W - 0.5)
    with pytest.raises(PowerBudgetError, match="below the measured idle draw 4.00 W"), gov:
        detect_scene(_scene(tmp_path), ClockedBrightest(clock), out_dir=tmp_path / "out",
                     governor=gov)
    assert not (tmp_path / "out").exists()
