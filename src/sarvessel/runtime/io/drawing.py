"""Pillow helpers shared by every picture the runtime draws (quicklooks, power traces, benchmark
plots): the board has Pillow < 10.1, whose default font is a bitmap one without ``anchor``
support, so fonts and anchored text are handled here once."""

from __future__ import annotations

import math
from typing import Any


def default_font(size: int) -> Any:
    """Pillow's default font at ``size`` px (the fixed bitmap font on Pillow < 10.1)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def anchored_text(draw: Any, xy: tuple[float, float], text: str, font: Any,
                  fill: tuple[int, int, int], anchor: str) -> None:
    """Text placed by a two-letter anchor (l/m/r, t/m/b), computed here: Pillow's own
    ``anchor`` needs a TrueType font."""
    w = draw.textlength(text, font=font)
    h = getattr(font, "size", 11)
    x, y = xy
    x -= {"l": 0.0, "m": w / 2, "r": w}[anchor[0]]
    y -= {"t": 0.0, "m": h / 2, "b": h}[anchor[1]]
    draw.text((x, y), text, fill=fill, font=font)


def nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """About ``n`` round axis ticks (steps of 1, 2, 2.5 or 5 times a power of ten) in [lo, hi].

    >>> nice_ticks(0.0, 7.3)
    [0, 2, 4, 6]
    """
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + k * step, 10) for k in range(int((hi - first) / step + 1e-9) + 1)]
