"""Energy report JSON, the power-trace PNG, the KV260 model: projection and fit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from sarvessel.runtime.power import (
    KV260_PUBLISHED,
    PAPER_CLAIM,
    Activity,
    EnergyReport,
    ManualClock,
    PowerError,
    PowerGovernor,
    PowerModel,
    ScriptedSensor,
    project_scene,
    write_power_trace_png,
    write_trace_csv,
)
from sarvessel.runtime.power.model import fit_from_trace_csv, format_projection, tiles_in_scene


def _run(tmp_path: Path, *, budget: float | None, batches: int = 40
         ) -> tuple[PowerGovernor, ManualClock]:
    clock = ManualClock()
    act = Activity(clock)
    sensor = KV260_PUBLISHED.scripted_sensor(act, tiles_per_s=40.0, clock=clock)
    with PowerGovernor(sensor, budget, 2.0, clock=clock, activity=act) as gov:
        for b in range(batches):
            with gov.batch(8):
                clock.advance(0.2)  # 8 tiles at 40 tiles/s
            clock.advance(0.3 if b % 4 else 1.5)  # host work; a slow row end now and then
            if b % 4 == 3:
                gov.mark_row(b // 4)
    return gov, clock


def test_report_to_dict_is_strict_json_and_nan_becomes_null() -> None:
    rep = EnergyReport(sensor="x", sensor_kind="scripted", samples=3, duration_s=1.0,
                       energy_j=math.nan, average_w=math.inf, peak_w=5.0, notes=["n"])
    d = rep.to_dict()
    assert d["energy_j"] is None and d["average_w"] is None and d["peak_w"] == 5.0
    assert json.loads(json.dumps(d, allow_nan=False)) == d


def test_power_trace_png_and_csv(tmp_path: Path) -> None:
    gov, _ = _run(tmp_path, budget=4.5)
    assert gov.pauses, "a 4.5 W budget on this stream (4.83 W busy) must throttle"
    png = write_power_trace_png(tmp_path / "power.png", gov.sampler.trace,
                                start=gov.started_at, budget_w=gov.budget_w, idle_w=gov.idle_w,
                                window_s=gov.window_s, rows=gov.rows, pauses=gov.pauses,
                                title="scene x")
    with Image.open(png) as im:
        assert im.size == (1200, 480) and im.format == "PNG"
        assert (210, 30, 30) in {c for _, c in im.getcolors(1 << 16)}  # the budget line
    csv = write_trace_csv(tmp_path / "power.csv", gov.sampler.trace, tile_marks=gov.tile_marks)
    header, *rows = csv.read_text().splitlines()
    assert header == "time_s,watts,energy_j,tiles_done"
    assert rows[0].startswith("0.000000,") and rows[-1].endswith(",320")


def test_fit_from_a_recorded_trace_recovers_idle_and_joules_per_tile(tmp_path: Path) -> None:
    gov, _ = _run(tmp_path, budget=None, batches=60)
    csv = write_trace_csv(tmp_path / "t.csv", gov.sampler.trace, tile_marks=gov.tile_marks)
    known = fit_from_trace_csv(csv, idle_w=gov.idle_w)
    assert known.idle_w == pytest.approx(KV260_PUBLISHED.idle_w)
    assert known.joules_per_tile == pytest.approx(KV260_PUBLISHED.joules_per_tile, rel=1e-6)
    assert not known.estimate
    free = fit_from_trace_csv(csv, window_s=0.5)
    assert free.idle_w == pytest.approx(KV260_PUBLISHED.idle_w, rel=0.05)
    assert free.joules_per_tile == pytest.approx(KV260_PUBLISHED.joules_per_tile, rel=0.25)


def test_fit_refuses_a_trace_at_one_rate_without_idle() -> None:
    with pytest.raises(PowerError, match="pass idle_w"):
        from sarvessel.runtime.power import fit_from_trace

        fit_from_trace([0, 1, 2, 3, 4], [0, 5, 10, 15, 20], [0, 10, 20, 30, 40])


def test_projection_for_a_700_mpx_scene() -> None:
    side = round(math.sqrt(700e6))
    assert tiles_in_scene(side, side) == 59 * 59
    p = project_scene(KV260_PUBLISHED, 20.0)
    assert p.tiles == 3481 and p.estimate
    assert p.seconds == pytest.approx(3481 / 20)
    assert p.joules == pytest.approx(4.3 * p.seconds + KV260_PUBLISHED.joules_per_tile * 3481)
    assert p.watts == pytest.approx(4.3 + KV260_PUBLISHED.joules_per_tile * 20)
    line = format_projection(p)
    assert "estimate" in line and "< 10 W, < 1 min" in line
    assert PAPER_CLAIM["joules_below"] == 600.0
    assert "2507.04842" in KV260_PUBLISHED.source


def test_model_scales_per_tile_energy_with_tile_area() -> None:
    m = PowerModel(4.0, 0.01, tile_size=512)
    assert m.for_tile_size(1024).joules_per_tile == pytest.approx(0.04)
    assert m.watts(50.0) == pytest.approx(4.5)
    assert isinstance(m.scripted_sensor(Activity(ManualClock()), 10.0), ScriptedSensor)
