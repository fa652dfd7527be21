"""Power sensors behind one interface: ``name``, ``kind``, ``rate_hz`` and ``read() -> Sample``.

Real sensors:

- :class:`Ina260Sensor`: the TI INA260 on the Kria KV260 SOM's 5 V input, through Linux hwmon
  sysfs (``/sys/class/hwmon/hwmon*/name`` is ``ina260_u14``; ``power1_input`` in µW,
  ``curr1_input`` in mA, ``in1_input`` in mV, as the Linux hwmon sysfs ABI defines the units).
  Read directly: ``pynq.get_rails()`` needs libsensors and often returns nothing on Kria.
- :class:`PynqRailSensor`: a rail from ``pynq.get_rails()`` where it does return rails (PYNQ is
  imported lazily, only when this sensor is built).
- :class:`RaplSensor`: Intel/AMD RAPL through Linux powercap
  (``/sys/class/powercap/intel-rapl:N/energy_uj``, a counter in µJ that wraps at
  ``max_energy_range_uj``); power is the energy difference between two reads over their time.

Sensors for tests and planning: :class:`ReplaySensor` (a recorded CSV trace), and
:class:`ScriptedSensor`, whose draw follows an :class:`Activity` signal (idle W, plus busy W while
the activity is busy). :class:`NullSensor` stands for "no power sensor on this host": it never
produces a number.

:func:`detect_sensor` picks the first that exists: INA260, PYNQ rails, RAPL, none. Every sysfs
path hangs off an injectable ``root``, so tests build fake trees under ``tmp_path`` with the exact
file formats. A sensor whose files vanish (or whose trace ends) raises :class:`SensorGone`; the
sampler then stops reading and the report says when.
"""

from __future__ import annotations

import bisect
import csv
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from sarvessel.runtime.power.clock import Clock, SystemClock
from sarvessel.runtime.power.errors import PowerError, SensorGone

log = logging.getLogger(__name__)

__all__ = [
    "INA260_HWMON_NAMES",
    "NO_SENSOR",
    "Activity",
    "Ina260Sensor",
    "NullSensor",
    "PowerSensor",
    "PynqRailSensor",
    "RaplSensor",
    "ReplaySensor",
    "Sample",
    "ScriptedSensor",
    "SensorKind",
    "detect_sensor",
    "find_ina260",
    "find_rapl_zones",
    "read_trace_csv",
]

#: What reports say when a host has no power sensor (never an invented number).
NO_SENSOR = "no power sensor on this host"
#: hwmon ``name`` of the KV260 SOM's input-power monitor.
INA260_HWMON_NAMES: tuple[str, ...] = ("ina260_u14",)
#: Sampling rate assumed when a sensor does not say its own (Hz).
DEFAULT_RATE_HZ = 10.0


@dataclass(frozen=True)
class Sample:
    """One reading. ``watts`` is None when the sensor cannot tell yet (RAPL's first read)."""

    #: Clock seconds of the reading (the clock the sensor was given).
    t: float
    #: Power (W), or None.
    watts: float | None
    #: Bus voltage (V), where the sensor gives it.
    volts: float | None = None
    #: Current (A), where the sensor gives it.
    amps: float | None = None
    #: Energy since the sensor's first read (J), counter wraps undone; None for sensors that
    #: only give instantaneous power (the trace integrates those).
    energy_j: float | None = None


class SensorKind(str, Enum):
    """Where a sensor's numbers come from."""

    INA260 = "ina260"
    PYNQ_RAIL = "pynq_rail"
    RAPL = "rapl"
    REPLAY = "replay"
    SCRIPTED = "scripted"
    NONE = "none"


@runtime_checkable
class PowerSensor(Protocol):
    """What the sampler and governor need of a sensor."""

    #: Names the sensor in reports (e.g. ``"ina260_u14 (hwmon2)"``).
    name: str
    kind: SensorKind
    #: How often a new reading exists (Hz); the sampler reads no faster.
    rate_hz: float

    def read(self) -> Sample:
        """One reading now; raises :class:`SensorGone` when the sensor has disappeared."""
        ...


