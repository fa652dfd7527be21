"""Benchmark plots drawn with Pillow (matplotlib is not on the board): horizontal bars
(throughput, energy), stacked bars (latency by stage) and the two scaling panels (time and peak
memory against scene size). Each writer returns the path written (atomically).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sarvessel.runtime.io.drawing import anchored_text, default_font, nice_ticks
from sarvessel.runtime.io.outputs import atomic_open

__all__ = ["bar_chart", "scaling_chart", "stacked_bar_chart"]

#: Colours of series, in order (colour-blind safe, Okabe–Ito).
PALETTE = ((0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233),
           (213, 94, 0), (240, 228, 66), (110, 110, 110))
_INK, _GRID, _MUTED = (30, 30, 30), (232, 232, 232), (100, 100, 100)


def bar_chart(
    path: Path | str,
    bars: Sequence[tuple[str, float | None]],
    *,
    title: str,
    unit: str,
    note: str = "",
    colours: Sequence[int] | None = None,
    width: int = 900,
) -> Path:
    """Horizontal bars, one per (label, value), the value printed at the bar's end; a None
    value draws "n/a". colours: palette index per bar; the default is the first colour.
    note: a line of small print under the chart."""
    from PIL import Image, ImageDraw

    font, small = default_font(14), default_font(12)
    row, top, left = 30, 46, _label_width(bars, font) + 20
    bottom = 50 + (18 if note else 0)
    height = top + row * max(1, len(bars)) + bottom
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    right = 110
    pw = width - left - right
    vmax = max([v for _, v in bars if v is not None and math.isfinite(v)] or [1.0]) or 1.0
    for x in nice_ticks(0.0, vmax):
        px = left + x / vmax * pw
        d.line((px, top - 4, px, top + row * len(bars)), fill=_GRID)
        anchored_text(d, (px, top + row * len(bars) + 4), _fmt(x), small, _MUTED, "mt")
    for i, (label, value) in enumerate(bars):
        y = top + i * row
        anchored_text(d, (left - 10, y + row / 2), label, font, _INK, "rm")
        colour = PALETTE[(colours[i] if colours else 0) % len(PALETTE)]
        if value is None or not math.isfinite(value):
            anchored_text(d, (left + 4, y + row / 2), "n/a", font, _MUTED, "lm")
            continue
        x1 = left + max(1.0, value / vmax * pw)
        d.rectangle((left, y + 5, x1, y + row - 5), fill=colour)
        anchored_text(d, (x1 + 6, y + row / 2), _fmt(value), font, _INK, "lm")
    d.text((left, 12), title, fill=_INK, font=default_font(16))
    anchored_text(d, (left + pw / 2, top + row * len(bars) + 24), unit, small, _MUTED, "mt")
    if note:
        d.text((10, height - 22), note, fill=_MUTED, font=small)
    return _save(img, path)


def stacked_bar_chart(
    path: Path | str,
    labels: Sequence[str],
    stacks: Mapping[str, Sequence[float]],
    *,
    title: str,
    unit: str,
    note: str = "",
    width: int = 900,
) -> Path:
    """Horizontal stacked bars: one bar per label, one segment per series of ``stacks``
    (series name → value per label), a legend on top and the total at each bar's end."""
    from PIL import Image, ImageDraw

    font, small = default_font(14), default_font(12)
    row, top = 30, 70
    left = _label_width([(s, 0) for s in labels], font) + 20
    bottom = 50 + (18 if note else 0)
    height = top + row * max(1, len(labels)) + bottom
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    right = 110
    pw = width - left - right
    totals = [sum(max(0.0, float(v[i])) for v in stacks.values()) for i in range(len(labels))]
    vmax = max(totals or [1.0]) or 1.0
    for x in nice_ticks(0.0, vmax):
        px = left + x / vmax * pw
        d.line((px, top - 4, px, top + row * len(labels)), fill=_GRID)
        anchored_text(d, (px, top + row * len(labels) + 4), _fmt(x), small, _MUTED, "mt")
    for i, label in enumerate(labels):
        y = top + i * row
        anchored_text(d, (left - 10, y + row / 2), label, font, _INK, "rm")
        x = float(left)
        for k, values in enumerate(stacks.values()):
            w = max(0.0, float(values[i])) / vmax * pw
            if w > 0:
                d.rectangle((x, y + 5, x + w, y + row - 5), fill=PALETTE[k % len(PALETTE)])
            x += w
        anchored_text(d, (x + 6, y + row / 2), _fmt(totals[i]), font, _INK, "lm")
    lx = float(left)
    for k, name in enumerate(stacks):
        d.rectangle((lx, 44, lx + 12, 56), fill=PALETTE[k % len(PALETTE)])
        d.text((lx + 16, 43), name, fill=_INK, font=small)
        lx += 16 + d.textlength(name, font=small) + 18
    d.text((left, 12), title, fill=_INK, font=default_font(16))
    anchored_text(d, (left + pw / 2, top + row * len(labels) + 24), unit, small, _MUTED, "mt")
    if note:
        d.text((10, height - 22), note, fill=_MUTED, font=small)
    return _save(img, path)


