"""Vessel length from the image: the extent of the bright core around a detection.

The detector's boxes are trained on labels at least 16 px wide (docs/references.md §6), so a box
says little about a 20 m fishing boat. Length is measured instead on the VV tile, as the CFAR
baseline does: the pixels within ``rel_db`` of the target's peak that are connected to it, their
extent along their intensity-weighted major axis, less the width of the impulse response. Pure
numpy/scipy; runs after decoding, on the few detections only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from sarvessel.runtime.detections import Detections
from sarvessel.runtime.preprocess import VV, BandRange


def measure_lengths(
    tile: np.ndarray,
    dets: Detections,
    *,
    band: BandRange = VV,
    window_px: int = 48,
    rel_db: float = 10.0,
    psf_m: float = 30.0,
    pixel_size_m: float = 10.0,
) -> np.ndarray:
    """Length in pixels of each detection in ``tile`` (uint8 ``[H, W]``, ``band``-scaled).

    window_px: side of the search window around each centre (the default 48 px = 480 m holds
    any ship). rel_db: the core is the pixels within this of the peak (the default 10 dB cuts
    the sidelobes). psf_m: the response's own extent at that level, subtracted (the default
    30 m, as the CFAR baseline). At least 1 px. NaN where the window holds no data.

    >>> t = np.zeros((64, 64), np.uint8); t[30, 20:41] = 250
    >>> d = Detections([30.5], [30.5], [0.9], [1], [[20, 20, 40, 40]], [np.nan])
    >>> float(measure_lengths(t, d)[0])
    18.0
    """
    out = np.full(len(dets), np.nan, np.float32)
    h, w = tile.shape
    half = window_px // 2
    db_per_level = (band.hi - band.lo) / 255.0
    rel_levels = rel_db / db_per_level
    for i, (r, c) in enumerate(zip(dets.rows, dets.cols, strict=True)):
        r0, c0 = max(0, int(r) - half), max(0, int(c) - half)
        win = tile[r0 : min(h, int(r) + half), c0 : min(w, int(c) + half)]
        if win.size == 0 or not win.any():
            continue
        # the peak near the centre (a detection centre can sit a few px off the brightest pixel)
        cr, cc = int(r) - r0, int(c) - c0
        a, b = max(0, cr - 4), max(0, cc - 4)
        core_win = win[a : cr + 5, b : cc + 5]
        if core_win.size == 0:
            continue
        pr, pc = np.unravel_index(np.argmax(core_win), core_win.shape)
        pr, pc = pr + a, pc + b
        mask = win.astype(np.float32) >= float(win[pr, pc]) - rel_levels
        labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))  # 8-connected
        ys, xs = np.nonzero(labels == labels[pr, pc])
        wts = 10.0 ** ((win[ys, xs].astype(np.float64) * db_per_level) / 10.0)
        my, mx = np.average(ys, weights=wts), np.average(xs, weights=wts)
        dy, dx = ys - my, xs - mx
        syy, sxx, sxy = (np.average(v, weights=wts) for v in (dy * dy, dx * dx, dy * dx))
        theta = 0.5 * np.arctan2(2.0 * sxy, syy - sxx)
        proj = dy * np.cos(theta) + dx * np.sin(theta)
        extent = proj.max() - proj.min() + 1.0
        out[i] = max(extent - psf_m / pixel_size_m, 1.0)
    return out