def detect_sensor(
    root: Path = Path("/"),
    *,
    clock: Clock | None = None,
    use_pynq: bool | None = None,
    ina260_names: tuple[str, ...] = INA260_HWMON_NAMES,
) -> PowerSensor:
    """The best power sensor on this host: INA260 (hwmon), PYNQ rails, RAPL, else a NullSensor.

    root: filesystem root holding ``sys/class/...`` (tests pass a fake tree); the default is
    ``/``. use_pynq: try ``pynq.get_rails()``; the default (None) tries it only when ``root`` is
    ``/`` (PYNQ reads the real system). Never raises for a missing sensor.
    """
    clock = clock or SystemClock()
    root = Path(root)
    hw = find_ina260(root, names=ina260_names)
    if hw is not None:
        sensor: PowerSensor = Ina260Sensor(hw, clock=clock)
        log.info("power sensor: %s", sensor.name)
        return sensor
    if use_pynq if use_pynq is not None else root == Path("/"):
        try:
            sensor = PynqRailSensor(clock=clock)
        except PowerError as err:
            log.debug("no PYNQ rails: %s", err)
        else:
            log.info("power sensor: %s", sensor.name)
            return sensor
    reason = None
    zones = find_rapl_zones(root)
    if zones:
        try:
            sensor = RaplSensor(zones, clock=clock)
        except PermissionError as err:
            reason = (f"RAPL is present but {err.filename} is not readable by this user "
                      "(root only on kernels patched for CVE-2020-8694)")
            log.info("power: %s", reason)
        except PowerError as err:
            reason = f"RAPL is present but unusable: {err}"
            log.info("power: %s", reason)
        else:
            log.info("power sensor: %s", sensor.name)
            return sensor
    log.info("power: %s", NO_SENSOR)
    return NullSensor(reason=reason)


def find_ina260(root: Path = Path("/"), *, names: tuple[str, ...] = INA260_HWMON_NAMES
                ) -> Path | None:
    """The hwmon folder whose ``name`` is one of ``names`` (the default ``ina260_u14``)."""
    base = Path(root) / "sys" / "class" / "hwmon"
    for d in sorted(base.glob("hwmon*")):
        try:
            if (d / "name").read_text().strip() in names:
                return d
        except OSError:
            continue
    return None


def find_rapl_zones(root: Path = Path("/")) -> list[Path]:
    """Top-level RAPL powercap zones to sum: ``psys`` alone where it exists, else the packages.

    Sub-zones (``intel-rapl:0:0`` core, ``:1`` uncore/dram) are inside their package and the
    ``intel-rapl-mmio`` zones repeat a package through MMIO, so both are skipped to avoid
    counting energy twice; ``psys`` covers the whole platform, packages included.
    """
    base = Path(root) / "sys" / "class" / "powercap"
    zones = []
    for d in sorted(base.glob("intel-rapl:*")):
        if not re.fullmatch(r"intel-rapl:\d+", d.name) or not (d / "energy_uj").exists():
            continue
        try:
            name = (d / "name").read_text().strip()
        except OSError:
            name = d.name
        zones.append((name, d))
    psys = [d for name, d in zones if name == "psys"]
    return psys[:1] if psys else [d for _, d in zones]