def scaling_chart(
    path: Path | str,
    points: Sequence[Mapping[str, Any]],
    *,
    title: str,
    fit: tuple[float, float] | None = None,
    rss_limit_mb: float | None = None,
    note: str = "",
    size: tuple[int, int] = (1100, 440),
) -> Path:
    """Two panels against scene megapixels: wall seconds (dots, and the line ``fit`` =
    (seconds per MPx, intercept s)) and peak RSS in MB (dots, and the ``rss_limit_mb`` line).
    points: ``{"megapixels", "wall_s", "peak_rss_mb", "label"}`` each."""
    from PIL import Image, ImageDraw

    width, height = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    small = default_font(12)
    d.text((20, 10), title, fill=_INK, font=default_font(16))
    pts = [p for p in points if p.get("wall_s") is not None]
    xmax = max([p["megapixels"] for p in pts] or [1.0]) * 1.05
    panel_w = (width - 60) // 2
    panels = [
        ("wall time (s)", "wall_s", fit and (lambda x: fit[0] * x + fit[1]), None),
        ("peak RSS (MB)", "peak_rss_mb", None, rss_limit_mb),
    ]
    for k, (ylabel, key, line, limit) in enumerate(panels):
        x0 = 20 + k * (panel_w + 20) + 60
        pw, top, ph = panel_w - 70, 50, height - 50 - 60 - (16 if note else 0)
        ys = [p[key] for p in pts if p.get(key) is not None]
        ymax = max(ys + ([limit] if limit else []) + [1e-9]) * 1.15

        def xy(x: float, y: float, x0: float = x0, pw: float = pw, top: float = top,
               ph: float = ph, ymax: float = ymax) -> tuple[float, float]:
            return x0 + x / xmax * pw, top + ph - y / ymax * ph

        for yv in nice_ticks(0.0, ymax):
            _, py = xy(0, yv)
            d.line((x0, py, x0 + pw, py), fill=_GRID)
            anchored_text(d, (x0 - 6, py), _fmt(yv), small, _MUTED, "rm")
        for xv in nice_ticks(0.0, xmax):
            px, _ = xy(xv, 0)
            d.line((px, top + ph, px, top + ph + 4), fill=_MUTED)
            anchored_text(d, (px, top + ph + 6), _fmt(xv), small, _MUTED, "mt")
        d.rectangle((x0, top, x0 + pw, top + ph), outline=_MUTED)
        if line is not None:
            d.line([xy(0, line(0)), xy(xmax, line(xmax))], fill=PALETTE[1], width=2)
        if limit:
            _, py = xy(0, limit)
            d.line((x0, py, x0 + pw, py), fill=(210, 30, 30), width=2)
            anchored_text(d, (x0 + pw - 4, py - 3), f"limit {_fmt(limit)}", small,
                          (210, 30, 30), "rb")
        for p in pts:
            if p.get(key) is None:
                continue
            cx, cy = xy(p["megapixels"], p[key])
            d.ellipse((cx - 5, cy - 5, cx + 5, cy + 5), fill=PALETTE[0])
            anchored_text(d, (cx + 8, cy - 2), _fmt(p[key]), small, _INK, "lb")
        d.text((x0, top - 18), ylabel, fill=_INK, font=default_font(13))
        anchored_text(d, (x0 + pw / 2, top + ph + 24), "scene megapixels", small, _MUTED, "mt")
    if note:
        d.text((20, height - 22), note, fill=_MUTED, font=small)
    return _save(img, path)


# -- helpers ------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    ax = abs(x)
    if ax >= 100:
        return f"{x:,.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 0.1:
        return f"{x:.2f}"
    return f"{x:.3g}"




def _label_width(items: Sequence[tuple[str, Any]], font: Any) -> int:
    from PIL import Image, ImageDraw

    d = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    return int(max([d.textlength(s, font=font) for s, _ in items] or [40]))






def _save(img: Any, path: Path | str) -> Path:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, binary=True) as fh:
        fh.write(buf.getvalue())
    return path
