"""The governor with a scripted sensor and a manual clock: deterministic, no real sleeps.

The truth each test checks against is the :class:`Activity` log (exact piecewise-constant
power), not the governor's own readings.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from sarvessel.runtime.power import (
    Activity,
    ManualClock,
    NullSensor,
    PowerBudgetError,
    PowerGovernor,
    PynqFabricClock,
    ScriptedSensor,
    SystemClock,
    max_window_average,
)

IDLE_W, BUSY_W = 4.0, 6.0  # 10 W while a batch runs
WINDOW_S = 5.0


def _true_energy(act: Activity, t_end: float) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative energy of the scripted draw at every activity change (exact)."""
    t0 = act.clock_start
    times = np.unique([t0, *[t for t, _ in act.history if t >= t0], t_end])
    energy = np.array([IDLE_W * (t - t0) + BUSY_W * (act.busy_time(t) - act.busy_time(t0))
                       for t in times])
    return times, energy


def _stream(gov: PowerGovernor | None, clock: ManualClock, act: Activity, n_batches: int = 80,
            *, tiles: int = 4, busy_s: float = 0.4, host_s: float = 0.1) -> list[int]:
    """Batches of a fake pipeline: host work between batches, a backend whose output depends
    only on its input (so any reorder or drop would show)."""
    outputs = []
    for b in range(n_batches):
        n = tiles if b % 10 else 2  # a short batch now and then (row ends)
        batch = np.arange(b * tiles, b * tiles + n)
        if gov is not None:
            gov.before_batch(n)
        else:
            act.begin()
        clock.advance(busy_s * n / tiles)  # the accelerator works
        outputs.append(int((batch * batch).sum()))
        if gov is not None:
            gov.after_batch(n)
            if b % 8 == 7:
                gov.mark_row(b // 8)
        else:
            act.end()
        clock.advance(host_s)  # pre/post-processing on the CPU, idle draw
    return outputs


def _setup(start: float = 100.0) -> tuple[ManualClock, Activity, ScriptedSensor]:
    clock = ManualClock(start)
    act = Activity(clock)
    act.clock_start = start  # type: ignore[attr-defined]
    return clock, act, ScriptedSensor(IDLE_W, BUSY_W, activity=act, clock=clock)


def _unthrottled_average() -> tuple[float, list[int], float]:
    clock, act, _ = _setup()
    t0 = clock.now()
    out = _stream(None, clock, act)
    t, e = _true_energy(act, clock.now())
    return (e[-1] - e[0]) / (t[-1] - t[0]), out, clock.now() - t0


def test_budget_below_the_unthrottled_average_is_held_over_every_window() -> None:
    free_avg, free_out, free_s = _unthrottled_average()
    budget = 0.75 * free_avg  # ~6.4 W against ~8.5 W unthrottled
    assert IDLE_W < budget < free_avg
    clock, act, sensor = _setup()
    with PowerGovernor(sensor, budget, WINDOW_S, clock=clock, activity=act) as gov:
        t_run = clock.now()
        out = _stream(gov, clock, act)
    rep = gov.report(megapixels=20.0)

    # every batch ran, in order, with the same results
    assert out == free_out
    assert rep.batches == 80 and rep.tiles == sum(4 if b % 10 else 2 for b in range(80))
    # the truth: no window after warm-up (windows starting after the probe batch) over budget
    t, e = _true_energy(act, clock.now())
    worst, at = max_window_average(t, e, WINDOW_S, start=gov.batches[0].t1)
    assert worst <= budget + 1e-9, f"{worst:.3f} W over {WINDOW_S} s ending at {at}"
    assert worst > IDLE_W + 0.8 * (budget - IDLE_W)  # and it does not waste the budget
    # the slowdown is reported, and agrees with the wall time
    run_s = clock.now() - t_run
    assert rep.throttled_s > 0 and rep.pauses > 0
    assert rep.throttled_s == pytest.approx(run_s - free_s, abs=1e-6)
    assert rep.slowdown_percent == pytest.approx(100 * rep.throttled_s / free_s, rel=1e-6)
    assert rep.within_budget is True
    assert rep.max_window_w == pytest.approx(worst, abs=1e-6)
    assert rep.average_w <= budget
    assert rep.idle_w == pytest.approx(IDLE_W)
    assert rep.peak_w == pytest.approx(IDLE_W + BUSY_W)
    assert rep.joules_per_mpx == pytest.approx(rep.energy_j / 20.0)
    assert rep.energy_j == pytest.approx(e[-1] - np.interp(gov.started_at, t, e), rel=1e-9)
    json.dumps(rep.to_dict(), allow_nan=False)
    # never pauses forever
    assert all(0 < p.seconds <= WINDOW_S for p in gov.pauses)


def test_budget_above_the_unthrottled_draw_never_pauses() -> None:
    clock, act, sensor = _setup()
    with PowerGovernor(sensor, 9.9, WINDOW_S, clock=clock, activity=act) as gov:
        _stream(gov, clock, act, 30)
    assert gov.pauses == [] and gov.report().throttled_s == 0.0


def test_budget_under_idle_fails_at_start_naming_both_numbers() -> None:
    clock, act, sensor = _setup()
    gov = PowerGovernor(sensor, 3.5, WINDOW_S, clock=clock, activity=act)
    with pytest.raises(PowerBudgetError, match=r"budget 3\.50 W is below the measured idle "
                                               r"draw 4\.00 W"):
        gov.start()


def test_budget_without_a_sensor_fails_at_start() -> None:
    with pytest.raises(PowerBudgetError, match="needs a power sensor: no power sensor on this"):
        PowerGovernor(NullSensor(), 8.0, clock=ManualClock()).start()


def test_without_a_sensor_and_without_a_budget_the_report_says_so() -> None:
    clock = ManualClock()
    with PowerGovernor(NullSensor(), None, clock=clock) as gov:
        gov.before_batch(2)
        clock.advance(1.0)
        gov.after_batch(2)
    d = gov.report(megapixels=1.0).to_dict()
    assert d["notes"] == ["no power sensor on this host"]
    assert d["energy_j"] is None and d["average_w"] is None and d["samples"] == 0
    assert d["tiles"] == 2
    json.dumps(d, allow_nan=False)


def test_sensor_that_disappears_mid_run_keeps_the_stream_going_and_is_reported(caplog) -> None:
    clock, act, _ = _setup()
    sensor = ScriptedSensor(IDLE_W, BUSY_W, activity=act, clock=clock, gone_at=120.0)
    budget = 6.5
    with caplog.at_level(logging.WARNING), PowerGovernor(sensor, budget, WINDOW_S, clock=clock,
                                                          activity=act) as gov:
        out = _stream(gov, clock, act)
    assert len(out) == 80 and len(gov.batches) == 80
    assert "disappeared" in caplog.text
    rep = gov.report(megapixels=20.0)
    assert rep.measured_until_s is not None and rep.measured_until_s < rep.duration_s
    assert rep.joules_per_scene is None and rep.joules_per_mpx is None  # not a full measure
    assert any("disappeared at t=" in n for n in rep.notes)
    # after the sensor went, the governor paced on its model (idle + batch W): still held
    t, e = _true_energy(act, clock.now())
    worst, _ = max_window_average(t, e, WINDOW_S, start=gov.batches[0].t1)
    assert worst <= budget + 1e-9


class _FakeClocks:
    """Stands in for ``pynq.ps.Clocks`` (class attributes fclk0_mhz..fclk3_mhz)."""

    fclk0_mhz = 200.0


def test_one_batch_over_budget_lowers_the_fabric_clock_and_restores_it(caplog) -> None:
    clock, act, sensor = _setup()
    fabric = PynqFabricClock(0, clocks=_FakeClocks)
    with caplog.at_level(logging.WARNING), PowerGovernor(
            sensor, 5.0, 1.0, clock=clock, activity=act, fabric_clock=fabric) as gov:
        for _ in range(6):
            with gov.batch(8):
                clock.advance(1.5)  # one batch is longer than the window at 10 W
    assert "exceeds the budget" in caplog.text
    mhz = [m for _, m in gov.clock_changes]
    assert mhz[:3] == [160.0, 128.0, 102.4] and min(mhz) == 100.0  # floor: half the start
    assert _FakeClocks.fclk0_mhz == 200.0 and mhz[-1] == 200.0  # restored at stop
    rep = gov.report()
    assert rep.clock_changes[-1][1] == 200.0
    assert any("exceeds the budget" in n for n in rep.notes)


def test_recording_only_governor_measures_idle_and_energy() -> None:
    clock, act, sensor = _setup()
    with PowerGovernor(sensor, None, clock=clock, activity=act) as gov:
        _stream(gov, clock, act, 10)
    rep = gov.report()
    assert rep.budget_w is None and rep.within_budget is None and rep.pauses == 0
    assert rep.idle_w == pytest.approx(IDLE_W)
    assert len(gov.rows) == 1


def test_sampler_thread_runs_with_the_system_clock() -> None:
    clock = SystemClock()
    act = Activity(clock)
    sensor = ScriptedSensor(IDLE_W, BUSY_W, activity=act, clock=clock, rate_hz=200.0)
    gov = PowerGovernor(sensor, None, clock=clock, activity=act, idle_s=0.05)
    with gov, gov.batch(1):
        clock.sleep(0.2)
    cost = gov.sampler.cost()
    assert cost.samples >= 5 and cost.cpu_s >= 0.0
    assert gov.report().peak_w == pytest.approx(IDLE_W + BUSY_W)


class TickingClock(ManualClock):
    """A manual clock that also moves 1 µs at every reading, as a real clock does between two
    calls: the governor once measured no batch energy on a real clock (it read the clock after
    the batch's closing sample, one tick past the trace), so it never paced."""

    def now(self) -> float:
        self.advance(1e-6)
        return super().now()


def test_a_clock_that_moves_between_readings_still_paces() -> None:
    clock = TickingClock(100.0)
    act = Activity(clock)
    act.clock_start = 100.0  # type: ignore[attr-defined]
    sensor = ScriptedSensor(IDLE_W, BUSY_W, activity=act, clock=clock)
    with PowerGovernor(sensor, 6.5, WINDOW_S, clock=clock, activity=act) as gov:
        _stream(gov, clock, act, 40)
    assert gov.pauses and all(b.energy_j is not None for b in gov.batches)
    assert gov.report().max_window_w <= 6.5 + 1e-6
