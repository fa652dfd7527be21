"""Recorded power: a :class:`PowerTrace` of timestamped samples, and the :class:`Sampler` thread
that fills it at the sensor's rate.

The trace keeps cumulative energy beside each sample: from the sensor's own counter where it has
one (RAPL, scripted), else integrated from the watts by the trapezoid rule (INA260, PYNQ,
replay). Energy over any interval is then a difference of two interpolated values, and the
moving average over a window is ``(E(t) - E(t - window)) / window``
(:func:`max_window_average`).
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarvessel.runtime.io.outputs import atomic_open
from sarvessel.runtime.power.clock import Clock, SystemClock
from sarvessel.runtime.power.errors import PowerError, SensorGone
from sarvessel.runtime.power.sensors import (
    DEFAULT_RATE_HZ,
    NO_SENSOR,
    PowerSensor,
    Sample,
    SensorKind,
)

log = logging.getLogger(__name__)

__all__ = [
    "MAX_SAMPLER_RATE_HZ",
    "PowerTrace",
    "Sampler",
    "SamplerCost",
    "max_window_average",
    "measure_sampler_cost",
    "write_trace_csv",
]

#: The sampler never reads faster than this (Hz), whatever the sensor offers: the INA260's
#: hwmon conversion rate is far above what pacing needs, and each read costs CPU on the A53s.
MAX_SAMPLER_RATE_HZ = 20.0


class PowerTrace:
    """Samples in time order with cumulative energy; safe to append from the sampler thread.

    Samples that do not advance time are dropped (two polls in the same instant).
    """

    def __init__(self) -> None:
        self._t: list[float] = []
        self._w: list[float] = []
        self._e: list[float] = []
        self._base: float | None = None
        self._lock = threading.Lock()
        #: Clock seconds when the sensor disappeared, if it did.
        self.gone_at: float | None = None
        #: Why it disappeared (the sensor's message).
        self.gone_reason: str | None = None

    def __len__(self) -> int:
        return len(self._t)

    def add(self, s: Sample) -> None:
        w = math.nan if s.watts is None else float(s.watts)
        with self._lock:
            if self._t and s.t <= self._t[-1]:
                return
            if s.energy_j is not None:
                if self._base is None:
                    self._base = float(s.energy_j) - (self._e[-1] if self._e else 0.0)
                e = float(s.energy_j) - self._base
            elif not self._t:
                e = 0.0
            else:
                prev = self._w[-1]
                if math.isnan(prev) or math.isnan(w):
                    held = w if math.isnan(prev) else prev
                    e = self._e[-1] + (0.0 if math.isnan(held) else held) * (s.t - self._t[-1])
                else:
                    e = self._e[-1] + 0.5 * (prev + w) * (s.t - self._t[-1])
            self._t.append(float(s.t))
            self._w.append(w)
            self._e.append(e)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of (times s, watts W with NaN where unknown, cumulative energy J)."""
        with self._lock:
            return (np.asarray(self._t, np.float64), np.asarray(self._w, np.float64),
                    np.asarray(self._e, np.float64))

    @property
    def start(self) -> float | None:
        return self._t[0] if self._t else None

    @property
    def end(self) -> float | None:
        return self._t[-1] if self._t else None

    def energy_at_time(self, t: float) -> float:
        """Cumulative energy (J) at one clock time, interpolated (O(log n), no copy); clamped
        to the trace's ends."""
        with self._lock:
            if not self._t:
                raise PowerError("empty power trace")
            i = bisect.bisect_left(self._t, t)
            if i == 0:
                return self._e[0]
            if i == len(self._t):
                return self._e[-1]
            t0, t1 = self._t[i - 1], self._t[i]
            e0, e1 = self._e[i - 1], self._e[i]
            return e0 + (e1 - e0) * (t - t0) / (t1 - t0)

    def energy_at(self, t: float | np.ndarray) -> float | np.ndarray:
        """Cumulative energy (J) at clock time(s) ``t``, interpolated; clamped to the trace."""
        times, _, energy = self.arrays()
        if len(times) == 0:
            raise PowerError("empty power trace")
        return np.interp(t, times, energy)

    def mean_watts(self, t0: float, t1: float) -> float:
        """Average power over [t0, t1] (inside the trace), from the cumulative energy."""
        if t1 <= t0:
            raise ValueError(f"empty interval [{t0}, {t1}]")
        return float(self.energy_at(t1) - self.energy_at(t0)) / (t1 - t0)


@dataclass
class SamplerCost:
    """CPU the sampler thread used: what "cheap enough to be always on" is measured by."""

    sensor: str
    rate_hz: float
    samples: int
    wall_s: float
    cpu_s: float

    @property
    def cpu_percent_of_one_core(self) -> float:
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def cpu_us_per_sample(self) -> float:
        return 1e6 * self.cpu_s / self.samples if self.samples else math.nan

    def to_dict(self) -> dict:
        return {"sensor": self.sensor, "rate_hz": round(self.rate_hz, 3), "samples": self.samples,
                "wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 6),
                "cpu_percent_of_one_core": _finite(self.cpu_percent_of_one_core, 4),
                "cpu_us_per_sample": _finite(self.cpu_us_per_sample, 2)}


