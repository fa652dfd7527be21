"""Sensors against fake sysfs trees: exact formats, wrap-around, a sensor that disappears."""

from __future__ import annotations

import os
import shutil
import sys
import types
from pathlib import Path

import pytest

from sarvessel.runtime.power import (
    NO_SENSOR,
    Activity,
    Ina260Sensor,
    ManualClock,
    NullSensor,
    PowerError,
    PynqRailSensor,
    RaplSensor,
    ReplaySensor,
    Sampler,
    ScriptedSensor,
    SensorGone,
    SensorKind,
    detect_sensor,
)
from sarvessel.runtime.power.sensors import find_rapl_zones


def test_ina260_reads_microwatts_milliamps_millivolts(tmp_path: Path, make_hwmon) -> None:
    make_hwmon(0, "cpu_thermal")
    make_hwmon(2, "ina260_u14", power_uw=4825000, curr_ma=965, in_mv=5002, interval_ms=35)
    clock = ManualClock(3.0)
    s = detect_sensor(tmp_path, clock=clock)
    assert isinstance(s, Ina260Sensor) and s.kind is SensorKind.INA260
    assert s.name == "ina260_u14 (hwmon2)"
    assert s.rate_hz == pytest.approx(1000 / 35)
    r = s.read()
    assert (r.t, r.watts, r.volts, r.amps) == (3.0, pytest.approx(4.825),
                                                pytest.approx(5.002), pytest.approx(0.965))
    assert r.energy_j is None


def test_ina260_without_power_attribute_multiplies_volts_and_amps(tmp_path, make_hwmon) -> None:
    d = make_hwmon(1, "ina260_u14", curr_ma=1000, in_mv=5000)
    assert Ina260Sensor(d, clock=ManualClock()).read().watts == pytest.approx(5.0)


def test_other_hwmon_names_are_not_taken_for_the_ina260(tmp_path, make_hwmon) -> None:
    make_hwmon(0, "ina226_u1", power_uw=1000000)
    assert detect_sensor(tmp_path).kind is SensorKind.NONE


def test_ina260_that_disappears_stops_readings_and_the_run_goes_on(tmp_path, make_hwmon,
                                                                   set_attr) -> None:
    d = make_hwmon(2, "ina260_u14", power_uw=5000000, curr_ma=1000, in_mv=5000)
    clock = ManualClock()
    sampler = Sampler(detect_sensor(tmp_path, clock=clock), clock=clock)
    for watts_uw in (5000000, 6000000, 7000000):
        set_attr(d / "power1_input", watts_uw)
        assert sampler.poll() is not None
        clock.advance(0.1)
    shutil.rmtree(d)  # the device is unbound mid-run
    assert sampler.poll() is None
    assert sampler.trace.gone_at == pytest.approx(0.3)
    assert "disappeared" in sampler.trace.gone_reason
    assert not sampler.available
    clock.advance(0.1)
    assert sampler.poll() is None  # no more reads, no exception
    assert len(sampler.trace) == 3
    # trapezoid energy over the three readings: (5+6)/2*0.1 + (6+7)/2*0.1
    assert sampler.trace.energy_at_time(0.2) == pytest.approx(1.2)


def test_ina260_garbage_or_driver_error_counts_as_gone(tmp_path, make_hwmon, set_attr) -> None:
    d = make_hwmon(2, "ina260_u14", power_uw=5000000)
    s = Ina260Sensor(d, clock=ManualClock())
    set_attr(d / "power1_input", "")
    with pytest.raises(SensorGone, match="not an integer"):
        s.read()


def test_rapl_power_is_energy_difference_over_time_and_wraps(tmp_path, make_rapl,
                                                            set_attr) -> None:
    z = make_rapl("intel-rapl:0", "package-0", energy_uj=999_000_000, max_uj=1_000_000_000)
    make_rapl("intel-rapl:0:0", "core", energy_uj=5)  # sub-zone: inside the package
    make_rapl("intel-rapl-mmio:0", "package-0", energy_uj=7)  # same package through MMIO
    clock = ManualClock(10.0)
    s = detect_sensor(tmp_path, clock=clock)
    assert isinstance(s, RaplSensor) and s.name == "rapl (package-0)"
    first = s.read()
    assert first.watts is None and first.energy_j == 0.0
    clock.advance(0.5)
    set_attr(z / "energy_uj", 3_000_000)  # wrapped: 1 J to the top, then 3 J
    r = s.read()
    assert r.energy_j == pytest.approx(4.0)
    assert r.watts == pytest.approx(8.0)
    clock.advance(0.5)
    set_attr(z / "energy_uj", 5_000_000)
    assert s.read().watts == pytest.approx(4.0)


