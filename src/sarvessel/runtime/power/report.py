"""Energy accounting: the :class:`EnergyReport` every scene summary, bench report and server job
carries, and the power-trace PNG (Pillow only; the board has no matplotlib).

With no sensor the report says :data:`~.sensors.NO_SENSOR` and holds no number it did not
measure. :meth:`EnergyReport.to_dict` is strict JSON: NaN and infinities become null.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sarvessel.runtime.io.drawing import anchored_text, default_font, nice_ticks
from sarvessel.runtime.io.outputs import atomic_open
from sarvessel.runtime.power.sensors import NO_SENSOR, NullSensor, SensorKind
from sarvessel.runtime.power.trace import PowerTrace, max_window_average

if TYPE_CHECKING:
    from sarvessel.runtime.power.governor import Pause, PowerGovernor

__all__ = ["EnergyReport", "build_report", "write_power_trace_png"]


@dataclass
class EnergyReport:
    """Energy of one span of a run (a scene, a bench run, a server job). Watts W, joules J,
    seconds s; None where nothing was measured."""

    #: Sensor name as it names itself, ``"none"`` without one.
    sensor: str
    sensor_kind: str
    #: Readings inside the span.
    samples: int
    #: Length of the span (s).
    duration_s: float
    #: Measured energy over the covered part of the span (J).
    energy_j: float | None = None
    average_w: float | None = None
    peak_w: float | None = None
    #: Idle draw measured when the governor started (W).
    idle_w: float | None = None
    #: Energy per scene (J): None when the readings do not cover the whole span.
    joules_per_scene: float | None = None
    joules_per_mpx: float | None = None
    megapixels: float | None = None
    tiles: int = 0
    batches: int = 0
    budget_w: float | None = None
    window_s: float | None = None
    #: Largest moving average over any window of ``window_s`` after the warm-up (W).
    max_window_w: float | None = None
    #: Seconds from the span's start to the end of its first batch: windows starting earlier
    #: are the warm-up (the probe batch) and are not in ``max_window_w``.
    warmup_s: float | None = None
    #: True/False when a budget was set and a window fit in the span.
    within_budget: bool | None = None
    throttled_s: float = 0.0
    pauses: int = 0
    #: Extra run time the pauses cost, in percent of the run without them.
    slowdown_percent: float | None = None
    #: Seconds after the span's start at which readings stopped (sensor gone), else None.
    measured_until_s: float | None = None
    #: [seconds after the span's start, MHz] at each fabric-clock change.
    clock_changes: list[list[float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``json.dumps(..., allow_nan=False)`` accepts it)."""
        return _json_safe(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    def summary_line(self) -> str:
        """One line for logs and the CLI."""
        if self.sensor_kind == SensorKind.NONE.value:
            return self.notes[0] if self.notes else NO_SENSOR
        parts = [f"{_f(self.average_w)} W average", f"{_f(self.peak_w)} W peak",
                 f"{_f(self.energy_j, 1)} J"]
        if self.joules_per_mpx is not None:
            parts.append(f"{self.joules_per_mpx:.3g} J/MPx")
        if self.budget_w is not None:
            parts.append(f"budget {self.budget_w:g} W over {self.window_s:g} s "
                         f"(max {_f(self.max_window_w)} W)")
            parts.append(f"throttled {self.throttled_s:.1f} s")
        return f"power ({self.sensor}): " + ", ".join(parts)


def build_report(gov: PowerGovernor, t0: float, t1: float, *, megapixels: float | None = None,
                 scenes: int = 1) -> EnergyReport:
    """The report of ``gov`` over clock span [t0, t1]."""
    sensor = gov.sensor
    batches = [b for b in gov.batches if b.t0 >= t0 - 1e-9 and b.t1 <= t1 + 1e-9]
    pauses = [p for p in gov.pauses if t0 - 1e-9 <= p.t <= t1]
    throttled = float(sum(p.seconds for p in pauses))
    duration = max(0.0, t1 - t0)
    rep = EnergyReport(
        sensor=sensor.name, sensor_kind=SensorKind(sensor.kind).value, samples=0,
        duration_s=duration, idle_w=gov.idle_w, megapixels=megapixels,
        tiles=sum(b.tiles for b in batches), batches=len(batches), budget_w=gov.budget_w,
        window_s=gov.window_s, throttled_s=throttled, pauses=len(pauses),
        slowdown_percent=(100.0 * throttled / (duration - throttled)
                          if duration - throttled > 0 else None),
        clock_changes=[[t - t0, mhz] for t, mhz in gov.clock_changes if t0 <= t <= t1],
        notes=list(gov.notes),
    )
    if sensor.kind is SensorKind.NONE:
        note = sensor.note if isinstance(sensor, NullSensor) else NO_SENSOR
        if note not in rep.notes:
            rep.notes.insert(0, note)
        return rep
    trace = gov.sampler.trace
    t, w, e = trace.arrays()
    inside = (t >= t0) & (t <= t1)
    rep.samples = int(inside.sum())
    if len(t) < 2:
        rep.notes.append(f"{sensor.name} gave fewer than 2 readings: no energy measured")
        return rep
    lo, hi = max(t0, t[0]), min(t1, t[-1])
    gone = trace.gone_at is not None and trace.gone_at <= t1
    if gone:
        rep.measured_until_s = max(0.0, hi - t0)
        rep.notes.append(
            f"sensor {sensor.name} disappeared at t={trace.gone_at - t0:.2f} s "
            f"({trace.gone_reason}); energy covers {max(0.0, lo - t0):.2f}-"
            f"{rep.measured_until_s:.2f} s only; the governor paced on its model after that")
    if hi > lo:
        rep.energy_j = float(np.interp(hi, t, e) - np.interp(lo, t, e))
        rep.average_w = rep.energy_j / (hi - lo)
        ws = w[inside & np.isfinite(w)]
        rep.peak_w = float(ws.max()) if len(ws) else _interval_peak(t, e, lo, hi)
        if not gone:
            rep.joules_per_scene = rep.energy_j / max(1, scenes)
            if megapixels:
                rep.joules_per_mpx = rep.energy_j / megapixels
    warm = batches[0].t1 if batches else t0
    rep.warmup_s = warm - t0
    peak_window, _ = max_window_average(t, e, gov.window_s, start=max(lo, warm), end=hi)
    if math.isfinite(peak_window):
        rep.max_window_w = peak_window
        if gov.budget_w is not None:
            rep.within_budget = bool(peak_window <= gov.budget_w + 1e-9)
    return rep


def write_power_trace_png(
    path: Path | str,
    trace: PowerTrace,
    *,
    start: float | None = None,
    end: float | None = None,
    budget_w: float | None = None,
    idle_w: float | None = None,
    window_s: float | None = None,
    rows: Sequence[tuple[float, int]] = (),
    pauses: Sequence[Pause] = (),
    title: str | None = None,
    size: tuple[int, int] = (1200, 480),
) -> Path:
    """Draw W over time: mean power per pixel column (grey), the moving average over
    ``window_s`` (blue), the budget (red) and idle (dashed) lines, pauses shaded, a tick per
    tile row (orange, at the bottom). Times on the x axis are seconds after ``start`` (the
    default is the first sample). Returns the path written.
    """
    from PIL import Image, ImageDraw

    t, _, e = trace.arrays()
    if len(t) < 2:
        raise ValueError("a power trace PNG needs >= 2 samples")
    t0 = t[0] if start is None else max(start, t[0])
    t1 = t[-1] if end is None else min(end, t[-1])
    if t1 <= t0:
        t1 = t0 + 1e-6
    width, height = size
    left, right, top, bottom = 70, 20, 40, 56
    pw, ph = width - left - right, height - top - bottom
    edges = np.linspace(t0, t1, pw + 1)
    ee = np.interp(edges, t, e)
    col_w = np.diff(ee) / np.diff(edges)
    ymax = max(float(col_w.max()), budget_w or 0.0, idle_w or 0.0) * 1.15 or 1.0

    def x_of(tt: float) -> float:
        return left + (tt - t0) / (t1 - t0) * pw

    def y_of(watts: float) -> float:
        return top + ph - watts / ymax * ph

    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = default_font(13)
    for p in pauses:
        a, b = max(p.t, t0), min(p.t + p.seconds, t1)
        if b > a:
            draw.rectangle((x_of(a), top, x_of(b), top + ph), fill=(214, 230, 250))
    for yv in nice_ticks(0.0, ymax):
        y = y_of(yv)
        draw.line((left, y, left + pw, y), fill=(235, 235, 235))
        anchored_text(draw, (left - 8, y), f"{yv:g}", font, (60, 60, 60), "rm")
    for xv in nice_ticks(0.0, t1 - t0):
        x = x_of(t0 + xv)
        draw.line((x, top + ph, x, top + ph + 4), fill=(60, 60, 60))
        anchored_text(draw, (x, top + ph + 6), f"{xv:g}", font, (60, 60, 60), "mt")
    pts = []
    for i, wv in enumerate(col_w):
        y = y_of(float(wv))
        pts += [(left + i, y), (left + i + 1, y)]
    draw.line(pts, fill=(110, 110, 110), width=1)
    if window_s and t1 - t0 > window_s:
        ends = edges[edges >= t0 + window_s]
        avg = (np.interp(ends, t, e) - np.interp(ends - window_s, t, e)) / window_s
        draw.line([(x_of(a), y_of(b)) for a, b in zip(ends, avg, strict=True)],
                  fill=(30, 90, 200), width=2)
    if idle_w is not None:
        _dashed(draw, left, left + pw, y_of(idle_w), (90, 90, 90))
    if budget_w is not None:
        y = y_of(budget_w)
        draw.line((left, y, left + pw, y), fill=(210, 30, 30), width=2)
    for tr, _ in rows:
        if t0 <= tr <= t1:
            x = x_of(tr)
            draw.line((x, top + ph - 10, x, top + ph), fill=(240, 140, 0), width=2)
    draw.rectangle((left, top, left + pw, top + ph), outline=(60, 60, 60))
    draw.text((left, 10), title or "power trace", fill=(0, 0, 0), font=default_font(15))
    anchored_text(draw, (left + pw // 2, height - 18), "seconds", font, (60, 60, 60), "mm")
    draw.text((8, top - 20), "W", fill=(60, 60, 60), font=font)
    legend = [("mean W per column", (110, 110, 110))]
    if window_s:
        legend.append((f"{window_s:g} s moving average", (30, 90, 200)))
    if budget_w is not None:
        legend.append((f"budget {budget_w:g} W", (210, 30, 30)))
    if idle_w is not None:
        legend.append((f"idle {idle_w:.2f} W", (90, 90, 90)))
    if rows:
        legend.append(("tile rows", (240, 140, 0)))
    if pauses:
        legend.append(("paused", (120, 160, 220)))
    x = left + pw
    for text, colour in reversed(legend):
        x -= int(draw.textlength(text, font=font)) + 18
        draw.text((x, 12), text, fill=colour, font=font)
    buf = _png_bytes(img)
    with atomic_open(Path(path), binary=True) as fh:
        fh.write(buf)
    return Path(path)



# ---------------------------------------------------------------------------------------------
# helpers


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return round(x, 6) if math.isfinite(x) else None
    return x


def _f(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _interval_peak(t: np.ndarray, e: np.ndarray, lo: float, hi: float) -> float | None:
    keep = (t >= lo) & (t <= hi)
    tt, ee = t[keep], e[keep]
    if len(tt) < 2:
        return None
    return float((np.diff(ee) / np.diff(tt)).max())




def _dashed(draw: Any, x0: float, x1: float, y: float, colour: tuple[int, int, int]) -> None:
    x = x0
    while x < x1:
        draw.line((x, y, min(x + 6, x1), y), fill=colour, width=1)
        x += 10






def _png_bytes(img: Any) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()
