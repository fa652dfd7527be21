"""Preprocessing: float SAR rasters (dB) to the uint8 tensors every backend consumes.

This is the one mapping shared by training (:mod:`sarvessel.model.data`) and every runtime
backend, so a model never sees pixels scaled differently from the ones it was trained on.
Ranges follow the system we reproduce (NOTES §1): VV/VH dB clipped to [-50, 20] and bathymetry
to [-6000, 2000], each scaled linearly to 0..255. Nodata (-32768) and NaN map to 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: xView3 nodata value of the VV/VH rasters.
NODATA = -32768.0


@dataclass(frozen=True)
class BandRange:
    """Linear range of one band that maps to 0..255."""

    name: str
    lo: float
    hi: float


VV = BandRange("VV_dB", -50.0, 20.0)
VH = BandRange("VH_dB", -50.0, 20.0)
BATHYMETRY = BandRange("bathymetry", -6000.0, 2000.0)

#: Default band order of the scene models (channels of the uint8 tensor).
DEFAULT_BANDS: tuple[BandRange, ...] = (VV, VH)


def valid_mask(values: np.ndarray, *, nodata: float = NODATA) -> np.ndarray:
    """Return True where ``values`` holds data (not nodata, not NaN/inf)."""
    return np.isfinite(values) & (values != nodata)


def to_uint8(values: np.ndarray, band: BandRange, *, nodata: float = NODATA) -> np.ndarray:
    """Scale one float band to uint8 with ``band``'s range; nodata and NaN become 0.

    >>> to_uint8(np.array([-50.0, -15.0, 20.0, -32768.0, np.nan], np.float32), VV).tolist()
    [0, 128, 255, 0, 0]
    """
    v = np.asarray(values, dtype=np.float32)
    scale = np.float32(255.0 / (band.hi - band.lo))
    out = (np.clip(v, band.lo, band.hi) - np.float32(band.lo)) * scale
    out = np.rint(out)
    out[~valid_mask(v, nodata=nodata)] = 0.0
    return out.astype(np.uint8)


def preprocess(
    bands: np.ndarray, ranges: Sequence[BandRange] = DEFAULT_BANDS, *, nodata: float = NODATA
) -> np.ndarray:
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
        out[idx] = to_uint8(bands[idx], rng, nodata=nodata)
    return out