def read_trace_csv(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """Times (s) and watts from a CSV whose header names a time and a power column.

    Accepted names: ``time_s``/``time``/``t`` and ``watts``/``power_w``/``w``; other columns
    (``energy_j``, ``tiles_done``) are ignored here. Rows with an empty power cell are skipped.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise PowerError(f"{path}: empty trace")
    header = [h.strip().lower() for h in rows[0]]
    ti = _column(header, ("time_s", "time", "t"), path)
    wi = _column(header, ("watts", "power_w", "w"), path)
    times, watts = [], []
    for n, row in enumerate(rows[1:], start=2):
        if len(row) <= max(ti, wi) or not row[wi].strip():
            continue
        try:
            times.append(float(row[ti]))
            watts.append(float(row[wi]))
        except ValueError as err:
            raise PowerError(f"{path}:{n}: {err}") from None
    t = np.asarray(times, np.float64)
    w = np.asarray(watts, np.float64)
    if len(t) < 2 or np.any(np.diff(t) <= 0) or not np.all(np.isfinite(w)):
        raise PowerError(f"{path}: a trace needs >= 2 rows with increasing times and finite "
                         "watts")
    return t, w


# ---------------------------------------------------------------------------------------------
# sensors


class NullSensor:
    """No power sensor: reads raise, reports say :data:`NO_SENSOR`."""

    kind = SensorKind.NONE
    rate_hz = 0.0

    def __init__(self, *, reason: str | None = None) -> None:
        self.name = "none"
        #: Why there is none, when something was found but could not be used.
        self.reason = reason

    @property
    def note(self) -> str:
        return NO_SENSOR + (f" ({self.reason})" if self.reason else "")

    def read(self) -> Sample:
        raise PowerError(self.note)


class Ina260Sensor:
    """TI INA260 through hwmon: ``power1_input`` µW, ``in1_input`` mV, ``curr1_input`` mA.

    hwmon_dir: the ``/sys/class/hwmon/hwmonN`` folder (:func:`find_ina260`). The rate is
    ``1000 / update_interval`` (ms) where the driver exposes ``update_interval``, else
    :data:`DEFAULT_RATE_HZ`. Where ``power1_input`` is missing, watts = volts × amps.
    """

    kind = SensorKind.INA260

    def __init__(self, hwmon_dir: Path, *, clock: Clock | None = None) -> None:
        self.path = Path(hwmon_dir)
        self.clock = clock or SystemClock()
        try:
            label = (self.path / "name").read_text().strip()
        except OSError as err:
            raise PowerError(f"{self.path}: not a hwmon device ({err})") from None
        self.name = f"{label} ({self.path.name})"
        self.rate_hz = DEFAULT_RATE_HZ
        try:
            ms = int((self.path / "update_interval").read_text().strip())
            if ms > 0:
                self.rate_hz = 1000.0 / ms
        except (OSError, ValueError):
            pass

    def read(self) -> Sample:
        t = self.clock.now()
        volts = self._value("in1_input", 1e-3)
        amps = self._value("curr1_input", 1e-3)
        watts = self._value("power1_input", 1e-6)
        if watts is None:
            if volts is None or amps is None:
                raise SensorGone(f"{self.name}: neither power1_input nor in1/curr1_input read")
            watts = volts * amps
        return Sample(t=t, watts=watts, volts=volts, amps=amps)

    def _value(self, name: str, scale: float) -> float | None:
        path = self.path / name
        try:
            text = _read_attr(path)
        except FileNotFoundError:
            if not self.path.exists():
                raise SensorGone(f"{self.name}: {self.path} disappeared") from None
            return None
        except OSError as err:  # ENODEV/EIO from a driver that went away
            raise SensorGone(f"{self.name}: {path}: {err}") from None
        try:
            return int(text.strip()) * scale
        except ValueError:
            raise SensorGone(f"{self.name}: {path} holds {text!r}, not an integer") from None


class RaplSensor:
    """Energy counters of RAPL powercap zones, summed; power = ΔE / Δt between reads.

    zones: powercap zone folders (:func:`find_rapl_zones`), each with ``energy_uj`` and
    ``max_energy_range_uj``. A counter that goes down wrapped: ``max_energy_range_uj`` is added.
    The first read gives ``watts=None`` (no interval yet). rate_hz: how often the sampler reads;
    the default is 10 (shorter intervals make the difference noisy).
    """

    kind = SensorKind.RAPL

    def __init__(self, zones: list[Path], *, clock: Clock | None = None,
                 rate_hz: float = DEFAULT_RATE_HZ) -> None:
        if not zones:
            raise PowerError("no RAPL zones given")
        self.zones = [Path(z) for z in zones]
        self.clock = clock or SystemClock()
        self.rate_hz = float(rate_hz)
        names = []
        self._range = []
        for z in self.zones:
            try:
                names.append((z / "name").read_text().strip())
            except OSError:
                names.append(z.name)
            try:
                self._range.append(int((z / "max_energy_range_uj").read_text().strip()))
            except (OSError, ValueError) as err:
                raise PowerError(f"{z}: max_energy_range_uj unreadable ({err})") from None
        self.name = "rapl (" + "+".join(names) + ")"
        self._last = [self._counter(z) for z in self.zones]  # PermissionError surfaces here
        self._total_uj = 0
        self._last_t: float | None = None

    def read(self) -> Sample:
        t = self.clock.now()
        now = [self._counter(z) for z in self.zones]
        for i, (a, b) in enumerate(zip(self._last, now, strict=True)):
            d = b - a
            if d < 0:  # the counter wrapped at max_energy_range_uj
                d += self._range[i]
            self._total_uj += d
        self._last = now
        energy = self._total_uj * 1e-6
        watts = None
        if self._last_t is not None and t > self._last_t:
            watts = (energy - self._last_energy) / (t - self._last_t)
        self._last_t, self._last_energy = t, energy
        return Sample(t=t, watts=watts, energy_j=energy)

    def _counter(self, zone: Path) -> int:
        path = zone / "energy_uj"
        try:
            return int(_read_attr(path))
        except PermissionError:
            raise
        except (OSError, ValueError) as err:
            raise SensorGone(f"{self.name if hasattr(self, 'name') else zone}: {path}: {err}"
                             ) from None


class PynqRailSensor:
    """One rail of ``pynq.get_rails()`` (each rail has ``power``/``voltage``/``current``
    sensors whose ``value`` is the reading).

    rail: the rail's name; the default picks the only rail with a power sensor, or else the one
    drawing most at construction (the input rail) and logs the choice. get_rails: the function
    to call; the default imports :mod:`pynq` here (never at module import).
    """

    kind = SensorKind.PYNQ_RAIL

    def __init__(self, rail: str | None = None, *, get_rails: Callable[[], Mapping] | None = None,
                 clock: Clock | None = None, rate_hz: float = DEFAULT_RATE_HZ) -> None:
        if get_rails is None:
            try:
                import pynq  # noqa: PLC0415 - optional, board only
            except ImportError as err:
                raise PowerError(f"pynq is not installed ({err})") from None
            get_rails = pynq.get_rails
        self.clock = clock or SystemClock()
        self.rate_hz = float(rate_hz)
        try:
            rails = dict(get_rails() or {})
        except Exception as err:  # noqa: BLE001 - PYNQ raises RuntimeError/OSError off-board
            raise PowerError(f"pynq.get_rails() failed: {err}") from None
        powered = {k: r for k, r in rails.items() if getattr(r, "power", None) is not None}
        if not powered:
            raise PowerError("pynq.get_rails() returned no rail with a power sensor")
        if rail is None:
            if len(powered) == 1:
                rail = next(iter(powered))
            else:
                rail = max(powered, key=lambda k: _value_or(powered[k].power, -math.inf))
                log.info("pynq rails %s: using %s, the one drawing most", sorted(powered), rail)
        if rail not in powered:
            raise PowerError(f"no PYNQ rail {rail!r} with power; rails: {sorted(powered)}")
        self._rail = powered[rail]
        self.name = f"pynq rail {rail}"

    def read(self) -> Sample:
        t = self.clock.now()
        try:
            watts = float(self._rail.power.value)
            volts = _value_or(getattr(self._rail, "voltage", None), None)
            amps = _value_or(getattr(self._rail, "current", None), None)
        except Exception as err:  # noqa: BLE001 - libsensors errors are not typed
            raise SensorGone(f"{self.name}: {err}") from None
        if not math.isfinite(watts):
            raise SensorGone(f"{self.name}: reading {watts}")
        return Sample(t=t, watts=watts, volts=volts, amps=amps)


class ReplaySensor:
    """Replays a recorded trace against the clock: time 0 of the trace is the first read.

    Watts are interpolated linearly between recorded points; past the end the sensor is gone
    (:class:`SensorGone`), unless ``loop`` replays it again. Build from arrays or with
    :meth:`from_csv`.
    """

    kind = SensorKind.REPLAY

    def __init__(self, times: np.ndarray, watts: np.ndarray, *, name: str = "replay",
                 clock: Clock | None = None, loop: bool = False) -> None:
        self.times = np.asarray(times, np.float64) - float(np.asarray(times)[0])
        self.watts = np.asarray(watts, np.float64)
        if len(self.times) < 2 or self.times.shape != self.watts.shape:
            raise PowerError("a replay needs >= 2 (time, watts) points of equal count")
        self.name = name
        self.clock = clock or SystemClock()
        self.loop = loop
        self.rate_hz = 1.0 / float(np.median(np.diff(self.times)))
        self._t0: float | None = None

    @classmethod
    def from_csv(cls, path: Path | str, *, clock: Clock | None = None, loop: bool = False
                 ) -> ReplaySensor:
        t, w = read_trace_csv(path)
        return cls(t, w, name=f"replay {Path(path).name}", clock=clock, loop=loop)

    def read(self) -> Sample:
        t = self.clock.now()
        if self._t0 is None:
            self._t0 = t
        rel = t - self._t0
        end = float(self.times[-1])
        if rel > end:
            if not self.loop:
                raise SensorGone(f"{self.name}: trace ended at {end:.3f} s")
            rel %= end
        return Sample(t=t, watts=float(np.interp(rel, self.times, self.watts)))


class Activity:
    """A busy counter with a clock: what the pipeline is doing, for :class:`ScriptedSensor`.

    ``begin()``/``end()`` (or ``with activity.busy():``) nest; the activity is busy while the
    count is above zero. :meth:`busy_time` integrates busy seconds exactly, so a scripted
    sensor's energy is exact whatever the read times. ``history`` keeps every (t, busy) change.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._count = 0
        self._since = 0.0
        self._total = 0.0
        self._lock = threading.Lock()
        #: (clock seconds, busy after the change) at every change.
        self.history: list[tuple[float, bool]] = []
        self._cum: list[float] = []  # busy seconds before each change

    @property
    def is_busy(self) -> bool:
        return self._count > 0

    def begin(self) -> None:
        with self._lock:
            if self._count == 0:
                self._since = self.clock.now()
                self.history.append((self._since, True))
                self._cum.append(self._total)
            self._count += 1

    def end(self) -> None:
        with self._lock:
            if self._count == 0:
                raise RuntimeError("Activity.end() without begin()")
            self._count -= 1
            if self._count == 0:
                t = self.clock.now()
                self._total += t - self._since
                self.history.append((t, False))
                self._cum.append(self._total)

    @contextmanager
    def busy(self) -> Iterator[None]:
        self.begin()
        try:
            yield
        finally:
            self.end()

    def busy_time(self, t: float | None = None) -> float:
        """Busy seconds from the start up to ``t`` (the default is now; earlier times are
        looked up in :attr:`history`)."""
        with self._lock:
            t = self.clock.now() if t is None else t
            if not self.history or t >= self.history[-1][0]:
                return self._total + (max(0.0, t - self._since) if self._count else 0.0)
            i = bisect.bisect_right(self.history, (t, True)) - 1
            if i < 0:
                return 0.0
            ti, busy = self.history[i]
            return self._cum[i] + (t - ti if busy else 0.0)


class ScriptedSensor:
    """Draw that follows an activity: ``idle_w`` always, plus ``busy_w`` while busy.

    Exact energy (``energy_j`` integrates the activity), so a governor test with a
    :class:`ManualClock` is deterministic. gone_at: clock seconds after which reads raise
    :class:`SensorGone` (to test a sensor that disappears); the default never. rate_hz: the
    default is 10.
    """

    kind = SensorKind.SCRIPTED

    def __init__(self, idle_w: float, busy_w: float, *, activity: Activity,
                 clock: Clock | None = None, rate_hz: float = DEFAULT_RATE_HZ,
                 gone_at: float | None = None, name: str | None = None) -> None:
        if idle_w < 0 or busy_w < 0:
            raise PowerError(f"draws must be >= 0 W, got idle {idle_w}, busy {busy_w}")
        self.idle_w = float(idle_w)
        self.busy_w = float(busy_w)
        self.activity = activity
        self.clock = clock or activity.clock
        self.rate_hz = float(rate_hz)
        self.gone_at = gone_at
        self.name = name or f"scripted ({idle_w:g} W idle + {busy_w:g} W busy)"
        self._t0: float | None = None
        self._b0 = 0.0

    def read(self) -> Sample:
        t = self.clock.now()
        if self.gone_at is not None and t >= self.gone_at:
            raise SensorGone(f"{self.name}: gone at {self.gone_at:g} s (scripted)")
        busy_t = self.activity.busy_time(t)
        if self._t0 is None:
            self._t0, self._b0 = t, busy_t
        energy = self.idle_w * (t - self._t0) + self.busy_w * (busy_t - self._b0)
        watts = self.idle_w + (self.busy_w if self.activity.is_busy else 0.0)
        return Sample(t=t, watts=watts, energy_j=energy)


# ---------------------------------------------------------------------------------------------
# helpers


def _read_attr(path: Path) -> str:
    """One sysfs attribute as text, through bare ``os.open``/``os.read`` (a third of the cost
    of ``Path.read_text``; the sampler reads three per sample). Opened afresh each time: a
    removed device then fails here instead of serving a stale open file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 64).decode("ascii", "replace")
    finally:
        os.close(fd)


def _column(header: list[str], names: tuple[str, ...], path: Path) -> int:
    for n in names:
        if n in header:
            return header.index(n)
    raise PowerError(f"{path}: no column named one of {names} in header {header}")


def _value_or(sensor: Any, default: float | None) -> float | None:
    if sensor is None:
        return default
    value = getattr(sensor, "value", None)
    return default if value is None else float(value)
