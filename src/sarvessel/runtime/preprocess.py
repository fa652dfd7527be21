"""Preprocessing: float SAR rasters (dB) to the uint8 tensors every backend consumes.

This is the one mapping shared by training (:mod:`sarvessel.model.data`) and every runtime
backend, so a model never sees pixels scaled differently from the ones it was trained on.
Ranges follow the system we reproduce (docs/references.md §1): VV/VH dB clipped to [-50, 20] and
bathymetry to [-6000, 2000], each scaled linearly to 0..255. Nodata (-32768) and NaN map to 0.

Labelled image sets (SSDD and users' own) are 8-bit display images already; a user's 16-bit or
float image set is brought to 8 bits by :func:`percentile_stretch`, which the user asks for
(``sarvessel eval --stretch``), because no fixed range suits unknown units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: xView3 nodata value of the VV/VH rasters.
NODATA = -32768.0


@dataclass(frozen=True)
class BandRange:
    """Linear range of one band that maps to 0..255; ``decibels``: the band is backscatter in
    dB (checked by :func:`db_units_problem`)."""

    name: str
    lo: float
    hi: float
    decibels: bool = False


VV = BandRange("VV_dB", -50.0, 20.0, decibels=True)
VH = BandRange("VH_dB", -50.0, 20.0, decibels=True)
BATHYMETRY = BandRange("bathymetry", -6000.0, 2000.0)

#: Elements per chunk in :func:`to_uint8` (fits the L2 cache as float32).
_CHUNK = 1 << 16

#: Pixels :func:`percentile_stretch` takes its percentiles from (an even subsample above it).
STRETCH_SAMPLES = 1 << 22

#: Default band order of the scene models (channels of the uint8 tensor).
DEFAULT_BANDS: tuple[BandRange, ...] = (VV, VH)


def valid_mask(values: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Return True where ``values`` holds data: False for nodata (−32768), NaN and −inf.

    One comparison, no temporaries (it runs on every pixel); ``out`` is an optional bool buffer.

    >>> valid_mask(np.array([-20.0, -32768.0, np.nan, -np.inf], np.float32)).tolist()
    [True, False, False, False]
    """
    return np.greater(values, np.float32(NODATA + 1.0), out=out)


def to_uint8(
    values: np.ndarray, band: BandRange, *, out: np.ndarray | None = None
) -> np.ndarray:
    """Scale one float band to uint8 with ``band``'s range: round-half-up of the linear map.

    Nodata (−32768, below every range), NaN and −inf become 0. Works in cache-sized chunks with
    in-place ufuncs (five passes, no full-size temporaries): this runs on every pixel of a
    700 MPx scene, so it must keep up with the disk.

    >>> to_uint8(np.array([-50.0, -15.0, 20.0, -32768.0, np.nan], np.float32), VV).tolist()
    [0, 128, 255, 0, 0]
    """
    v = np.ascontiguousarray(values)
    if out is None:
        out = np.empty(v.shape, np.uint8)
    elif not out.flags.c_contiguous:  # e.g. a column slice of a wider buffer
        out[...] = to_uint8(v, band)
        return out
    if v.size == 0:
        return out
    scale = np.float32(255.0 / (band.hi - band.lo))
    offset = np.float32(0.5 - band.lo * 255.0 / (band.hi - band.lo))
    flat_v = v.reshape(-1)
    flat_o = out.reshape(-1)
    step = _CHUNK
    buf = np.empty(min(step, flat_v.size), np.float32)
    for a in range(0, flat_v.size, step):
        src = flat_v[a : a + step]
        b = buf[: len(src)]
        np.fmax(src, np.float32(band.lo), out=b)  # fmax maps NaN to lo
        np.minimum(b, np.float32(band.hi), out=b)
        b *= scale
        b += offset
        flat_o[a : a + len(src)] = b  # unsafe cast truncates: b >= 0.5, so this rounds half up
    return out


#: Valid samples a units check needs, and the share at or above 0 dB that fails it.
UNITS_CHECK_MIN_SAMPLES = 4096
UNITS_CHECK_MAX_NONNEGATIVE = 0.9