class Sampler:
    """Reads a sensor into a :class:`PowerTrace`, on a daemon thread or by explicit polls.

    interval_s: seconds between reads; the default is ``1 / min(sensor.rate_hz,``
    :data:`MAX_SAMPLER_RATE_HZ` ``)``. :meth:`poll` reads once now (the governor polls at every
    batch boundary, so with a :class:`ManualClock` no thread is needed). A sensor that raises
    :class:`SensorGone` is read no more: the trace records when and why, the run goes on.
    ``with Sampler(...) as s:`` starts and stops the thread.
    """

    def __init__(self, sensor: PowerSensor, *, trace: PowerTrace | None = None,
                 clock: Clock | None = None, interval_s: float | None = None) -> None:
        self.sensor = sensor
        self.trace = trace if trace is not None else PowerTrace()
        self.clock = clock or getattr(sensor, "clock", None) or SystemClock()
        if interval_s is None:
            rate = min(sensor.rate_hz or DEFAULT_RATE_HZ, MAX_SAMPLER_RATE_HZ)
            interval_s = 1.0 / rate
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = float(interval_s)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cpu_s = 0.0
        self._wall_s = 0.0
        self._thread_samples = 0

    @property
    def available(self) -> bool:
        """True while the sensor exists and has not disappeared."""
        return self.sensor.kind is not SensorKind.NONE and self.trace.gone_at is None

    def poll(self) -> Sample | None:
        """Read once and record; None when there is no sensor (any more)."""
        with self._lock:
            if not self.available:
                return None
            try:
                s = self.sensor.read()
            except SensorGone as err:
                t = self.clock.now()
                self.trace.gone_at, self.trace.gone_reason = t, str(err)
                log.warning("power sensor %s disappeared at t=%.3f s after %d samples (%s); "
                            "readings stop, the run continues", self.sensor.name, t,
                            len(self.trace), err)
                return None
            self.trace.add(s)
            return s

    def start(self) -> Sampler:
        if self._thread is not None:
            raise RuntimeError("sampler already started")
        if not self.available:
            log.info("power sampler not started: %s", NO_SENSOR)
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="power-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def cost(self) -> SamplerCost:
        """CPU time the thread spent (valid after :meth:`stop`; :func:`time.thread_time`)."""
        return SamplerCost(sensor=self.sensor.name, rate_hz=1.0 / self.interval_s,
                           samples=self._thread_samples, wall_s=self._wall_s, cpu_s=self._cpu_s)

    def _run(self) -> None:
        c0, w0 = time.thread_time(), time.perf_counter()
        next_t = w0
        try:
            while not self._stop.is_set():
                if self.poll() is None and not self.available:
                    break
                self._thread_samples += 1
                next_t += self.interval_s
                delay = next_t - time.perf_counter()
                if delay < 0:  # fell behind (a slow read): skip, don't burst
                    next_t = time.perf_counter()
                    delay = 0.0
                self._stop.wait(delay)
        finally:
            self._cpu_s += time.thread_time() - c0
            self._wall_s += time.perf_counter() - w0


def measure_sampler_cost(sensor: PowerSensor, seconds: float = 5.0, *,
                         interval_s: float | None = None) -> SamplerCost:
    """Run a sampler thread on ``sensor`` for ``seconds`` of real time and return its CPU cost."""
    sampler = Sampler(sensor, interval_s=interval_s)
    with sampler:
        time.sleep(seconds)
    return sampler.cost()


def max_window_average(times: np.ndarray, energy: np.ndarray, window_s: float, *,
                       start: float | None = None, end: float | None = None
                       ) -> tuple[float, float]:
    """Largest moving average (W) over any window of ``window_s`` inside [start, end].

    times, energy: cumulative energy (J) at increasing times (s), linear in between (exact for
    piecewise-constant power sampled at its changes). The window average
    ``(E(t) - E(t - w)) / w`` is piecewise linear in the window's end ``t`` with corners where
    ``t`` or ``t - w`` meets a sample, so those ends are the only candidates. start/end: the
    defaults are the trace's ends. Returns (watts, end time of that window); (nan, nan) when
    the span is shorter than a window.
    """
    t = np.asarray(times, np.float64)
    e = np.asarray(energy, np.float64)
    lo = t[0] if start is None else max(float(start), t[0])
    hi = t[-1] if end is None else min(float(end), t[-1])
    if hi - lo < window_s - 1e-12:
        return math.nan, math.nan
    ends = np.concatenate([t, t + window_s, [lo + window_s, hi]])
    ends = ends[(ends >= lo + window_s - 1e-12) & (ends <= hi + 1e-12)]
    avg = (np.interp(ends, t, e) - np.interp(ends - window_s, t, e)) / window_s
    i = int(np.argmax(avg))
    return float(avg[i]), float(ends[i])


def write_trace_csv(path: Path | str, trace: PowerTrace, *,
                    tile_marks: Sequence[tuple[float, int]] = (), origin: float | None = None
                    ) -> Path:
    """Write ``time_s,watts,energy_j,tiles_done`` (what :func:`~.model.fit_from_trace` and
    :class:`~.sensors.ReplaySensor` read).

    tile_marks: (clock seconds, cumulative tiles done) — the governor's batch log;
    ``tiles_done`` is the count at each sample. origin: clock time written as 0; the default is
    the first sample.
    """
    t, w, e = trace.arrays()
    t0 = (t[0] if len(t) else 0.0) if origin is None else origin
    mt = np.asarray([m[0] for m in tile_marks], np.float64)
    mn = np.asarray([m[1] for m in tile_marks], np.int64)
    lines = ["time_s,watts,energy_j,tiles_done"]
    for ti, wi, ei in zip(t, w, e, strict=True):
        k = int(np.searchsorted(mt, ti, side="right"))
        done = int(mn[k - 1]) if k else 0
        lines.append(f"{ti - t0:.6f},{'' if math.isnan(wi) else f'{wi:.6f}'},{ei:.6f},{done}")
    with atomic_open(Path(path)) as fh:
        fh.write("\n".join(lines) + "\n")
    return Path(path)


def _finite(x: float, digits: int) -> float | None:
    return round(float(x), digits) if math.isfinite(x) else None
