"""Classical baseline: two-parameter CFAR on VV intensity, clustering and size discrimination.

Follows ESA SNAP's ocean object detector (AdaptiveThresholding, docs/references.md §8): for every
pixel the mean of a small *target* window is compared with the mean ``mu`` and standard deviation
``sigma`` of a *background* ring (outer box minus a *guard* box that keeps the ship out of its own
background); the pixel is a detection when ``(target_mean - mu) / sigma > threshold``. Detected
pixels are clustered (8-connected), and clusters whose length is outside 30–600 m are dropped.

Speed: box sums come from integral images. The background statistics vary slowly (the ring is
50–80 px out), so they are evaluated on a grid of ``block_px`` × ``block_px`` blocks and the
window sizes are rounded to whole blocks (±2 px on a 500/800 m window at the default 4 px); the
target window is evaluated at every pixel. A 512 × 512 tile takes 5–10 ms on one core.

Threshold: docs/references.md §8 warns that the Gaussian/gamma threshold for a PFA (``z ≈ 5`` for
10^-6.5) badly underestimates false alarms on K-distributed sea. The z-threshold for a PFA is
therefore taken from a power-law tail fitted to the statistic measured on clutter
(:func:`calibrate_tail`, stored below as :data:`CALIBRATED_TAIL`); :func:`calibrate_threshold`
redoes it on your own clutter-only tiles.

Nodata (uint8 0 in the VV channel) is neither detected nor counted in any window, and the tile
border is treated like nodata, so detections in the tile margin are still produced (from a
smaller background ring); the pipeline's overlapping tiles and centre-distance NMS de-duplicate
them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from sarvessel.runtime.contract import TILE_SIZE
from sarvessel.runtime.detections import Detections
from sarvessel.runtime.preprocess import DEFAULT_BANDS, BandRange

log = logging.getLogger(__name__)

__all__ = [
    "CALIBRATED_TAIL",
    "CFARBackend",
    "CFARConfig",
    "TailModel",
    "calibrate_tail",
    "calibrate_threshold",
    "cfar_statistic",
    "detect_tile",
]


@dataclass(frozen=True)
class TailModel:
    """Power-law (Pareto) model of the clutter tail of the CFAR statistic ``z``.

    ``P(z > t) = q0 * (t / z0) ** -alpha`` for ``t >= z0``: the per-pixel false-alarm
    probability of threshold ``t``. On K-distributed clutter an exponential tail fitted at 10^-3
    underestimated the false alarms at 10^-6 five-fold; the power law (Hill estimator)
    extrapolated to within 20 %.
    """

    #: Statistic at which the fit starts (the empirical ``1 - q0`` quantile, > 0).
    z0: float
    #: Fraction of clutter pixels above ``z0``.
    q0: float
    #: Tail exponent (larger: lighter tail).
    alpha: float

    def threshold(self, pfa: float) -> float:
        """z-threshold that gives per-pixel false-alarm probability ``pfa`` on the clutter."""
        if not 0.0 < pfa < 1.0:
            raise ValueError(f"pfa must be in (0, 1), got {pfa}")
        if pfa >= self.q0:
            log.warning("pfa %.3g is above the fitted tail (q0 = %.3g); using z0", pfa, self.q0)
            return self.z0
        return self.z0 * (self.q0 / pfa) ** (1.0 / self.alpha)

    def pfa(self, threshold: float) -> float:
        """Per-pixel false-alarm probability of a z-threshold (inverse of :meth:`threshold`)."""
        if threshold <= self.z0:
            return self.q0
        return self.q0 * (threshold / self.z0) ** -self.alpha


#: Tail of the statistic on sea clutter, from which the default threshold follows.
#: How it was obtained: 96 tiles of 512 x 512 px (25 MPx) of K-distributed clutter made by
#: ``k_clutter_db`` in tests/runtime/test_cfar.py (intensity = texture x speckle; texture
#: Gamma(nu) with a 3 px Gaussian-copula correlation, nu in {1, 2, 4, 10}, a quarter of the
#: tiles each, nu = 1 being the spikiest sea of the literature; speckle of 4 looks, each look a
#: complex Gaussian field smoothed over 0.7 px as the 20 x 22 m resolution cell does at 10 m
#: pixels; mean -20 dB VV), quantised through preprocess exactly as scenes are, default
#: CFARConfig windows, fitted with ``calibrate_tail(tiles, q0=1e-4)``. Fitted on one half of
#: the tiles, the thresholds for 10^-5 and 10^-6 gave 1.0e-5 and 0.95e-6 on the other half.
#: The resulting default threshold for 10^-6.5 is z = 20.3; a Gaussian model of the same
#: statistic (target mean of 25 iid pixels) would say z = 5 / 5 = 1.0.
CALIBRATED_TAIL = TailModel(z0=6.63, q0=1e-4, alpha=5.16)


@dataclass(frozen=True)
class CFARConfig:
    """Settings of the CFAR detector; distances in metres, converted with ``pixel_size_m``."""

    #: Ground spacing of a pixel (m). The default is 10 (Sentinel-1 GRD as in xView3).
    pixel_size_m: float = 10.0
    #: Side of the square target window whose mean is tested (m); rounded to an odd number of
    #: pixels. The default is 50 (SNAP).
    target_window_m: float = 50.0
    #: Side of the guard box excluded from the background (m). The default is 500 (SNAP).
    guard_window_m: float = 500.0
    #: Side of the background box (m); the ring between it and the guard box gives ``mu`` and
    #: ``sigma``. The default is 800 (SNAP).
    background_window_m: float = 800.0
    #: Target per-pixel false-alarm probability; converted to a z-threshold by ``tail``.
    #: The default is 10^-6.5 (SNAP).
    pfa: float = 10**-6.5
    #: Explicit z-threshold on ``(target_mean - mu) / sigma``; overrides ``pfa`` when set.
    #: The default is None.
    threshold: float | None = None
    #: Clutter tail model that turns ``pfa`` into a threshold. The default is
    #: :data:`CALIBRATED_TAIL`.
    tail: TailModel = field(default=CALIBRATED_TAIL)
    #: Shortest object kept (m): its extent in the image along the cluster's major axis
    #: (before the ``psf_length_m`` correction). The default is 30.
    min_length_m: float = 30.0
    #: Longest object kept (m), measured likewise; longer clusters are land, ice or sea-state
    #: artefacts. The default is 600.
    max_length_m: float = 600.0
    #: Pixels more than this below the cluster's peak (dB) do not count for its length; SAR
    #: impulse-response sidelobes are 13 dB (sinc²) or more below the peak. The default is 10.
    length_rel_db: float = 10.0
    #: Width of the impulse response at ``length_rel_db`` below its peak (m), subtracted from
    #: the measured extent to estimate the object's length (a point target still spans the
    #: resolution cell). The default is 30, fitted on synthetic S1 IW scenes (20 x 22 m
    #: resolution) of :mod:`sarvessel.synth.generate`; it raised the xView3 length accuracy on
    #: them from 0.30 to 0.71.
    psf_length_m: float = 30.0
    #: Smallest fraction of the background ring that must hold valid pixels (tile border and
    #: nodata are invalid); pixels with less get no detection. The default is 0.25.
    min_background_fraction: float = 0.25
    #: Block size (px) of the grid on which background statistics are evaluated. The default
    #: is 4; 1 evaluates them at every pixel (about 10 times slower).
    block_px: int = 4
    #: Smallest side of the emitted box (px), so the box is usable as a training/eval box.
    #: The default is 16.
    min_box_px: int = 16
    #: Channel of the tile holding VV. The default is 0.
    channel: int = 0

    def __post_init__(self) -> None:
        if self.pixel_size_m <= 0:
            raise ValueError(f"pixel_size_m must be positive, got {self.pixel_size_m}")
        if not 0 < self.target_window_m < self.guard_window_m < self.background_window_m:
            raise ValueError(
                "need 0 < target_window_m < guard_window_m < background_window_m, got "
                f"{self.target_window_m}, {self.guard_window_m}, {self.background_window_m}"
            )
        if not 0 <= self.min_length_m <= self.max_length_m:
            raise ValueError(f"bad length range {self.min_length_m}..{self.max_length_m} m")
        if self.block_px < 1:
            raise ValueError(f"block_px must be >= 1, got {self.block_px}")
        if not 0.0 < self.pfa < 1.0:
            raise ValueError(f"pfa must be in (0, 1), got {self.pfa}")

    @property
    def z_threshold(self) -> float:
        """The z-threshold in use: ``threshold`` if set, else ``tail.threshold(pfa)``."""
        return self.threshold if self.threshold is not None else self.tail.threshold(self.pfa)

    def target_px(self) -> int:
        """Side of the target window in pixels (odd)."""
        return _odd(self.target_window_m / self.pixel_size_m)

    def ring_blocks(self) -> tuple[int, int]:
        """Sides of the guard and background boxes in blocks (odd, background > guard)."""
        px = self.pixel_size_m * self.block_px
        guard = _odd(self.guard_window_m / px)
        outer = max(_odd(self.background_window_m / px), guard + 2)
        return guard, outer


class CFARBackend:
    """Two-parameter CFAR detector with the :class:`~sarvessel.runtime.backends.base.Backend`
    interface: ``detect(uint8 [B, C, T, T]) -> list[Detections]`` in tile pixel coordinates.

    Every detection is class 1 (vessel: CFAR cannot tell fishing), with score
    ``z / (z + threshold)`` of the cluster's peak statistic (in (0.5, 1), monotone in ``z``).
    """

    name = "cfar"

    def __init__(
        self,
        config: CFARConfig | None = None,
        *,
        channels: int = 2,
        tile_size: int = TILE_SIZE,
        bands: Sequence[BandRange] = DEFAULT_BANDS,
    ) -> None:
        """config: detector settings (the default is ``CFARConfig()``). channels, tile_size: the
        tile shape the pipeline should make; any tile size works. bands: range of each channel
        in the uint8 tiles (to invert the preprocessing); the default is VV, VH."""
        self.config = config or CFARConfig()
        self.channels = channels
        self.tile_size = tile_size
        if not 0 <= self.config.channel < min(channels, len(bands)):
            raise ValueError(f"channel {self.config.channel} not among {channels} channels")
        self.band = bands[self.config.channel]

    @property
    def fingerprint(self) -> str:
        """The settings that decide its detections (a resumed scene must match them)."""
        return f"cfar:{self.config!r}:{self.band!r}"

    def infer(self, batch: np.ndarray) -> list[Detections]:
        """Detect in ``batch`` (``uint8 [B, C, H, W]``); one :class:`Detections` per tile."""
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.dtype != np.uint8:
            raise ValueError(f"expected uint8 [B, C, H, W], got {batch.dtype} {batch.shape}")
        if batch.shape[1] <= self.config.channel:
            raise ValueError(f"tile has {batch.shape[1]} channels; VV is channel "
                             f"{self.config.channel}")
        return [detect_tile(t[self.config.channel], config=self.config, band=self.band)
                for t in batch]


def detect_tile(
    tile: np.ndarray, *, config: CFARConfig | None = None, band: BandRange = DEFAULT_BANDS[0]
) -> Detections:
    """CFAR detections of one preprocessed VV tile ``uint8 [H, W]`` (tile pixel coordinates).

    rows/cols: intensity-weighted centroid of the cluster. boxes: cluster extent, grown to at
    least ``min_box_px`` a side. lengths_px: extent along the major axis of the cluster's pixels
    within ``length_rel_db`` of its peak, less ``psf_length_m`` (at least 1 px). Sorted by
    decreasing score.
    """
    cfg = config or CFARConfig()
    tile = _check_tile(tile)
    h, w = tile.shape
    x, valid = _to_intensity(tile, band)
    mu, sigma, ok = _background(x, valid, cfg)
    thr = cfg.z_threshold
    b = cfg.block_px
    hb, wb = mu.shape
    level = np.where(ok, mu + thr * sigma, np.inf).astype(np.float32)
    tsum, tcount = _target_sums(x, valid, cfg.target_px())
    # Compare per block without materialising the full-resolution threshold map.
    pad = _pad_to(tsum, hb * b, wb * b)
    cnt = _pad_to(tcount, hb * b, wb * b)
    with np.errstate(invalid="ignore"):  # inf * 0 where there is no data: never a hit
        hit = pad.reshape(hb, b, wb, b) > (level[:, None, :, None] * cnt.reshape(hb, b, wb, b))
    mask = hit.reshape(hb * b, wb * b)[:h, :w] & valid
    if not mask.any():
        return Detections()
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    rr, cc = np.nonzero(mask)
    lab = labels[rr, cc] - 1
    order = np.argsort(lab, kind="stable")
    rr, cc, lab = rr[order], cc[order], lab[order]
    starts = np.searchsorted(lab, np.arange(n))
    br, bc = rr // b, cc // b
    xi = x[rr, cc].astype(np.float64)
    zi = (tsum[rr, cc] / tcount[rr, cc] - mu[br, bc]) / sigma[br, bc]
    core = xi > level[br, bc]
    return _clusters_to_detections(rr, cc, lab, starts, xi, zi, core, (h, w), cfg)


def cfar_statistic(
    tile: np.ndarray, *, config: CFARConfig | None = None, band: BandRange = DEFAULT_BANDS[0]
) -> np.ndarray:
    """The CFAR statistic ``(target_mean - mu) / sigma`` of a uint8 VV tile, ``float32 [H, W]``.

    NaN where no decision is made (nodata pixel, or too little valid background).
    """
    cfg = config or CFARConfig()
    tile = _check_tile(tile)
    h, w = tile.shape
    x, valid = _to_intensity(tile, band)
    mu, sigma, ok = _background(x, valid, cfg)
    b = cfg.block_px
    tsum, tcount = _target_sums(x, valid, cfg.target_px())
    mean = np.divide(tsum, tcount, out=np.zeros_like(tsum), where=tcount > 0)
    up = (lambda a: np.repeat(np.repeat(a, b, 0), b, 1)[:h, :w])  # noqa: E731
    z = ((mean - up(mu)) / up(sigma)).astype(np.float32)
    z[~(valid & up(ok))] = np.nan
    return z


def calibrate_tail(
    tiles: np.ndarray | Sequence[np.ndarray],
    *,
    config: CFARConfig | None = None,
    q0: float = 1e-4,
    band: BandRange = DEFAULT_BANDS[0],
) -> TailModel:
    """Fit the power-law tail of the CFAR statistic on clutter-only tiles (Hill estimator).

    tiles: uint8 VV tiles ``[N, H, W]`` (or a list of 2-D tiles) that contain no targets.
    q0: fraction of pixels in the fitted tail; the default is 10^-4 (it needs at least 10/q0
    valid pixels, better 1000/q0). The threshold for a PFA far below ``q0`` is extrapolated
    along the tail, so a few megapixels of clutter calibrate PFAs of 10^-7.
    """
    cfg = config or CFARConfig()
    z = np.concatenate([cfar_statistic(t, config=cfg, band=band).ravel() for t in tiles])
    z = z[np.isfinite(z)].astype(np.float64)
    if len(z) * q0 < 10:
        raise ValueError(f"{len(z)} valid clutter pixels are too few to fit a tail at q0={q0}")
    z0 = float(np.quantile(z, 1.0 - q0))
    if z0 <= 0:
        raise ValueError(f"the 1 - q0 quantile of the statistic is {z0:.3g} <= 0: lower q0")
    excess = z[z > z0]
    alpha = 1.0 / float(np.mean(np.log(excess / z0))) if len(excess) else 50.0
    return TailModel(z0=z0, q0=float(len(excess) / len(z)), alpha=alpha)


def calibrate_threshold(
    tiles: np.ndarray | Sequence[np.ndarray],
    *,
    pfa: float,
    config: CFARConfig | None = None,
    q0: float = 1e-4,
    band: BandRange = DEFAULT_BANDS[0],
) -> float:
    """z-threshold giving per-pixel false-alarm probability ``pfa`` on clutter-only ``tiles``.

    Uses the empirical quantile when the tiles hold at least 100/pfa pixels, otherwise the
    power-law tail of :func:`calibrate_tail`. Pass the result as ``CFARConfig(threshold=...)``.
    """
    cfg = config or CFARConfig()
    z = np.concatenate([cfar_statistic(t, config=cfg, band=band).ravel() for t in tiles])
    z = z[np.isfinite(z)]
    if len(z) * pfa >= 100:
        return float(np.quantile(z.astype(np.float64), 1.0 - pfa))
    return calibrate_tail(tiles, config=cfg, q0=q0, band=band).threshold(pfa)


# ---------------------------------------------------------------------------------------------
# helpers


def _odd(n: float) -> int:
    """Nearest odd integer >= 1 (windows are centred on a pixel or block)."""
    k = max(1, int(round(n)))
    return k if k % 2 else k + 1


def _check_tile(tile: np.ndarray) -> np.ndarray:
    tile = np.asarray(tile)
    if tile.ndim != 2 or tile.dtype != np.uint8:
        raise ValueError(f"expected a uint8 [H, W] VV tile, got {tile.dtype} {tile.shape}")
    return tile


_LUTS: dict[tuple[float, float], np.ndarray] = {}


def _to_intensity(tile: np.ndarray, band: BandRange) -> tuple[np.ndarray, np.ndarray]:
    """uint8 → linear intensity (float32, 0 at nodata) by inverting preprocess, and validity."""
    lut = _LUTS.get((band.lo, band.hi))
    if lut is None:
        db = band.lo + np.arange(256, dtype=np.float64) * (band.hi - band.lo) / 255.0
        lut = (10.0 ** (db / 10.0)).astype(np.float32)
        lut[0] = 0.0
        _LUTS[(band.lo, band.hi)] = lut
    return lut[tile], tile != 0


def _pad_to(a: np.ndarray, h: int, w: int) -> np.ndarray:
    if a.shape == (h, w):
        return a
    out = np.zeros((h, w), a.dtype)
    out[: a.shape[0], : a.shape[1]] = a
    return out


def _block_sum(a: np.ndarray, b: int) -> np.ndarray:
    """Sums over ``b`` × ``b`` blocks of a float32 array whose sides are multiples of ``b``."""
    cols = a[:, 0::b].copy()
    for j in range(1, b):
        cols += a[:, j::b]
    out = cols[0::b].astype(np.float64)
    for i in range(1, b):
        out += cols[i::b]
    return out


def _ring_sum(a: np.ndarray, inner: int, outer: int) -> np.ndarray:
    """Sum over the centred ``outer`` box minus the centred ``inner`` box (zeros outside), from
    one integral image."""
    h, w = a.shape
    r = outer // 2
    integ = np.zeros((h + 2 * r + 1, w + 2 * r + 1), np.float64)
    integ[r + 1 : r + 1 + h, r + 1 : r + 1 + w] = a
    np.cumsum(integ, axis=0, out=integ)
    np.cumsum(integ, axis=1, out=integ)

    def box(k: int) -> np.ndarray:
        o = r - k // 2  # offset of this box's top-left corner in the padded integral
        return (integ[o + k : o + k + h, o + k : o + k + w] - integ[o : o + h, o + k : o + k + w]
                - integ[o + k : o + k + h, o : o + w] + integ[o : o + h, o : o + w])

    return box(outer) - box(inner)


def _background(
    x: np.ndarray, valid: np.ndarray, cfg: CFARConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ring mean, std and usability on the block grid, each ``[ceil(H/b), ceil(W/b)]``."""
    b = cfg.block_px
    h, w = x.shape
    hb, wb = -(-h // b), -(-w // b)
    xp = _pad_to(x, hb * b, wb * b)
    s1 = _block_sum(xp, b)
    s2 = _block_sum(xp * xp, b)
    if h == hb * b and w == wb * b and valid.all():
        n = np.full((hb, wb), float(b * b))
    else:
        n = _block_sum(_pad_to(valid, hb * b, wb * b).astype(np.float32), b)
    guard, outer = cfg.ring_blocks()
    rs1, rs2, rn = (_ring_sum(a, guard, outer) for a in (s1, s2, n))
    full = float(outer * outer - guard * guard) * b * b
    ok = rn >= max(cfg.min_background_fraction * full, 2.0)
    rn_safe = np.where(ok, rn, 1.0)
    mu = rs1 / rn_safe
    var = np.maximum(rs2 / rn_safe - mu * mu, 0.0)
    # A floor keeps sigma > 0 on constant (e.g. saturated) backgrounds.
    sigma = np.sqrt(var) + 1e-6 * mu + 1e-12
    return mu, sigma, ok


def _target_sums(x: np.ndarray, valid: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum of ``x`` and count of valid pixels over the centred ``k`` × ``k`` target window."""
    if k == 1:
        return x.astype(np.float32), valid.astype(np.float32)
    tsum = _shift_box(x, k)
    if valid.all():
        tcount = np.outer(_window_counts(x.shape[0], k), _window_counts(x.shape[1], k))
    else:
        tcount = _shift_box(valid.astype(np.float32), k)
    return tsum, tcount


def _window_counts(n: int, k: int) -> np.ndarray:
    """Pixels of a centred window of ``k`` inside ``0..n-1``, for each position."""
    i = np.arange(n)
    r = k // 2
    return (np.minimum(i + r, n - 1) - np.maximum(i - r, 0) + 1).astype(np.float32)


def _shift_box(a: np.ndarray, k: int) -> np.ndarray:
    """Box sum by ``2(k-1)`` shifted adds (cheaper than an integral image for small ``k``)."""
    r = k // 2
    h, w = a.shape
    p = np.zeros((h + 2 * r, w + 2 * r), np.float32)
    p[r : r + h, r : r + w] = a
    rows = p[0:h].copy()
    for i in range(1, k):
        rows += p[i : i + h]
    out = rows[:, 0:w].copy()
    for j in range(1, k):
        out += rows[:, j : j + w]
    return out


def _clusters_to_detections(
    rr: np.ndarray, cc: np.ndarray, lab: np.ndarray, starts: np.ndarray, xi: np.ndarray,
    zi: np.ndarray, core: np.ndarray, shape: tuple[int, int], cfg: CFARConfig,
) -> Detections:
    """One detection per cluster (pixels sorted by cluster ``lab``, cluster k from starts[k])."""
    h, w = shape
    n = len(starts)
    rf, cf = rr.astype(np.float64), cc.astype(np.float64)
    wsum = np.add.reduceat(xi, starts)
    row_c = np.add.reduceat(xi * rf, starts) / wsum
    col_c = np.add.reduceat(xi * cf, starts) / wsum
    zpeak = np.maximum.reduceat(zi, starts)
    rmin, rmax = np.minimum.reduceat(rr, starts), np.maximum.reduceat(rr, starts)
    cmin, cmax = np.minimum.reduceat(cc, starts), np.maximum.reduceat(cc, starts)
    # Length: the extent along their intensity-weighted major axis of the "core" pixels, those
    # above the CFAR level and within length_rel_db of the cluster's peak (this cuts the PSF's
    # sidelobes and skirt); a cluster without core pixels uses all its pixels.
    xpeak = np.maximum.reduceat(xi, starts)
    core = core & (xi >= xpeak[lab] * 10.0 ** (-cfg.length_rel_db / 10.0))
    has_core = np.add.reduceat(core.astype(np.int64), starts) > 0
    wl = xi * np.where(core | ~has_core[lab], 1.0, 0.0)
    wls = np.add.reduceat(wl, starts)
    mr = np.add.reduceat(wl * rf, starts) / wls
    mc = np.add.reduceat(wl * cf, starts) / wls
    dr, dc = rf - mr[lab], cf - mc[lab]
    srr = np.add.reduceat(wl * dr * dr, starts)
    scc = np.add.reduceat(wl * dc * dc, starts)
    src = np.add.reduceat(wl * dr * dc, starts)
    theta = 0.5 * np.arctan2(2.0 * src, srr - scc)
    proj = dr * np.cos(theta)[lab] + dc * np.sin(theta)[lab]
    sel = wl > 0
    big = np.where(sel, proj, -np.inf)
    small = np.where(sel, proj, np.inf)
    extent_px = np.maximum.reduceat(big, starts) - np.minimum.reduceat(small, starts) + 1.0
    length_m = extent_px * cfg.pixel_size_m
    length_px = np.maximum(extent_px - cfg.psf_length_m / cfg.pixel_size_m, 1.0)
    # Clusters cut by the tile edge may be longer than they look: keep short ones (the
    # overlapping neighbour tile sees them whole and NMS keeps one).
    on_edge = (rmin == 0) | (cmin == 0) | (rmax == h - 1) | (cmax == w - 1)
    keep = ((length_m >= cfg.min_length_m) | on_edge) & (length_m <= cfg.max_length_m)
    if not keep.any():
        return Detections()
    thr = cfg.z_threshold
    scores = zpeak / (zpeak + thr) if thr > 0 else 1.0 - np.exp(-np.maximum(zpeak, 0.0))
    half = float(cfg.min_box_px) / 2.0
    top, bottom = rmin - 0.5, rmax + 0.5
    left, right = cmin - 0.5, cmax + 0.5
    mid_r, mid_c = (top + bottom) / 2, (left + right) / 2
    top, bottom = np.minimum(top, mid_r - half), np.maximum(bottom, mid_r + half)
    left, right = np.minimum(left, mid_c - half), np.maximum(right, mid_c + half)
    boxes = np.stack([top, left, bottom, right], axis=1)
    out = Detections(row_c, col_c, np.clip(scores, 0.0, 1.0), np.ones(n, np.int64), boxes,
                     length_px).select(np.nonzero(keep)[0])
    order = np.lexsort((np.arange(len(out)), -out.scores.astype(np.float64)))
    log.debug("cfar: %d clusters, %d kept", n, len(out))
    return out.select(order)