def db_units_problem(u8: np.ndarray, valid: np.ndarray, band: BandRange) -> str | None:
    """Why the uint8 band ``u8`` (mapped with ``band``'s dB range, ``valid`` marking data) does
    not look like backscatter in dB, or None when it does or there is too little data to say.

    Why: a raw Sentinel-1 GRD measurement TIFF (uint16 digital numbers) or a linear sigma0
    band is numerically valid input, but mapped as dB it lands at or above 0 dB almost
    everywhere (DN saturate at the top of the range, linear values sit at 0..1 "dB"), and the
    detector silently sees a white or flat grey scene. Calibrated backscatter in dB is mostly
    far below 0 (open sea about -20 dB; only bright land and structures reach above 0), so more
    than :data:`UNITS_CHECK_MAX_NONNEGATIVE` of the samples at or above 0 dB means another unit.
    """
    if not (band.decibels and band.lo < 0.0 < band.hi):
        return None
    samples = u8[valid]
    if samples.size < UNITS_CHECK_MIN_SAMPLES:
        return None
    zero_db = int(to_uint8(np.zeros(1, np.float32), band)[0])
    share = float(np.count_nonzero(samples >= zero_db)) / samples.size
    if share <= UNITS_CHECK_MAX_NONNEGATIVE:
        return None
    return (f"{100 * share:.0f}% of the valid {band.name} samples are at or above 0 dB; "
            "backscatter in dB is mostly far below 0 (open sea about -20 dB). The band looks "
            "like digital numbers, amplitude or linear sigma0: calibrate it and convert it to "
            "dB (10 * log10 of sigma0) first")


def preprocess(bands: np.ndarray, ranges: Sequence[BandRange] = DEFAULT_BANDS) -> np.ndarray:
    """Map a float stack ``[C, H, W]`` (or ``[B, C, H, W]``) in dB to uint8 of the same shape.

    ``ranges`` gives one :class:`BandRange` per channel, in channel order. The default is
    VV then VH.
    """
    bands = np.asarray(bands)
    axis = bands.ndim - 3
    if bands.shape[axis] != len(ranges):
        raise ValueError(f"expected {len(ranges)} channels, got shape {bands.shape}")
    out = np.empty(bands.shape, dtype=np.uint8)
    for c, rng in enumerate(ranges):
        idx = (slice(None),) * axis + (c,)
        to_uint8(bands[idx], rng, out=out[idx])
    return out


def stretch_percentiles(pair: Sequence[float]) -> tuple[float, float]:
    """``(low, high)`` percentiles for :func:`percentile_stretch`, checked: two numbers with
    0 <= low < high <= 100 (raises ValueError otherwise). One check for the CLI, the model
    sidecar and the stretch itself."""
    lo, hi = (float(v) for v in pair)
    if not 0.0 <= lo < hi <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= lo < hi <= 100, got {lo:g}, {hi:g}")
    return lo, hi


def percentile_stretch(values: np.ndarray, lo_pct: float, hi_pct: float) -> np.ndarray:
    """Map an image of any numeric type to uint8: its ``lo_pct`` .. ``hi_pct`` percentiles
    (over the finite samples) go linearly onto 0..255, clipped, rounded half up.

    Non-finite samples become 0. An image whose two percentiles coincide (constant) maps to 0.
    Why percentiles: SAR amplitude has a long bright tail (the ships), so a min-max stretch
    would leave the sea in the bottom few grey levels. Images over
    :data:`STRETCH_SAMPLES` pixels take their percentiles from an even subsample of that many
    and are mapped a block of rows at a time, so a large image costs no full-size float copy.

    >>> percentile_stretch(np.array([[0.0, 6.0, 1020.0, np.nan]]), 0, 100).tolist()
    [[0, 2, 255, 0]]
    """
    lo_pct, hi_pct = stretch_percentiles((lo_pct, hi_pct))
    v = np.asarray(values)
    flat = v.reshape(-1)
    sample = flat[:: max(1, flat.size // STRETCH_SAMPLES)].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if not sample.size:
        if not np.isfinite(flat).any():
            raise ValueError("no finite samples to stretch")
        sample = flat[np.isfinite(flat)].astype(np.float64)
    lo, hi = np.percentile(sample, [lo_pct, hi_pct])
    out = np.zeros(v.shape, np.uint8)
    if hi <= lo:
        return out
    rows = v.reshape(len(v), -1) if v.ndim > 1 else v.reshape(1, -1)
    o = out.reshape(rows.shape)
    step = max(1, _CHUNK // max(1, rows.shape[1]))
    for a in range(0, len(rows), step):
        b = rows[a : a + step].astype(np.float64)
        finite = np.isfinite(b)
        scaled = np.clip((b - lo) * (255.0 / (hi - lo)), 0.0, 255.0)
        o[a : a + step] = np.where(finite, np.floor(scaled + 0.5), 0).astype(np.uint8)
    return out