def test_rapl_sums_packages_but_takes_psys_alone(tmp_path, make_rapl) -> None:
    make_rapl("intel-rapl:0", "package-0", 1)
    make_rapl("intel-rapl:1", "package-1", 1)
    assert [p.name for p in find_rapl_zones(tmp_path)] == ["intel-rapl:0", "intel-rapl:1"]
    make_rapl("intel-rapl:2", "psys", 1)
    assert [p.name for p in find_rapl_zones(tmp_path)] == ["intel-rapl:2"]


def test_rapl_zone_that_disappears_raises_sensor_gone(tmp_path, make_rapl) -> None:
    z = make_rapl("intel-rapl:0", "package-0", 100)
    clock = ManualClock()
    sampler = Sampler(RaplSensor([z], clock=clock), clock=clock)
    sampler.poll()
    clock.advance(1.0)
    (z / "energy_uj").unlink()
    assert sampler.poll() is None
    assert sampler.trace.gone_at == 1.0 and "energy_uj" in sampler.trace.gone_reason


def test_unreadable_rapl_gives_no_sensor_with_the_reason(tmp_path, make_rapl, monkeypatch
                                                         ) -> None:
    make_rapl("intel-rapl:0", "package-0", 100)
    real = os.open

    def deny(path, flags, *a, **k):  # what a non-root user meets on a patched kernel
        if Path(path).name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", deny)
    s = detect_sensor(tmp_path)
    assert isinstance(s, NullSensor)
    assert s.note.startswith(NO_SENSOR) and "CVE-2020-8694" in s.note


def test_ina260_is_preferred_over_rapl_and_empty_tree_has_none(tmp_path, make_hwmon,
                                                              make_rapl) -> None:
    assert detect_sensor(tmp_path).kind is SensorKind.NONE
    make_rapl("intel-rapl:0", "package-0", 100)
    assert detect_sensor(tmp_path).kind is SensorKind.RAPL
    make_hwmon(3, "ina260_u14", power_uw=1)
    assert detect_sensor(tmp_path).kind is SensorKind.INA260


def test_no_sensor_never_invents_a_number() -> None:
    s = NullSensor()
    with pytest.raises(PowerError, match=NO_SENSOR):
        s.read()
    sampler = Sampler(s)
    assert sampler.poll() is None and len(sampler.trace) == 0


class _Reading:
    def __init__(self, value: float | None) -> None:
        self.value = value


class _Rail:
    def __init__(self, watts: float, volts: float | None = None) -> None:
        self.power = _Reading(watts)
        self.voltage = _Reading(volts)
        self.current = None


def test_pynq_rails_are_imported_lazily_and_the_largest_rail_is_taken(tmp_path, monkeypatch
                                                                      ) -> None:
    fake = types.ModuleType("pynq")
    fake.get_rails = lambda: {"VCCINT": _Rail(1.2), "5V": _Rail(4.9, 5.0), "temp": object()}
    monkeypatch.setitem(sys.modules, "pynq", fake)
    s = detect_sensor(tmp_path, use_pynq=True, clock=ManualClock())
    assert isinstance(s, PynqRailSensor) and s.name == "pynq rail 5V"
    r = s.read()
    assert r.watts == pytest.approx(4.9) and r.volts == 5.0 and r.amps is None


def test_pynq_with_no_rails_falls_through(tmp_path, monkeypatch) -> None:
    fake = types.ModuleType("pynq")
    fake.get_rails = dict  # what Kria often returns: nothing
    monkeypatch.setitem(sys.modules, "pynq", fake)
    assert detect_sensor(tmp_path, use_pynq=True).kind is SensorKind.NONE
    with pytest.raises(PowerError, match="no rail"):
        PynqRailSensor(get_rails=dict)


def test_replay_interpolates_then_ends(tmp_path: Path) -> None:
    csv = tmp_path / "trace.csv"
    csv.write_text("time_s,watts\n0,4\n1,6\n2,6\n")
    clock = ManualClock(50.0)
    s = ReplaySensor.from_csv(csv, clock=clock)
    assert s.read().watts == 4.0
    clock.advance(0.5)
    assert s.read().watts == pytest.approx(5.0)
    clock.advance(2.0)
    with pytest.raises(SensorGone, match="ended"):
        s.read()


def test_replay_rejects_unordered_times(tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("time,watts\n0,4\n0,5\n")
    with pytest.raises(PowerError, match="increasing"):
        ReplaySensor.from_csv(csv)


def test_scripted_sensor_energy_follows_the_activity_exactly() -> None:
    clock = ManualClock()
    act = Activity(clock)
    s = ScriptedSensor(4.0, 6.0, activity=act)
    assert s.read().watts == 4.0
    clock.advance(1.0)
    with act.busy():
        clock.advance(0.25)
        assert s.read().watts == 10.0
        clock.advance(0.25)
    clock.advance(1.0)
    r = s.read()
    assert r.watts == 4.0
    assert r.energy_j == pytest.approx(4.0 * 2.5 + 6.0 * 0.5)
