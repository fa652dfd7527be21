"""Smooth fields of a synthetic Sentinel-1 IW GRD scene: geometry, land, wind, clutter, speckle.

Everything that varies slowly is made once on a low-resolution grid (``FACTOR`` = 8 px = 80 m
cells) and upsampled bilinearly per block of rows; only speckle, the land/sea decision and the
swath edges are evaluated per 10 m pixel. Every per-pixel value depends only on its global row and
column, never on how the scene is cut into blocks, so output bytes do not depend on block size.

Physics (docs/references.md §9), per band: ``intensity = (σ0 · τ + n) · s`` where σ0 is the sea
backscatter from wind speed/direction and incidence angle (a CMOD-like fit), τ ~ Gamma(ν, 1/ν) is
the spatially correlated K-clutter texture (ν varies over the scene), n is the residual thermal
noise (NESZ, scalloped per IW sub-swath) and s ~ Gamma(L, 1/L) is speckle with L = 4.4 looks. VH sea
σ0 is VV − (7–9) dB. Land is bright (VV about −8 dB), textured by relief and field parcels, with a
sharp coastline. Values are produced in dB because that is what xView3 stores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, special

#: Low-resolution grid step in pixels (80 m).
FACTOR = 8
#: Grid step of the land backscatter and other smooth fields in pixels (160 m).
LAND_FACTOR = 16
#: Auxiliary (OWI / bathymetry) grid step in pixels (500 m).
AUX_FACTOR = 50
#: Pixel spacing of the VV/VH rasters (m).
PIXEL_M = 10.0
#: Equivalent number of looks of Sentinel-1 IW GRDH.
LOOKS = 4.4
#: Entries of the speckle look-up table (uint16 index).
_LUT_SIZE = 65536
#: Slant range / platform velocity (s): azimuth shift per m/s of radial velocity.
R_OVER_V = 850e3 / 7600.0


@dataclass(frozen=True)
class SwathGeometry:
    """Where the valid swath lies in the image and how radar axes map onto it.

    The GRD frame, reprojected to lon/lat, is a rectangle rotated by ``theta`` (rad) from the row
    axis; outside it the rasters hold nodata, giving the slanted edges of real frames. ``u`` is
    the along-track (azimuth) coordinate, ``v`` across-track (range), both in pixels from the
    image centre. Incidence grows with ``v`` (``near_sign`` = +1) or against it (−1).
    """

    height: int
    width: int
    theta: float
    half_u: float
    half_v: float
    near_sign: float
    inc_near: float = 30.5
    inc_far: float = 45.8

    @property
    def az_hat(self) -> tuple[float, float]:
        """Unit azimuth direction as (d_row, d_col)."""
        return math.cos(self.theta), math.sin(self.theta)

    @property
    def rg_hat(self) -> tuple[float, float]:
        """Unit range (across-track) direction as (d_row, d_col)."""
        return -math.sin(self.theta), math.cos(self.theta)

    def uv(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Azimuth/range coordinates (px from centre) of fractional pixel positions."""
        dy = np.asarray(rows, np.float64) + 0.5 - self.height / 2
        dx = np.asarray(cols, np.float64) + 0.5 - self.width / 2
        c, s = math.cos(self.theta), math.sin(self.theta)
        return dy * c + dx * s, -dy * s + dx * c

    def incidence_deg(self, v: np.ndarray) -> np.ndarray:
        """Incidence angle (°) at range coordinate ``v`` (px)."""
        p = np.clip(0.5 + self.near_sign * np.asarray(v) / (2 * self.half_v), 0.0, 1.0)
        return self.inc_near + (self.inc_far - self.inc_near) * p

    def inside(self, rows: np.ndarray, cols: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """True where fractional positions lie ``margin`` px or more inside the swath."""
        u, v = self.uv(rows, cols)
        return (np.abs(u) <= self.half_u - margin) & (np.abs(v) <= self.half_v - margin)

    def valid_cols(self, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        """Per row of ``r0:r1``, the valid columns ``[lo, hi)`` (the swath is convex)."""
        dy = np.arange(r0, r1, dtype=np.float64) + 0.5 - self.height / 2
        c, s = math.cos(self.theta), math.sin(self.theta)
        xlo = (dy * s - self.half_v) / c
        xhi = (dy * s + self.half_v) / c
        if abs(s) > 1e-12:
            a = (-self.half_u - dy * c) / s
            b = (self.half_u - dy * c) / s
            xlo = np.maximum(xlo, np.minimum(a, b))
            xhi = np.minimum(xhi, np.maximum(a, b))
        else:
            out = np.abs(dy * c) > self.half_u
            xlo = np.where(out, np.inf, xlo)
        cj = self.width / 2
        lo = np.ceil(xlo + cj - 0.5)
        hi = np.floor(xhi + cj - 0.5) + 1
        lo = np.clip(lo, 0, self.width).astype(np.intp)
        hi = np.clip(hi, 0, self.width).astype(np.intp)
        return lo, np.maximum(hi, lo)


@dataclass
class LowResFields:
    """Scene-wide low-resolution fields (float32, ``FACTOR``-px cells) and 500 m aux grids."""

    land: np.ndarray  #: land field; land where the bilinearly upsampled field is > 0
    sea_db: tuple[np.ndarray, np.ndarray]  #: mean sea intensity (dB) VV, VH incl. texture/noise
    land_db: tuple[np.ndarray, np.ndarray]  #: mean land intensity (dB) VV, VH (LAND_FACTOR)
    parcels_db: np.ndarray  #: hashed per-parcel land offsets (dB), see :func:`parcel_rows`
    has_land_rows: np.ndarray  #: bool per low-res row: any land cell within ±1 row
    wind_speed: np.ndarray  #: 500 m grid, m/s
    wind_dir: np.ndarray  #: 500 m grid, ° (meteorological, direction the wind comes from)
    owi_mask: np.ndarray  #: 500 m grid, uint8 0 sea / 1 land
    bathymetry: np.ndarray  #: 500 m grid, m (negative below sea level)
    parcel_angle: float = 0.3  #: rotation of the parcel grid (rad)
    shore_offset_km: float = 0.0  #: open sea: distance of the virtual coast from pixel (0, 0)


#: Land parcel (agricultural field) sizes in pixels along the two axes of a rotated grid.
PARCEL = (19.0, 31.0)
#: Number of distinct parcel values (hashed from the parcel index).
PARCEL_TABLE = 4096


def make_fields(
    geom: SwathGeometry, rng: np.random.Generator, *, land: bool, land_fraction: float
) -> LowResFields:
    """All low-resolution fields of a scene (deterministic given ``rng``'s state)."""
    h, w = geom.height, geom.width
    n, m = -(-h // FACTOR), -(-w // FACTOR)
    rows_lr = (np.arange(n, dtype=np.float64) + 0.5) * FACTOR - 0.5
    cols_lr = (np.arange(m, dtype=np.float64) + 0.5) * FACTOR - 0.5

    # --- land: a coast entering from one side, roughened by fractal noise, plus islands -------
    if land:
        ang = rng.uniform(0, 2 * math.pi)
        land_lr = fractal_noise((n, m), rng, coarsest=6, persistence=0.55)
        land_lr *= np.float32(rng.uniform(0.10, 0.18))
        yy = ((rows_lr - h / 2) / max(h, w) * math.cos(ang)).astype(np.float32)
        xx = ((cols_lr - w / 2) / max(h, w) * math.sin(ang)).astype(np.float32)
        for a0 in range(0, n, 256):  # + ramp across the scene, row chunks
            land_lr[a0 : a0 + 256] += yy[a0 : a0 + 256, None] + xx[None, :]
        sub = land_lr[:: max(1, n // 256), :: max(1, m // 256)]
        land_lr -= np.float32(np.quantile(sub, 1.0 - land_fraction))
    else:
        land_lr = np.full((n, m), -100.0, np.float32)
    is_land = land_lr > 0

    # --- 500 m aux grids: mask, wind, bathymetry -------------------------------------------
    na, ma = -(-h // AUX_FACTOR), -(-w // AUX_FACTOR)
    ra = (np.arange(na) + 0.5) * AUX_FACTOR - 0.5
    ca = (np.arange(ma) + 0.5) * AUX_FACTOR - 0.5
    land_aux = resample_separable(land_lr, (ra + 0.5) / FACTOR - 0.5, (ca + 0.5) / FACTOR - 0.5)
    owi_mask = (land_aux > 0).astype(np.uint8)
    off = 0.0
    if owi_mask.any() and not owi_mask.all():
        dist_sea_km = ndimage.distance_transform_edt(owi_mask == 0) * (AUX_FACTOR * PIXEL_M / 1e3)
        dist_land_km = ndimage.distance_transform_edt(owi_mask == 1) * (AUX_FACTOR * PIXEL_M / 1e3)
    else:  # no coast in the scene: a virtual coast beyond the top-left corner
        off = rng.uniform(20.0, 120.0)
        dist_sea_km = off + np.hypot(*np.meshgrid(ra, ca, indexing="ij")) * PIXEL_M / 1e3
        dist_land_km = np.zeros_like(dist_sea_km)
    bn = fractal_noise((na, ma), rng, coarsest=4, persistence=0.5).astype(np.float64)
    shelf = rng.uniform(30.0, 150.0)
    depth = 15.0 + rng.uniform(800, 4500) * (1 - np.exp(-dist_sea_km / shelf))
    depth *= 1.0 + 0.15 * bn
    elev = (3.0 + rng.uniform(100, 900) * (1 - np.exp(-dist_land_km / 15.0))) * (1 + 0.4 * bn)
    bathymetry = np.where(owi_mask == 1, np.maximum(elev, 1.0), -np.maximum(depth, 2.0))

    wind_from = rng.uniform(0, 360)
    u_mean = rng.uniform(3.5, 11.0)
    wn = fractal_noise((na, ma), rng, coarsest=3, persistence=0.6).astype(np.float64)
    slick = fractal_noise((na, ma), rng, coarsest=5, persistence=0.5).astype(np.float64)
    speed = u_mean * np.exp(0.18 * wn)
    speed *= 1.0 - 0.55 / (1.0 + np.exp(-(slick - 1.3) * 4.0))  # low-wind patches (slicks)
    if owi_mask.any():  # wind shadow in the lee of land, up to ~20 km downwind
        to_rad = math.radians(wind_from)
        step_r, step_c = math.cos(to_rad), -math.sin(to_rad)  # towards where the wind comes from
        rr, cc = np.meshgrid(np.arange(na, dtype=np.float64), np.arange(ma, dtype=np.float64),
                             indexing="ij")
        upwind_km = np.full((na, ma), np.inf)
        for k in range(1, 41):
            ri = np.clip(np.rint(rr + k * step_r), 0, na - 1).astype(np.intp)
            ci = np.clip(np.rint(cc + k * step_c), 0, ma - 1).astype(np.intp)
            hit = (owi_mask[ri, ci] == 1) & ~np.isfinite(upwind_km)
            upwind_km[hit] = k * AUX_FACTOR * PIXEL_M / 1e3
        speed *= 1.0 - 0.6 * np.exp(-upwind_km / 6.0)
    speed = np.clip(speed, 0.8, 25.0)
    wind_dir = (wind_from + 12.0 * wn) % 360.0

    # --- sea backscatter on the low-res grid (float32, in row chunks to bound memory) -----
    # K-clutter texture: correlated Gaussian + swell → Gamma(ν, 1/ν) by Wilson–Hilferty
    tau = ndimage.gaussian_filter(rng.standard_normal((n, m), dtype=np.float32), 0.8)
    tau /= np.float32(max(float(tau.std()), 1e-6))
    swell_len = rng.uniform(2.6, 5.0)  # cells (210–400 m)
    swell_dir = rng.uniform(0, math.pi)
    swell_phase = rng.uniform(0, 2 * math.pi)
    swell_amp = np.float32(rng.uniform(0.2, 0.6))
    n2, m2 = -(-h // LAND_FACTOR), -(-w // LAND_FACTOR)
    to2 = FACTOR / LAND_FACTOR  # low-res index → coarse index: (i + 0.5) * to2 - 0.5
    cols2 = (np.arange(m, dtype=np.float64) + 0.5) * to2 - 0.5
    cols_aux = (cols_lr + 0.5) / AUX_FACTOR - 0.5
    amp_c = fractal_noise((n2, m2), rng, coarsest=3, persistence=0.5)
    kx = np.float32(2 * math.pi / swell_len * math.sin(swell_dir))
    ky = np.float32(2 * math.pi / swell_len * math.cos(swell_dir))
    cols_k = np.arange(m, dtype=np.float32) * kx
    nu_mean = math.log(rng.uniform(5.0, 16.0))
    nu_c = fractal_noise((n2, m2), rng, coarsest=4, persistence=0.5)
    speed32 = speed.astype(np.float32)
    look_az = math.degrees(math.atan2(geom.rg_hat[1], geom.rg_hat[0]))
    rel = math.radians(wind_from - look_az)
    wind_dir_db = 1.2 * math.cos(2 * rel) + 0.4 * math.cos(rel)
    sea_vv = np.empty((n, m), np.float32)
    sea_vh = np.empty((n, m), np.float32)
    c, s = math.cos(geom.theta), math.sin(geom.theta)
    dx = (cols_lr + 0.5 - w / 2).astype(np.float32)
    for a0 in range(0, n, 256):
        a1 = min(n, a0 + 256)
        sl = slice(a0, a1)
        rows2 = (np.arange(a0, a1, dtype=np.float64) + 0.5) * to2 - 0.5
        a = resample_separable(amp_c, rows2, cols2) * np.float32(0.4) + np.float32(0.6)
        a *= swell_amp
        swell = np.sin(np.arange(a0, a1, dtype=np.float32)[:, None] * ky + cols_k[None, :]
                       + np.float32(swell_phase))
        z = (tau[sl] + a * swell) / np.sqrt(np.float32(1.0) + a * a * np.float32(0.5))
        nu = np.exp(np.float32(nu_mean) + np.float32(0.5) * resample_separable(nu_c, rows2, cols2))
        base = np.float32(1.0) - np.float32(1.0 / 9.0) / nu + z / (np.float32(3.0) * np.sqrt(nu))
        t = np.maximum(base, np.float32(0.08)) ** 3
        dy = (rows_lr[sl] + 0.5 - h / 2).astype(np.float32)
        v = dx[None, :] * np.float32(c) - dy[:, None] * np.float32(s)
        p = np.clip(np.float32(0.5) + np.float32(geom.near_sign / (2 * geom.half_v)) * v, 0, 1)
        inc = np.float32(geom.inc_near) + np.float32(geom.inc_far - geom.inc_near) * p
        sp = resample_separable(speed32, (rows_lr[sl] + 0.5) / AUX_FACTOR - 0.5, cols_aux)
        sp = np.maximum(sp, np.float32(0.5))
        lsp = np.log10(sp / np.float32(7.0))
        vv_db = (np.float32(-14.0 + wind_dir_db) - np.float32(0.45) * (inc - np.float32(35.0))
                 + np.float32(18.0) * lsp
                 - np.float32(8.0 / 2.5) * np.clip(np.float32(2.5) - sp, 0, None))
        vh_db = vv_db - np.clip(np.float32(8.5) - np.float32(3.0) * lsp, 7.2, 10.0)
        sub = (p * np.float32(3.0)) % np.float32(1.0)
        scallop = (np.float32(1.2) * (2 * sub - 1) ** 2
                   + np.float32(0.6) * np.floor(np.minimum(p * 3, np.float32(2.999))))
        nesz = np.float32(10.0) ** ((np.float32(-31.0) + scallop) / np.float32(10.0))
        sea_vv[sl] = np.float32(10.0) * np.log10(
            np.float32(10.0) ** (vv_db / np.float32(10.0)) * t + nesz)
        sea_vh[sl] = np.float32(10.0) * np.log10(
            np.float32(10.0) ** (vh_db / np.float32(10.0)) * t + nesz * np.float32(0.5))
    del tau, amp_c, nu_c

    # --- land backscatter: relief (slopes facing the radar brighter), urban near the coast ---
    if land:
        rows_c = (np.arange(n2, dtype=np.float64) + 0.5) * LAND_FACTOR - 0.5
        cols_c = (np.arange(m2, dtype=np.float64) + 0.5) * LAND_FACTOR - 0.5
        inland_km = resample_separable(
            dist_land_km.astype(np.float32),
            (rows_c + 0.5) / AUX_FACTOR - 0.5,
            (cols_c + 0.5) / AUX_FACTOR - 0.5,
        )
        n, m = n2, m2  # land backscatter lives on the coarser grid
        elev = np.float32(rng.uniform(100, 600)) * (1 - np.exp(-inland_km / np.float32(10.0)))
        elev *= np.float32(0.6) + np.float32(0.4) * fractal_noise((n, m), rng, coarsest=8,
                                                                 persistence=0.6)
        rg_r, rg_c = geom.rg_hat
        gy, gx = np.gradient(elev)  # m per cell
        del elev
        slope = -(gy * np.float32(rg_r) + gx * np.float32(rg_c)) * np.float32(
            geom.near_sign / (LAND_FACTOR * PIXEL_M)
        )
        del gy, gx
        land_vv = np.float32(-7.5) + np.clip(np.float32(30.0) * slope, -6, 8)
        del slope
        veg = fractal_noise((n, m), rng, coarsest=16, persistence=0.55)
        land_vv += np.float32(2.0) * veg
        land_vh = land_vv - (np.float32(6.0) + np.float32(0.8) * veg)
        del veg
        urban = fractal_noise((n, m), rng, coarsest=12, persistence=0.5) > 1.0
        urban &= inland_km < 4.0  # ports and towns along the coast
        del inland_km
        land_vv += np.float32(9.0) * urban
        land_vh += np.float32(6.0) * urban
        del urban
        parcels = rng.normal(0.0, 1.1, PARCEL_TABLE).astype(np.float32)
    else:
        land_vv = land_vh = np.zeros((1, 1), np.float32)
        parcels = np.zeros((1, 1), np.float32)

    any_row = is_land.any(axis=1)
    has_land = any_row | np.r_[any_row[1:], False] | np.r_[False, any_row[:-1]]
    return LowResFields(
        land=land_lr,
        sea_db=(sea_vv, sea_vh),
        land_db=(land_vv, land_vh),
        parcels_db=parcels,
        has_land_rows=has_land,
        wind_speed=speed.astype(np.float32),
        wind_dir=wind_dir.astype(np.float32),
        owi_mask=owi_mask,
        bathymetry=bathymetry.astype(np.float32),
        shore_offset_km=off,
        parcel_angle=float(rng.uniform(0, math.pi / 2)) if land else 0.0,
    )


def parcel_rows(fields: LowResFields, r0: int, r1: int, width: int) -> np.ndarray:
    """Land parcel offsets (dB) for rows ``r0:r1`` (float32): a rotated grid of fields with
    hashed values, computed 32 rows at a time to keep temporaries small."""
    a = fields.parcel_angle
    ca, sa = math.cos(a), math.sin(a)
    cols = np.arange(width, dtype=np.float32)
    c_p = cols * np.float32(sa / PARCEL[0])
    c_q = cols * np.float32(ca / PARCEL[1])
    out = np.empty((r1 - r0, width), np.float32)
    mask = np.uint32(PARCEL_TABLE - 1)
    for k0 in range(r0, r1, 32):
        k1 = min(r1, k0 + 32)
        rows = np.arange(k0, k1, dtype=np.float32)[:, None]
        p = np.floor(rows * np.float32(ca / PARCEL[0]) + c_p).astype(np.int32)
        # each strip of parcels has its own random along-strip offset and width (staggered)
        hp = (p.view(np.uint32) * np.uint32(2654435761)) >> np.uint32(20)
        jitter = np.take(fields.parcels_db, hp & mask)  # ~N(0, 1.3)
        qf = (c_q - rows * np.float32(sa / PARCEL[1])) * (np.float32(1.0) + np.float32(0.2)
                                                          * jitter) + jitter
        q = np.floor(qf).astype(np.int32).view(np.uint32)
        p = p.view(np.uint32)
        p *= np.uint32(73856093)
        q *= np.uint32(19349663)
        p ^= q
        p &= mask
        np.take(fields.parcels_db, p, out=out[k0 - r0 : k1 - r0])
    return out


def fractal_noise(
    shape: tuple[int, int], rng: np.random.Generator, *, coarsest: int = 4,
    persistence: float = 0.5,
) -> np.ndarray:
    """Zero-mean, unit-std 1/f-like noise (float32) built by doubling a coarse grid.

    ``coarsest`` is the size (cells) of the first grid's shorter side; each doubling adds smoothed
    white noise scaled by ``persistence`` relative to the previous octave.
    """
    n, m = shape
    levels = max(0, math.ceil(math.log2(max(1, min(n, m)) / coarsest)))
    gn, gm = -(-n // 2**levels) + 2, -(-m // 2**levels) + 2
    g = rng.standard_normal((gn, gm)).astype(np.float32)
    amp = 1.0
    for _ in range(levels):
        g = ndimage.zoom(g, 2, order=1, grid_mode=True, mode="nearest")
        amp *= persistence
        noise = rng.standard_normal(g.shape, dtype=np.float32)
        noise = ndimage.gaussian_filter(noise, 1.0)
        noise *= np.float32(amp * 2.5)
        g += noise
        del noise
    g = g[:n, :m]
    g = g - np.float32(g.mean())
    return (g / np.float32(max(float(g.std()), 1e-6))).astype(np.float32)


def sample_bilinear(grid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear sample of ``grid`` at fractional grid indices (clamped at the borders)."""
    n, m = grid.shape
    y = np.clip(np.asarray(rows, np.float64), 0, n - 1)
    x = np.clip(np.asarray(cols, np.float64), 0, m - 1)
    y0 = np.minimum(np.floor(y).astype(np.intp), max(n - 2, 0))
    x0 = np.minimum(np.floor(x).astype(np.intp), max(m - 2, 0))
    y1, x1 = np.minimum(y0 + 1, n - 1), np.minimum(x0 + 1, m - 1)
    wy, wx = y - y0, x - x0
    top = grid[y0, x0] * (1 - wx) + grid[y0, x1] * wx
    bot = grid[y1, x0] * (1 - wx) + grid[y1, x1] * wx
    return top * (1 - wy) + bot * wy


def pixel_to_lr(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel indices → fractional low-res grid indices (same mapping as :class:`Upsampler`)."""
    return (np.asarray(rows) + 0.5) / FACTOR - 0.5, (np.asarray(cols) + 0.5) / FACTOR - 0.5


def lr_to_pixel(r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fractional low-res grid indices → fractional pixel indices."""
    return (np.asarray(r) + 0.5) * FACTOR - 0.5, (np.asarray(c) + 0.5) * FACTOR - 0.5


def resample_separable(grid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear sample of ``grid`` on the outer product of fractional ``rows`` × ``cols``.

    Returns float32 ``[len(rows), len(cols)]``; indices are clamped at the borders.
    """

    def axis(t: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = np.clip(np.asarray(t, np.float64), 0, size - 1)
        i0 = np.minimum(np.floor(t).astype(np.intp), max(size - 2, 0))
        return i0, np.minimum(i0 + 1, size - 1), (t - i0).astype(np.float32)

    g = np.asarray(grid, np.float32)
    y0, y1, wy = axis(rows, g.shape[0])
    x0, x1, wx = axis(cols, g.shape[1])
    tmp = g[:, x0] * (1 - wx) + g[:, x1] * wx
    return tmp[y0] * (1 - wy)[:, None] + tmp[y1] * wy[:, None]


class Upsampler:
    """Bilinear upsampling of low-res fields to full-resolution row blocks (float32).

    Pixel ``i`` samples the low-res grid at ``(i + 0.5) / FACTOR - 0.5``; values beyond the outer
    cell centres are clamped. Results depend only on global pixel indices.
    """

    def __init__(self, width: int, m_lr: int, factor: int = FACTOR) -> None:
        self.factor = factor
        x = (np.arange(width, dtype=np.float64) + 0.5) / factor - 0.5
        x0 = np.clip(np.floor(x), 0, max(m_lr - 2, 0)).astype(np.intp)
        self._x0 = x0
        self._x1 = np.minimum(x0 + 1, m_lr - 1)
        wx = np.clip(x - x0, 0.0, 1.0)
        self._wx = wx.astype(np.float32)
        self._wx1 = (1.0 - wx).astype(np.float32)

    def rows(self, lr: np.ndarray, r0: int, r1: int) -> np.ndarray:
        """Rows ``r0:r1`` of the upsampled field, shape ``[r1 - r0, width]`` float32."""
        n = lr.shape[0]
        y = (np.arange(r0, r1, dtype=np.float64) + 0.5) / self.factor - 0.5
        y0 = np.clip(np.floor(y), 0, max(n - 2, 0)).astype(np.intp)
        y1 = np.minimum(y0 + 1, n - 1)
        wy = np.clip(y - y0, 0.0, 1.0)
        a0, a1 = int(y0.min()), int(y1.max()) + 1
        sub = lr[a0:a1]
        cols = sub[:, self._x0] * self._wx1
        cols += sub[:, self._x1] * self._wx
        out = cols[y0 - a0]
        out *= (1.0 - wy).astype(np.float32)[:, None]
        tmp = cols[y1 - a0]
        tmp *= wy.astype(np.float32)[:, None]
        out += tmp
        return out


def speckle_lut(looks: float = LOOKS) -> np.ndarray:
    """Quantiles of 10·log10(Gamma(L, 1/L)) at ``(k + 0.5) / 65536`` (float32, 65536 entries)."""
    q = (np.arange(_LUT_SIZE, dtype=np.float64) + 0.5) / _LUT_SIZE
    return (10.0 * np.log10(special.gammaincinv(looks, q) / looks)).astype(np.float32)


def speckle_rows(
    lut: np.ndarray, seed: int, stream: int, r0: int, r1: int, width: int
) -> np.ndarray:
    """Speckle (dB) for rows ``r0:r1``: a counter-addressed PCG64 stream, one per band.

    Each row consumes exactly ``ceil(width / 4)`` 64-bit words, so a row's values do not depend
    on which block it is generated in.
    """
    words = -(-width // 4)
    bg = np.random.PCG64(np.random.SeedSequence([seed, 0x5EC1, stream]))
    if r0:
        bg.advance(r0 * words)
    raw = bg.random_raw((r1 - r0) * words)
    idx = raw.view(np.uint16).reshape(r1 - r0, words * 4)[:, :width]
    return np.take(lut, idx)


def zero_contours(field: np.ndarray) -> list[np.ndarray]:
    """Marching-squares contours of ``field`` at level 0, as float64 arrays ``[N, 2]`` (row, col).

    Coordinates are fractional grid indices; linear interpolation along grid edges matches the
    bilinear upsampling, so the contours follow the thresholded raster. Open contours end on
    the grid border; closed ones repeat their first point at the end. Saddles are resolved with
    the cell-centre mean.
    """
    f = np.asarray(field)
    n, m = f.shape
    if n < 2 or m < 2:
        return []
    up = f > 0
    # crossing points: horizontal edges (a, b)-(a, b+1), vertical edges (a, b)-(a+1, b)
    h_cross = up[:, :-1] != up[:, 1:]
    v_cross = up[:-1, :] != up[1:, :]
    n_h = n * (m - 1)

    def hid(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a * (m - 1) + b

    def vid(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return n_h + a * m + b

    segs = []
    for a0 in range(0, n - 1, 128):  # cell rows in chunks: bounded memory on big grids
        a1 = min(n - 1, a0 + 128)
        top, bottom = h_cross[a0:a1, :], h_cross[a0 + 1 : a1 + 1, :]
        left, right = v_cross[a0:a1, :-1], v_cross[a0:a1, 1:]
        count = top.astype(np.int8) + bottom + left + right
        hit = count > 0
        if not hit.any():
            continue
        a, b = np.nonzero(hit)
        a = a + a0
        count = count[hit]
        flags = np.stack([top[hit], right[hit], bottom[hit], left[hit]], axis=-1)  # T R B L
        ids = np.stack([hid(a, b), vid(a, b + 1), hid(a + 1, b), vid(a, b)], axis=-1)
        two = count == 2
        if two.any():
            order = np.argsort(~flags[two], axis=1, kind="stable")[:, :2]
            segs.append(np.take_along_axis(ids[two], order, axis=1))
        four = count == 4
        if four.any():
            aa, bb = a[four], b[four]
            idx = ids[four]
            centre = (f[aa, bb] + f[aa, bb + 1] + f[aa + 1, bb] + f[aa + 1, bb + 1]) / 4 > 0
            # T-L & R-B when the centre differs from the top-left corner, else T-R & B-L
            cut_tl = centre != up[aa, bb]
            segs.append(np.where(cut_tl[:, None], idx[:, [0, 3]], idx[:, [0, 1]]))
            segs.append(np.where(cut_tl[:, None], idx[:, [1, 2]], idx[:, [2, 3]]))
    if not segs:
        return []
    seg = np.concatenate(segs, axis=0)

    # coordinates of every crossing point
    uid, inv = np.unique(seg.ravel(), return_inverse=True)
    inv = inv.reshape(-1, 2)
    is_h = uid < n_h
    pts = np.empty((uid.size, 2), np.float64)
    ha, hb = np.divmod(uid[is_h], m - 1)
    t = f[ha, hb].astype(np.float64) / (f[ha, hb] - f[ha, hb + 1].astype(np.float64))
    pts[is_h] = np.stack([ha, hb + t], axis=1)
    va, vb = np.divmod(uid[~is_h] - n_h, m)
    t = f[va, vb].astype(np.float64) / (f[va, vb] - f[va + 1, vb].astype(np.float64))
    pts[~is_h] = np.stack([va + t, vb], axis=1)

    # chain segments into polylines
    pp = np.concatenate([inv[:, 0], inv[:, 1]])
    qq = np.concatenate([inv[:, 1], inv[:, 0]])
    order = np.argsort(pp, kind="stable")
    qs = qq[order]
    deg = np.bincount(pp, minlength=uid.size)  # 1 on the border, 2 inside
    start = np.concatenate([[0], np.cumsum(deg)[:-1]])
    nb = np.stack([qs[start], np.where(deg > 1, qs[np.minimum(start + 1, qs.size - 1)], -1)], 1)
    nbl = nb.tolist()
    visited = bytearray(uid.size)
    out: list[np.ndarray] = []
    starts = list(np.flatnonzero(deg == 1)) + list(range(uid.size))
    for s in starts:
        if visited[s]:
            continue
        path = [s]
        visited[s] = 1
        prev, cur = -1, s
        while True:
            n0, n1 = nbl[cur]
            nxt = n0 if n0 != prev and n0 >= 0 and not visited[n0] else n1
            if nxt < 0 or visited[nxt]:
                if len(path) > 2 and s in (n0, n1) and deg[s] == 2:
                    path.append(s)  # closed
                break
            visited[nxt] = 1
            path.append(nxt)
            prev, cur = cur, nxt
        out.append(pts[path])
    return out
