"""Length from the image around a detection."""

from __future__ import annotations

import numpy as np
import pytest

from sarvessel.runtime.detections import Detections
from sarvessel.runtime.post.length import measure_lengths


def ship_tile(length_px: float, angle_deg: float, *, r0: float = 60, c0: float = 60) -> np.ndarray:
    """Sea at ~80 (uint8 levels), a line of bright scatterers of the given length and heading."""
    rng = np.random.default_rng(1)
    tile = rng.integers(70, 90, (128, 128)).astype(np.uint8)
    t = np.linspace(-length_px / 2, length_px / 2, int(length_px * 3))
    a = np.deg2rad(angle_deg)
    rr = np.rint(r0 + t * np.cos(a)).astype(int)
    cc = np.rint(c0 + t * np.sin(a)).astype(int)
    tile[rr, cc] = 240
    return tile


@pytest.mark.parametrize("length_px", [6, 15, 30])
@pytest.mark.parametrize("angle", [0, 35, 90, 150])
def test_length_along_any_heading(length_px, angle):
    tile = ship_tile(length_px, angle)
    d = Detections([60.5], [60.5], [0.9], [1], [[50, 50, 70, 70]], [np.nan])
    got = float(measure_lengths(tile, d, psf_m=0.0)[0])
    assert abs(got - (length_px + 1)) <= 0.15 * length_px + 1.5, got


def test_psf_is_subtracted_and_nodata_gives_nan():
    tile = ship_tile(20, 0)
    d = Detections([60.5, 10.5], [60.5, 10.5], [0.9, 0.8], [1, 1], np.zeros((2, 4)), [0, 0])
    tile[:40, :40] = 0  # nodata window around the second detection
    with_psf = measure_lengths(tile, d, psf_m=30.0)
    without = measure_lengths(tile, d, psf_m=0.0)
    assert without[0] - with_psf[0] == pytest.approx(3.0)
    assert np.isnan(with_psf[1])
