"""Pre-screen: which tiles of a tile row are worth sending to the accelerator.

Two tests, each a pure function of what the pipeline holds for one tile row (the uint8 band
``u8 [C, tile, W']``, its ``valid [tile, W']`` mask, the row's top ``r0`` and the tiles'
``col_starts``), returning a keep-mask per tile:

- :func:`sea_mask` — land. A tile is skipped only when every place a detection of that tile
  could be centred is land by ``owiMask``; the pipeline drops exactly those detections
  afterwards, so skipping such a tile changes no output. (Only while the pipeline's land
  filter is on, ``PipelineConfig.mask_land``: without it, land tiles must run.) This is exact, not a
  heuristic: the mask is sampled through :meth:`~sarvessel.runtime.io.scene.Scene.on_land`,
  the same function the land filter calls, at a step shorter than one auxiliary cell and
  including both ends, so no sea cell in reach of the tile is stepped over.
- :func:`bright_mask` — an optional gate: a tile whose brightest valid VV pixel is below
  ``min_u8`` holds nothing bright enough to be a ship. This one can cost recall (a faint small
  boat); its cost is measured in docs/prescreen.md, and it is off by default.

Tiles without valid data are the pipeline's own first test (``valid.any()``); the functions
here are meant for the tiles that pass it, and :func:`keep_tiles` combines them and counts
what each test skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from sarvessel.runtime.contract import OVERLAP
from sarvessel.runtime.io.scene import Scene
from sarvessel.runtime.preprocess import VV, BandRange, to_uint8

log = logging.getLogger(__name__)

#: The auxiliary raster whose land cells the pre-screen and the pipeline's land filter use.
LAND_MASK = "owiMask"

#: How far (scene px) a detection's centre can lie outside the tile that made it. A network
#: decodes a centre within ``(reg_max - 1) * stride / 2`` of its anchor (60 px for the shipped
#: scene model: reg_max 16, stride 8), and the pipeline keeps such centres (its nodata test
#: clips them into the tile), so the land test looks this far past the tile's edges. The
#: default is :data:`~sarvessel.runtime.contract.OVERLAP` (64 px), which covers it.
LAND_MARGIN_PX = float(OVERLAP)


@dataclass(frozen=True)
class PrescreenConfig:
    """Which tiles are never sent to the backend.

    skip_land: skip tiles with no sea cell of ``owiMask`` in reach (exact: no detection the
    land filter keeps is lost). The default is True. min_u8: skip tiles whose brightest valid
    VV pixel (uint8, preprocessed) is below this; None (the default) turns the gate off.
    :func:`db_to_u8` gives the uint8 of a dB threshold. land_margin_px: how far past its edges
    a tile's detections can be centred (see :data:`LAND_MARGIN_PX`, the default).
    """

    skip_land: bool = True
    min_u8: int | None = None
    land_margin_px: float = LAND_MARGIN_PX

    def __post_init__(self) -> None:
        if self.min_u8 is not None and not 0 <= int(self.min_u8) <= 255:
            raise ValueError(f"min_u8 must be in 0..255 or None, got {self.min_u8}")
        if not self.land_margin_px >= 0:
            raise ValueError(f"land_margin_px must be >= 0, got {self.land_margin_px}")

    @property
    def active(self) -> bool:
        """True when some test can skip a tile."""
        return self.skip_land or self.min_u8 is not None


@dataclass
class PrescreenCounts:
    """Tiles skipped by each test, and the wall time the tests took (s).

    ``land`` counts tiles with data but no sea in reach; ``dark`` counts tiles that had sea but
    failed the brightness gate. Neither counts tiles the pipeline skips for having no data.
    """

    land: int = 0
    dark: int = 0
    seconds: float = 0.0

    @property
    def skipped(self) -> int:
        return self.land + self.dark

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def db_to_u8(db: float, band: BandRange = VV) -> int:
    """The uint8 level the preprocessing maps ``db`` to (the gate's threshold for a dB value).

    >>> [db_to_u8(v) for v in (-10.0, -5.0, 0.0, 5.0)]
    [146, 164, 182, 200]
    """
    return int(to_uint8(np.array([db], np.float32), band)[0])


def keep_tiles(
    scene: Scene,
    u8: np.ndarray,
    valid: np.ndarray,
    r0: int,
    cols: Sequence[int],
    tile: int,
    config: PrescreenConfig,
    counts: PrescreenCounts | None = None,
) -> np.ndarray:
    """Keep-mask (bool ``[len(cols)]``) over the tiles ``cols`` of the tile row at ``r0``.

    ``u8``, ``valid``: the row's uint8 band ``[C, tile, W']`` and data mask ``[tile, W']``, as
    the pipeline holds them. ``cols``: the tiles' first columns, normally those with data.
    ``counts``, when given, is incremented by the tiles each test skipped (land first; the gate
    only judges tiles with sea) and the time taken.
    """
    t0 = time.perf_counter()
    keep = np.ones(len(cols), bool)
    if config.skip_land and len(cols):
        keep &= sea_mask(scene, r0, cols, tile, margin_px=config.land_margin_px)
    n_land = len(cols) - int(np.count_nonzero(keep))
    n_dark = 0
    if config.min_u8 is not None and keep.any():
        idx = np.flatnonzero(keep)
        bright = bright_mask(u8, valid, [cols[i] for i in idx], tile, min_u8=config.min_u8)
        keep[idx[~bright]] = False
        n_dark = int(np.count_nonzero(~bright))
    if counts is not None:
        counts.land += n_land
        counts.dark += n_dark
        counts.seconds += time.perf_counter() - t0
    return keep


def sea_mask(
    scene: Scene,
    r0: int,
    col_starts: Sequence[int],
    tile: int,
    *,
    margin_px: float = LAND_MARGIN_PX,
) -> np.ndarray:
    """True for each tile of the tile row at ``r0`` that has a sea cell (``owiMask`` not land)
    within ``margin_px`` of it; all True when the scene has no ``owiMask``.

    A tile covers scene rows ``r0 .. r0 + tile`` and columns ``c .. c + tile`` (continuous
    coordinates: detection centres are fractional); with the margin, the rectangle from
    ``r0 - margin_px`` to ``r0 + tile + margin_px`` (and likewise across) is tested. The mask is
    sampled with :meth:`Scene.on_land` at both ends of each side and at steps shorter than one
    auxiliary cell in between. The cell index :meth:`Scene.aux_at` takes is monotone in the
    position and moves by at most one cell per step, so every cell the rectangle touches is
    sampled: a tile reported False has no point, hence no detection centre, off land.
    """
    starts = np.asarray(col_starts, np.int64).reshape(-1)
    if LAND_MASK not in scene.aux_names or not len(starts):
        return np.ones(len(starts), bool)
    ah, aw = scene.aux_shape(LAND_MASK)
    rows = _edge_samples(r0 - margin_px, r0 + tile + margin_px, _step(scene.height, ah))
    offsets = _edge_samples(-margin_px, tile + margin_px, _step(scene.width, aw))
    cols = starts[:, None] + offsets[None, :]  # [tiles, samples]
    land = scene.on_land(np.broadcast_to(rows[:, None, None], (len(rows), *cols.shape)),
                         np.broadcast_to(cols[None], (len(rows), *cols.shape)))
    return ~land.all(axis=(0, 2))


def bright_mask(
    u8: np.ndarray,
    valid: np.ndarray,
    col_starts: Sequence[int],
    tile: int,
    *,
    min_u8: int,
) -> np.ndarray:
    """True for each tile (first column in ``col_starts``) whose brightest valid VV pixel
    (channel 0 of ``u8 [C, tile, W']``, where ``valid [tile, W']``) is at least ``min_u8``.

    Cost: one uint8 max over the tile (SIMD), and only for a tile that reaches ``min_u8`` a
    second pass to see whether a valid pixel does. A loop over tiles, never over pixels.
    """
    vv, ok = u8[0, :tile], valid[:tile]
    thr = np.uint8(min(max(int(min_u8), 0), 255))
    out = np.zeros(len(col_starts), bool)
    for k, c in enumerate(col_starts):
        t = vv[:, c : c + tile]
        if t.size == 0 or t.max() < thr:  # invalid pixels are a subset: nothing valid is bright
            continue
        v = ok[:, c : c + tile]
        out[k] = bool(v.all()) or bool(np.logical_and(t >= thr, v).any())
    return out


# -- helpers ------------------------------------------------------------------------------


def _step(scene_len: int, aux_len: int) -> float:
    """Sampling step (scene px) safely below one auxiliary cell (``scene_len / aux_len``).

    One pixel short of a cell keeps consecutive samples' cell indices at most one apart with
    a margin far above float rounding; a cell of under two pixels is sampled every pixel.
    """
    cell = scene_len / max(1, aux_len)
    return max(1.0, cell - 1.0) if cell >= 2.0 else min(1.0, cell * 0.5)


def _edge_samples(a: float, b: float, step: float) -> np.ndarray:
    """Points from ``a`` to ``b`` inclusive, at most ``step`` apart (float64)."""
    n = max(1, int(np.ceil((b - a) / step)))
    return np.linspace(a, b, n + 1)
