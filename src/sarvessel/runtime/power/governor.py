"""The power governor: paces a tile stream so measured power stays under a budget.

A satellite gives the payload a fixed power envelope; exceeding it is not an option, finishing
the scene slower is. The pipeline calls two hooks around every backend call::

    governor.before_batch(n_tiles)   # may pause (through the clock) before the batch starts
    results = backend.infer(batch)
    governor.after_batch(n_tiles)

(or ``with governor.batch(n_tiles): ...``) and ``governor.mark_row(i)`` after each tile row.

How the pause is chosen. The governor keeps, for the last ``history`` batches, the seconds per
tile and the mean power while the batch ran (energy measured between the two hooks). Before a
batch it predicts the batch's duration ``d`` and power ``p`` (the largest of the recent ones:
conservative), and picks the shortest pause ``s`` such that the window of ``window_s`` ending
when the predicted batch ends holds at most ``target × window_s`` joules: measured energy of the
past part of the window, idle draw during the pause, ``p × d`` for the batch. The target is
``idle + (1 - margin) × (budget - idle)``. With power at least idle at all times, a window
ending at the end of a batch is the worst of the windows ending in or after it, so keeping
those keeps every window. A pause never exceeds ``window_s - d`` (beyond that the past has left
the window): the governor never pauses forever. If even that pause cannot hold the budget (one
batch alone draws too much), it warns, pauses the most it usefully can, and, when given a
:class:`FabricClock`, lowers the fabric clock one step (restored at :meth:`PowerGovernor.stop`).
Pausing is the first tool because an accelerator's energy per tile barely depends on its clock;
a lower clock only lowers the peak.

The first batch is a probe (nothing is known of the batch power yet); windows that start before
it ends are the warm-up and are reported apart. A budget below the idle draw measured at
:meth:`PowerGovernor.start` is an error naming both numbers. When the sensor disappears
mid-run, the governor goes on pacing with its last model (idle W, batch W) and the report says
so.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from sarvessel.runtime.power.clock import Clock, SystemClock
from sarvessel.runtime.power.errors import PowerBudgetError, PowerError
from sarvessel.runtime.power.report import EnergyReport, build_report
from sarvessel.runtime.power.sensors import (
    NO_SENSOR,
    Activity,
    NullSensor,
    PowerSensor,
    SensorKind,
)
from sarvessel.runtime.power.trace import Sampler

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_WINDOW_S",
    "BatchRecord",
    "FabricClock",
    "Pause",
    "PowerGovernor",
    "PynqFabricClock",
]

#: Default moving-average window (s): long enough for the supply's capacitance and the
#: sensor's averaging, short enough to follow a tile row.
DEFAULT_WINDOW_S = 5.0


@runtime_checkable
class FabricClock(Protocol):
    """A programmable-logic clock the governor may lower (and restores afterwards)."""

    name: str

    def get_mhz(self) -> float:
        ...

    def set_mhz(self, mhz: float) -> None:
        ...


class PynqFabricClock:
    """PL clock ``fclk<index>`` through PYNQ's ``pynq.ps.Clocks.fclk<index>_mhz``.

    clocks: the object holding the ``fclkN_mhz`` attributes; the default imports
    ``pynq.ps.Clocks`` here (never at module import), so this works only on the board. The
    governor changes the clock only between batches (no DMA in flight).
    """

    def __init__(self, index: int = 0, *, clocks: Any = None) -> None:
        if not 0 <= index <= 3:
            raise PowerError(f"Zynq UltraScale+ has PL clocks fclk0..fclk3, not fclk{index}")
        if clocks is None:
            try:
                from pynq.ps import Clocks  # noqa: PLC0415 - optional, board only
            except ImportError as err:
                raise PowerError(f"pynq is not installed ({err})") from None
            clocks = Clocks
        self._clocks = clocks
        self._attr = f"fclk{index}_mhz"
        self.name = f"fclk{index}"

    def get_mhz(self) -> float:
        return float(getattr(self._clocks, self._attr))

    def set_mhz(self, mhz: float) -> None:
        setattr(self._clocks, self._attr, float(mhz))


@dataclass(frozen=True)
class Pause:
    """One pause before a batch."""

    #: Clock seconds when it began.
    t: float
    seconds: float
    #: True when even the longest useful pause could not hold the budget.
    short_of_budget: bool = False


@dataclass(frozen=True)
class BatchRecord:
    """One batch between the hooks (clock seconds)."""

    t0: float
    t1: float
    tiles: int
    #: Measured energy over the batch (J); None without readings.
    energy_j: float | None


class PowerGovernor:
    """Keeps the moving average of measured power at or under ``budget_w``.

    sensor: where power is read (:func:`~.sensors.detect_sensor`). budget_w: the budget (W);
    None only records (no pacing) so the same object gives every run its energy report.
    window_s: the moving-average window (s); the default is :data:`DEFAULT_WINDOW_S`.
    clock: the default is :class:`SystemClock`; tests pass a :class:`ManualClock`.
    idle_s: how long :meth:`start` measures the idle draw (s); the default is 1.
    margin: share of the headroom (budget − idle) kept in reserve against sensor noise and
    prediction error; the default is 0.05. history: batches the prediction looks back on; the
    default is 8. activity: set busy during each batch (drives a
    :class:`~.sensors.ScriptedSensor`). fabric_clock / min_clock_mhz / clock_step: optional
    clock lowering when one batch alone exceeds the budget; the defaults are no clock, half the
    starting frequency, ×0.8 per step. sampler_thread: sample on a background thread between
    hooks; the default (None) does so only with a :class:`SystemClock`.
    """

    def __init__(
        self,
        sensor: PowerSensor,
        budget_w: float | None,
        window_s: float = DEFAULT_WINDOW_S,
        *,
        clock: Clock | None = None,
        idle_s: float = 1.0,
        margin: float = 0.05,
        history: int = 8,
        activity: Activity | None = None,
        fabric_clock: FabricClock | None = None,
        min_clock_mhz: float | None = None,
        clock_step: float = 0.8,
        sampler_thread: bool | None = None,
        sampler_interval_s: float | None = None,
    ) -> None:
        if budget_w is not None and not (math.isfinite(budget_w) and budget_w > 0):
            raise PowerBudgetError(f"power budget must be a positive number of watts, got "
                                   f"{budget_w}")
        if not (math.isfinite(window_s) and window_s > 0):
            raise PowerBudgetError(f"power window must be > 0 s, got {window_s}")
        if not 0 <= margin < 1:
            raise ValueError(f"margin must be in [0, 1), got {margin}")
        if not 0 < clock_step < 1:
            raise ValueError(f"clock_step must be in (0, 1), got {clock_step}")
        self.sensor = sensor
        self.budget_w = None if budget_w is None else float(budget_w)
        self.window_s = float(window_s)
        self.clock = clock or getattr(sensor, "clock", None) or SystemClock()
        self.idle_s = float(idle_s)
        self.margin = float(margin)
        self.activity = activity
        self.fabric_clock = fabric_clock
        self.min_clock_mhz = min_clock_mhz
        self.clock_step = float(clock_step)
        self.sampler = Sampler(sensor, clock=self.clock, interval_s=sampler_interval_s)
        self._thread = (isinstance(self.clock, SystemClock) if sampler_thread is None
                        else sampler_thread)
        self._lock = threading.RLock()
        #: Seconds per tile of the last batches, and their measured mean power (W): the latter
        #: keeps its last values when readings stop, so pacing goes on on the model.
        self._recent: deque[float] = deque(maxlen=max(1, history))
        self._recent_w: deque[float] = deque(maxlen=max(1, history))
        #: Measured idle draw (W), set by :meth:`start`.
        self.idle_w: float | None = None
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self.pauses: list[Pause] = []
        self.batches: list[BatchRecord] = []
        #: (clock seconds, tile-row index) from :meth:`mark_row`.
        self.rows: list[tuple[float, int]] = []
        #: (clock seconds, MHz) at every fabric-clock change, the restore included.
        self.clock_changes: list[tuple[float, float]] = []
        self.notes: list[str] = []
        self._clock_mhz0: float | None = None
        self._batch_t0: float | None = None
        self._tiles_done = 0
        self._warned_short = False

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> PowerGovernor:
        """Measure the idle draw, check the budget against it, start sampling.

        Raises :class:`PowerBudgetError` when a budget is set and there is no sensor, or the
        budget is at or below the idle draw.
        """
        if self.started_at is not None:
            raise RuntimeError("governor already started")
        if self.sensor.kind is SensorKind.NONE:
            note = self.sensor.note if isinstance(self.sensor, NullSensor) else NO_SENSOR
            if self.budget_w is not None:
                raise PowerBudgetError(f"a power budget of {self.budget_w:g} W needs a power "
                                       f"sensor: {note}")
            self.notes.append(note)
            self.started_at = self.clock.now()
            return self
        self.idle_w = self._measure_idle()
        if self.budget_w is not None:
            if self.idle_w is None:
                raise PowerBudgetError(f"a power budget of {self.budget_w:g} W needs readings, "
                                       f"but {self.sensor.name} gave none: "
                                       f"{self.sampler.trace.gone_reason}")
            if self.budget_w <= self.idle_w:
                raise PowerBudgetError(
                    f"power budget {self.budget_w:.2f} W is below the measured idle draw "
                    f"{self.idle_w:.2f} W ({self.sensor.name}, {self.idle_s:g} s at start): no "
                    f"pause can bring the average under it; raise the budget above "
                    f"{self.idle_w:.2f} W")
            log.info("power governor: budget %.2f W over %g s windows, idle %.2f W (%s)",
                     self.budget_w, self.window_s, self.idle_w, self.sensor.name)
        if self.fabric_clock is not None:
            self._clock_mhz0 = self.fabric_clock.get_mhz()
        self.started_at = self.clock.now()
        if self._thread:
            self.sampler.start()
        return self

    def stop(self) -> None:
        """Stop sampling, restore the fabric clock, log what throttling cost."""
        if self.started_at is None or self.stopped_at is not None:
            return
        self.sampler.stop()
        self.sampler.poll()
        fc = self.fabric_clock
        if fc is not None and self._clock_mhz0 is not None and fc.get_mhz() != self._clock_mhz0:
            fc.set_mhz(self._clock_mhz0)
            self.clock_changes.append((self.clock.now(), self._clock_mhz0))
            log.info("power: %s restored to %g MHz", fc.name, self._clock_mhz0)
        self.stopped_at = self.clock.now()
        if self.pauses:
            total = sum(p.seconds for p in self.pauses)
            log.info("power: throttled %d times, %.2f s in all (%.0f %% of %.1f s)",
                     len(self.pauses), total, 100 * total / max(self.elapsed_s, 1e-9),
                     self.elapsed_s)

    def __enter__(self) -> PowerGovernor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def elapsed_s(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.stopped_at if self.stopped_at is not None else self.clock.now()) \
            - self.started_at

    @property
    def throttled_s(self) -> float:
        return sum(p.seconds for p in self.pauses)

    @property
    def target_w(self) -> float | None:
        """The average the pacing aims at: idle + (1 − margin) × (budget − idle)."""
        if self.budget_w is None or self.idle_w is None:
            return self.budget_w
        return self.idle_w + (1.0 - self.margin) * (self.budget_w - self.idle_w)

    # -- pipeline hooks -----------------------------------------------------------------------

    def before_batch(self, tiles: int = 1) -> float:
        """Call before each backend call; pauses if the budget needs it. Returns the pause (s)."""
        if self.started_at is None:
            raise RuntimeError("start the governor (or use it as a context manager) first")
        with self._lock:
            self.sampler.poll()
            pause = self._pause_for(max(1, int(tiles)))
            if pause > 0:
                self.clock.sleep(pause)
                self.sampler.poll()
            if self.activity is not None:
                self.activity.begin()
            self._batch_t0 = self.clock.now()
            self.sampler.poll()
            return pause

    def after_batch(self, tiles: int = 1) -> None:
        """Call after each backend call with the same tile count."""
        with self._lock:
            if self._batch_t0 is None:
                raise RuntimeError("after_batch() without before_batch()")
            t1 = self.clock.now()  # before the closing sample, so the trace covers [t0, t1]
            self.sampler.poll()
            if self.activity is not None:
                self.activity.end()
            t0, self._batch_t0 = self._batch_t0, None
            energy = self._measured_energy(t0, t1)
            tiles = max(1, int(tiles))
            self._tiles_done += tiles
            self.batches.append(BatchRecord(t0, t1, tiles, energy))
            if t1 > t0:
                self._recent.append((t1 - t0) / tiles)
                if energy is not None:
                    self._recent_w.append(energy / (t1 - t0))

    @contextmanager
    def batch(self, tiles: int = 1) -> Iterator[float]:
        """``with governor.batch(n): results = backend.infer(batch)``; yields the pause (s)."""
        pause = self.before_batch(tiles)
        try:
            yield pause
        finally:
            self.after_batch(tiles)

    def mark_row(self, index: int) -> None:
        """Call after each tile row: the power-trace PNG ticks these."""
        self.rows.append((self.clock.now(), int(index)))

    # -- reports ------------------------------------------------------------------------------

    def report(self, *, start: float | None = None, end: float | None = None,
               megapixels: float | None = None, scenes: int = 1) -> EnergyReport:
        """Energy over [start, end] (clock seconds; the defaults are the governor's start and
        now/stop). megapixels: scene size for J/MPx. scenes: scenes in the span."""
        with self._lock:
            t0 = self.started_at if start is None else start
            t1 = end if end is not None else (
                self.stopped_at if self.stopped_at is not None else self.clock.now())
            if t0 is None:
                raise RuntimeError("governor not started")
            return build_report(self, t0, t1, megapixels=megapixels, scenes=scenes)

    @property
    def tile_marks(self) -> list[tuple[float, int]]:
        """(clock seconds, cumulative tiles) after each batch, for the trace CSV."""
        out, n = [], 0
        for b in self.batches:
            n += b.tiles
            out.append((b.t1, n))
        return out

    # -- internals ----------------------------------------------------------------------------

    def _measure_idle(self) -> float | None:
        """Mean draw over ``idle_s``, read at the sampler's interval through the clock."""
        trace = self.sampler.trace
        n0 = len(trace)
        t_start = self.clock.now()
        self.sampler.poll()
        while self.clock.now() - t_start < self.idle_s and self.sampler.available:
            self.clock.sleep(min(self.sampler.interval_s, self.idle_s))
            self.sampler.poll()
        if len(trace) - n0 < 2:
            return None
        times, _, _ = trace.arrays()
        return trace.mean_watts(float(times[n0]), float(times[-1]))

    def _measured_energy(self, t0: float, t1: float) -> float | None:
        trace = self.sampler.trace
        if trace.start is None or t0 < trace.start or t1 > trace.end:
            return None
        return trace.energy_at_time(t1) - trace.energy_at_time(t0)

    def _energy_since(self, a: float, now: float) -> float:
        """Joules drawn in [a, now]: measured where the trace covers it, modelled elsewhere
        (idle before the trace; idle plus the batch excess after it, e.g. sensor gone)."""
        trace = self.sampler.trace
        idle = self.idle_w or 0.0
        if trace.start is None:
            return self._modelled(a, now)
        ts, te = trace.start, trace.end
        e = 0.0
        if a < ts:
            e += idle * (min(ts, now) - a)
        lo, hi = max(a, ts), min(now, te)
        if hi > lo:
            e += trace.energy_at_time(hi) - trace.energy_at_time(lo)
        if now > te:
            e += self._modelled(max(a, te), now)
        return e

    def _modelled(self, a: float, b: float) -> float:
        """Model energy over [a, b]: idle, plus the predicted excess while batches ran."""
        idle = self.idle_w or 0.0
        p = self._predicted_power()
        busy = 0.0
        for rec in reversed(self.batches):
            if rec.t1 <= a:
                break
            busy += max(0.0, min(rec.t1, b) - max(rec.t0, a))
        if self._batch_t0 is not None:
            busy += max(0.0, b - max(self._batch_t0, a))
        return idle * (b - a) + (max(p, idle) - idle) * busy

    def _predicted_power(self) -> float:
        return max(self._recent_w) if self._recent_w else (self.idle_w or 0.0)

    def _pause_for(self, tiles: int) -> float:
        if self.budget_w is None or self.idle_w is None or not self._recent_w:
            return 0.0  # recording only, or the probe batch
        w = self.window_s
        d = tiles * max(self._recent)
        p = self._predicted_power()
        target = self.target_w * w
        now = self.clock.now()
        idle = self.idle_w

        def window_energy(s: float) -> float:
            a = now + s + d - w
            past = self._energy_since(a, now) if a < now else 0.0
            pause = idle * max(0.0, (now + s) - max(a, now))
            return past + pause + p * min(d, w)

        if window_energy(0.0) <= target:
            return 0.0
        s_max = max(0.0, w - d)
        if window_energy(s_max) > target:
            self._short_of_budget(p, d)
            if s_max > 0:
                self.pauses.append(Pause(now, s_max, short_of_budget=True))
            return s_max
        lo, hi = 0.0, s_max
        while hi - lo > 1e-4:
            mid = 0.5 * (lo + hi)
            if window_energy(mid) <= target:
                hi = mid
            else:
                lo = mid
        first = not self.pauses
        self.pauses.append(Pause(now, hi))
        level = logging.INFO if first or hi >= 1.0 else logging.DEBUG
        log.log(level, "power: pausing %.3f s at t=%.2f before %d tiles (predicted %.2f W for "
                "%.3f s) to hold %.2f W over %g s", hi, now - (self.started_at or 0.0), tiles,
                p, d, self.budget_w, w)
        return hi

    def _short_of_budget(self, p: float, d: float) -> None:
        msg = (f"one batch alone ({p:.2f} W for {d:.3f} s) exceeds the budget of "
               f"{self.budget_w:.2f} W over {self.window_s:g} s windows")
        if not self._warned_short:
            log.warning("power: %s; pausing cannot hold it (smaller batches, a longer window "
                        "or a lower clock can)", msg)
            self.notes.append(msg)
            self._warned_short = True
        fc = self.fabric_clock
        if fc is None or self._clock_mhz0 is None:
            return
        floor = self.min_clock_mhz if self.min_clock_mhz is not None else 0.5 * self._clock_mhz0
        cur = fc.get_mhz()
        new = max(floor, cur * self.clock_step)
        if new < cur - 1e-9:
            fc.set_mhz(new)
            actual = fc.get_mhz()
            self.clock_changes.append((self.clock.now(), actual))
            log.warning("power: %s lowered from %g to %g MHz", fc.name, cur, actual)
