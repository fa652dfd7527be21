"""Objects of a synthetic scene: vessels, platforms, wind turbines and their azimuth ghosts.

A vessel is a few point scatterers along a hull of realistic length and heading (fishing
12–70 m, median 24 m; others 25–400 m, median 90 m, many on a two-way shipping lane), each
imaged as a sinc² impulse response of ~20 m (range) × 22 m (azimuth) resolution whose
cross-shaped sidelobes lie along the radar axes. A moving ship is displaced in azimuth by its
radial velocity (Δaz = −R/V · v_r, tens of pixels at 10 kn) and smeared by its along-track
motion, and may leave a dark turbulent wake that starts at its *true* position — the classic
"ship off its wake".

Labels are placed where the ship *appears* (what an analyst marks on the image). Platforms and
wind turbines (in a regular farm near the coast) are bright, static and labelled
``is_vessel=False``. Azimuth ambiguities ("ghost ships"), faint defocused copies of bright targets
displaced ~500 px in azimuth, are rendered but NOT labelled: they are not objects, so they are
the hard negatives a detector must learn to ignore (a prediction on one is a false positive).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from sarvessel.synth.fields import (
    PIXEL_M,
    R_OVER_V,
    SwathGeometry,
    pixel_to_lr,
    sample_bilinear,
)

#: Impulse-response null-to-peak widths (px) giving 20 m × 22 m 3-dB resolution (sinc²).
RHO_RG = 2.0 / 0.886
RHO_AZ = 2.2 / 0.886
#: Largest half-extent of a rendered sidelobe arm (px).
MAX_ARM = 160
#: Sentinel-1 wavelength (m), PRF (Hz) and effective velocity (m/s) for ambiguity spacing.
_WAVELENGTH, _PRF, _VEFF = 0.05546, 1650.0, 7600.0


class ObjectKind(str, Enum):
    """What a synthetic object is; decides its label."""

    FISHING = "fishing"
    NON_FISHING = "non_fishing"
    PLATFORM = "platform"
    TURBINE = "turbine"
    GHOST = "ghost"


class Confidence(str, Enum):
    """xView3 label confidence."""

    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"


@dataclass
class SceneObject:
    """One rendered object. Positions are fractional pixel indices (row, col) of the scene."""

    kind: ObjectKind
    row: float  #: imaged centre (where it appears and is labelled)
    col: float
    true_row: float  #: physical position (start of the wake)
    true_col: float
    length_m: float
    heading_deg: float  #: clockwise from north (up)
    speed_mps: float
    offsets: np.ndarray  #: [K, 2] scatterer offsets (d_row, d_col) from the imaged centre
    amps: np.ndarray  #: [K] relative scatterer amplitudes (intensity)
    peak_db: float  #: peak VV intensity (dB) of the rendered target
    vh_gap_db: float  #: VV − VH of the target (dB)
    az_broadening: float = 1.0  #: azimuth smear factor (≥ 1)
    wake: bool = False
    confidence: Confidence = Confidence.HIGH
    fishing_known: bool = True
    length_known: bool = True
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  #: top, left, bottom, right (px)
    bbox: tuple[int, int, int, int] = field(default=(0, 0, 0, 0))  #: rendered patch r0,c0,r1,c1

    @property
    def labelled(self) -> bool:
        return self.kind is not ObjectKind.GHOST

    @property
    def is_vessel(self) -> bool:
        return self.kind in (ObjectKind.FISHING, ObjectKind.NON_FISHING)


@dataclass
class Patch:
    """Rendered object: target intensity (VV, linear) and optional wake modulation (dB)."""

    r0: int
    c0: int
    target: np.ndarray  #: float32 [h, w] linear VV intensity added to the clutter
    vh_scale: float  #: multiply ``target`` by this for VH
    wake_db: np.ndarray | None  #: float32 [h, w] additive dB on the clutter, or None


class ShoreIndex:
    """Distance to the shoreline (km) from pixel positions.

    With land, a KD-tree over the shoreline points; without, a virtual coast ``offset_km``
    beyond the top-left corner (real xView3 distances come from a global coastline, so open-sea
    scenes still have finite distances).
    """

    def __init__(self, points: np.ndarray, *, offset_km: float = 0.0) -> None:
        from scipy.spatial import cKDTree

        self.points = np.asarray(points, np.float64).reshape(-1, 2)
        self.offset_km = offset_km
        self._tree = cKDTree(self.points) if len(self.points) else None

    def distance_km(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        r = np.asarray(rows, np.float64)
        c = np.asarray(cols, np.float64)
        if self._tree is None:
            return self.offset_km + np.hypot(r, c) * PIXEL_M / 1e3
        d, _ = self._tree.query(np.stack([r.ravel(), c.ravel()], axis=1))
        return (d * PIXEL_M / 1e3).reshape(r.shape)


def plan_objects(
    geom: SwathGeometry,
    land_lr: np.ndarray,
    sea_vv_lr: np.ndarray,
    shore: ShoreIndex,
    rng: np.random.Generator,
    n_objects: int,
) -> list[SceneObject]:
    """Place ``n_objects`` labelled objects (~15 % non-vessel, ~40 % of vessels fishing) + ghosts.

    Vessels lie on sea, inside the swath, at least ~40 px apart, biased towards the coast;
    some fishing vessels form fleets. Deterministic given ``rng``.
    """
    placer = _Placer(geom, land_lr, shore, rng)
    n_non = int(round(0.15 * n_objects))
    n_ves = n_objects - n_non
    n_fish = int(round(0.4 * n_ves))
    objs: list[SceneObject] = []

    # non-vessels: a wind farm near the coast when there is one, else isolated platforms
    n_turb = 0
    if n_non >= 4 and len(shore.points) and rng.random() < 0.7:
        n_turb = n_non - int(rng.integers(0, 2))
        objs += _wind_farm(placer, rng, n_turb)
    for _ in range(n_non - len(objs)):
        pos = placer.sample(margin=12, near_km=(2.0, 80.0))
        if pos is not None:
            objs.append(_platform(rng, *pos))

    # vessels
    lane = rng.uniform(0, 180)
    n_fleets = int(rng.integers(1, 4)) if n_fish >= 8 else 0
    fleets = [placer.sample(margin=60) for _ in range(n_fleets)]
    fleets = [f for f in fleets if f is not None]
    for k in range(n_ves):
        fishing = k < n_fish
        length = _vessel_length(rng, fishing)
        half = 0.5 * length / PIXEL_M + 4
        pos = None
        if fishing and fleets and rng.random() < 0.5:
            c = fleets[int(rng.integers(0, len(fleets)))]
            pos = placer.sample(margin=half + 6, around=c, spread=180.0)
        if pos is None:
            pos = placer.sample(margin=half + 6)
        if pos is None:
            continue
        v = _vessel(geom, rng, fishing, length, lane, *pos)
        if not placer.ok(np.array([v.row]), np.array([v.col]), half + 6, spacing=False)[0]:
            # the azimuth-shifted image would fall on land or off the swath: make it slow
            peak = v.peak_db + 10 * math.log10(v.az_broadening)
            v.row, v.col, v.speed_mps, v.wake = v.true_row, v.true_col, 0.0, False
            v.az_broadening, v.peak_db = 1.0, peak
        objs.append(v)
    for o in objs:
        _finish(o, geom, sea_vv_lr, rng)
    objs += _ghosts(geom, objs, sea_vv_lr, rng)
    return objs


def render(obj: SceneObject, geom: SwathGeometry) -> Patch:
    """Render ``obj`` over its bounding box ``obj.bbox``.

    Each scatterer's response is separable in the radar frame (azimuth u, range v), so the sum
    is one matrix product on a 0.5 px (u, v) grid, resampled bilinearly onto the image grid.
    """
    from scipy import ndimage

    r0, c0, r1, c1 = obj.bbox
    ar, ac = geom.az_hat
    gr, gc = geom.rg_hat
    rho_az = RHO_AZ * obj.az_broadening
    arm = _arm(obj)
    off_u = obj.offsets[:, 0] * ar + obj.offsets[:, 1] * ac
    off_v = obj.offsets[:, 0] * gr + obj.offsets[:, 1] * gc
    reach = arm + float(np.abs(obj.offsets).max(initial=0.0)) + 4
    grid = np.arange(-reach, reach + 0.25, 0.5)
    fu = _response((grid[:, None] - off_u[None, :]) / rho_az, arm / rho_az) * obj.amps[None, :]
    fv = _response((grid[:, None] - off_v[None, :]) / RHO_RG, arm / RHO_RG)
    rot = fu @ fv.T  # [u, v]
    y = np.arange(r0, r1, dtype=np.float64)[:, None] - obj.row
    x = np.arange(c0, c1, dtype=np.float64)[None, :] - obj.col
    iu = ((y * ar + x * ac) + reach) / 0.5
    iv = ((y * gr + x * gc) + reach) / 0.5
    target = ndimage.map_coordinates(rot, [iu, iv], order=1, mode="constant", cval=0.0)
    peak = float(target.max())
    if peak > 0:
        target *= 10 ** (obj.peak_db / 10) / peak
    wake = _wake(obj, y + obj.row, x + obj.col) if obj.wake else None
    return Patch(r0, c0, target.astype(np.float32), 10 ** (-obj.vh_gap_db / 10), wake)


def _response(t: np.ndarray, end: float) -> np.ndarray:
    """1-D impulse response: sinc² with sidelobes 4.5 dB down (PSLR ≈ −18 dB, between an
    unweighted and a Hamming-weighted SAR), tapered smoothly to zero at ``end`` widths."""
    r = np.sinc(t) ** 2
    r[np.abs(t) > 1] *= 0.35
    r *= np.exp(-((t / end) ** 4))
    return r


# --- helpers -------------------------------------------------------------------------------


class _Placer:
    """Rejection sampler of sea positions inside the swath, kept apart from earlier ones."""

    def __init__(
        self, geom: SwathGeometry, land_lr: np.ndarray, shore: ShoreIndex, rng: np.random.Generator
    ) -> None:
        self.geom, self.land_lr, self.shore, self.rng = geom, land_lr, shore, rng
        self.taken: list[tuple[float, float]] = []

    def ok(
        self, r: np.ndarray, c: np.ndarray, margin: float, *, spacing: bool = True
    ) -> np.ndarray:
        g = self.geom
        edge = max(margin, 10.0)
        good = (r >= edge) & (r < g.height - edge) & (c >= edge) & (c < g.width - edge)
        good &= g.inside(r, c, margin=margin)
        good &= sample_bilinear(self.land_lr, *pixel_to_lr(r, c)) < 0
        if len(self.shore.points):
            good &= self.shore.distance_km(r, c) * 1e3 / PIXEL_M > margin
        if spacing and self.taken and good.any():
            t = np.asarray(self.taken)
            d = np.hypot(r[:, None] - t[None, :, 0], c[:, None] - t[None, :, 1]).min(axis=1)
            good &= d > max(40.0, margin)
        return good

    def sample(
        self,
        *,
        margin: float,
        around: tuple[float, float] | None = None,
        spread: float = 0.0,
        near_km: tuple[float, float] | None = None,
        reserve: bool = True,
    ) -> tuple[float, float] | None:
        g, rng = self.geom, self.rng
        for _ in range(40):
            if around is not None:
                r = around[0] + rng.normal(0, spread, 64)
                c = around[1] + rng.normal(0, spread, 64)
            else:
                r = rng.uniform(0, g.height, 64)
                c = rng.uniform(0, g.width, 64)
            good = self.ok(r, c, margin)
            if len(self.shore.points) and good.any():
                d = self.shore.distance_km(r, c)
                if near_km is not None:
                    good &= (d >= near_km[0]) & (d <= near_km[1])
                else:  # more traffic near the coast, as in xView3
                    good &= rng.random(64) < 0.3 + 0.7 * np.exp(-d / 8.0)
            idx = np.flatnonzero(good)
            if idx.size:
                pos = (float(r[idx[0]]), float(c[idx[0]]))
                if reserve:
                    self.taken.append(pos)
                return pos
        return None


def _vessel_length(rng: np.random.Generator, fishing: bool) -> float:
    if fishing:
        return float(np.clip(rng.lognormal(math.log(24.0), 0.4), 12.0, 70.0))
    return float(np.clip(rng.lognormal(math.log(90.0), 0.7), 25.0, 400.0))


def _vessel(
    geom: SwathGeometry,
    rng: np.random.Generator,
    fishing: bool,
    length: float,
    lane: float,
    row: float,
    col: float,
) -> SceneObject:
    if fishing:
        heading = rng.uniform(0, 360)
        speed = rng.uniform(0, 1.0) if rng.random() < 0.45 else rng.uniform(1.5, 5.0)
    else:
        on_lane = rng.random() < 0.65
        heading = (lane + 180 * int(rng.integers(0, 2)) + rng.normal(0, 8)) if on_lane else (
            rng.uniform(0, 360))
        speed = 0.0 if rng.random() < 0.2 else rng.uniform(4.0, 10.0)
    heading %= 360
    h = math.radians(heading)
    fwd = np.array([-math.cos(h), math.sin(h)])  # (d_row, d_col) of the bow
    side = np.array([math.sin(h), math.cos(h)])
    lpx = length / PIXEL_M
    k = int(np.clip(round(length / 15) + 2, 2, 12))
    s = np.sort(rng.uniform(-0.5, 0.5, k)) * lpx
    n = rng.uniform(-0.5, 0.5, k) * lpx / 6.5
    amps = rng.lognormal(0.0, 0.7, k)
    amps[int(np.argmin(np.abs(s - (0.0 if fishing else -0.3 * lpx))))] *= 4.0  # superstructure
    offsets = s[:, None] * fwd[None, :] + n[:, None] * side[None, :]

    # azimuth shift from radial velocity, smear from along-track velocity
    vel = speed * fwd
    ar, ac = geom.az_hat
    gr, gc = geom.rg_hat
    v_rg = float(vel[0] * gr + vel[1] * gc)
    v_az = float(vel[0] * ar + vel[1] * ac)
    _, v = geom.uv(np.array(row), np.array(col))
    inc = math.radians(float(geom.incidence_deg(v)))
    shift = -geom.near_sign * R_OVER_V * v_rg * math.sin(inc) / PIXEL_M
    broad = min(1.0 + 0.15 * abs(v_az), 3.0)
    peak = -21.0 + 15.0 * math.log10(length) + rng.normal(0, 3.5) - 10 * math.log10(broad)
    kind = ObjectKind.FISHING if fishing else ObjectKind.NON_FISHING
    return SceneObject(
        kind=kind,
        row=row + shift * ar,
        col=col + shift * ac,
        true_row=row,
        true_col=col,
        length_m=length,
        heading_deg=heading,
        speed_mps=speed,
        offsets=offsets,
        amps=amps,
        peak_db=peak,
        vh_gap_db=rng.uniform(3.5, 9.0),
        az_broadening=broad,
        wake=speed > 2.5 and rng.random() < 0.6,
        fishing_known=rng.random() > 0.12,
        length_known=rng.random() < 0.65,
    )


def _platform(rng: np.random.Generator, row: float, col: float) -> SceneObject:
    k = int(rng.integers(3, 8))
    size = rng.uniform(4.0, 8.0)  # px
    offsets = rng.uniform(-0.5, 0.5, (k, 2)) * size
    return SceneObject(
        kind=ObjectKind.PLATFORM, row=row, col=col, true_row=row, true_col=col,
        length_m=size * PIXEL_M, heading_deg=0.0, speed_mps=0.0, offsets=offsets,
        amps=rng.lognormal(0, 0.5, k), peak_db=rng.uniform(16, 26), vh_gap_db=rng.uniform(4, 8),
    )


def _wind_farm(placer: _Placer, rng: np.random.Generator, n: int) -> list[SceneObject]:
    centre = placer.sample(margin=120, near_km=(3.0, 30.0), reserve=False)
    if centre is None:
        return []
    spacing = rng.uniform(60, 95)
    ang = rng.uniform(0, math.pi)
    ncols = max(2, int(math.ceil(math.sqrt(n))))
    out = []
    k = 0
    ca, sa = math.cos(ang), math.sin(ang)
    while len(out) < n and k < 4 * n:
        i, j = divmod(k, ncols)
        k += 1
        di, dj = (i - ncols / 2) * spacing, (j - ncols / 2) * spacing
        r = centre[0] + di * ca - dj * sa
        c = centre[1] + di * sa + dj * ca
        if placer.ok(np.array([r]), np.array([c]), 12)[0]:
            placer.taken.append((r, c))
            offsets = np.array([[0.0, 0.0], [0.6, 0.3]])
            out.append(SceneObject(
                kind=ObjectKind.TURBINE, row=r, col=c, true_row=r, true_col=c,
                length_m=math.nan, heading_deg=0.0, speed_mps=0.0, offsets=offsets,
                amps=np.array([1.0, 0.15]), peak_db=rng.uniform(12, 22),
                vh_gap_db=rng.uniform(6, 10),
            ))
    return out


def _arm(obj: SceneObject) -> float:
    """Half-length (px) of the sidelobe arms: until they sink ~13 dB below a −20 dB sea."""
    rel = 0.35 * 10 ** ((obj.peak_db + 33.0) / 10)
    return float(np.clip(RHO_AZ * obj.az_broadening * math.sqrt(rel) / math.pi, 12, MAX_ARM))


def _finish(o: SceneObject, geom: SwathGeometry, sea_vv_lr: np.ndarray, rng: np.random.Generator
            ) -> None:
    """Label box, patch bounding box and confidence of a placed object."""
    ext_r = float(np.ptp(o.offsets[:, 0])) + 2 * RHO_AZ * o.az_broadening if len(o.offsets) else 0
    ext_c = float(np.ptp(o.offsets[:, 1])) + 2 * RHO_RG if len(o.offsets) else 0
    hr, hc = max(8.0, ext_r / 2), max(8.0, ext_c / 2)
    h, w = geom.height, geom.width
    top, bottom = _span(o.row, hr, h)
    left, right = _span(o.col, hc, w)
    o.box = (top, left, bottom, right)
    arm = _arm(o)
    reach = arm + float(np.abs(o.offsets).max(initial=0.0)) + 2
    r0, r1 = o.row - reach, o.row + reach + 1
    c0, c1 = o.col - reach, o.col + reach + 1
    if o.wake:
        wl = _wake_len(o)
        h_r = math.radians(o.heading_deg)
        er, ec = o.true_row + math.cos(h_r) * wl, o.true_col - math.sin(h_r) * wl
        r0, r1 = min(r0, o.true_row - 10, er - 10), max(r1, o.true_row + 10, er + 10)
        c0, c1 = min(c0, o.true_col - 10, ec - 10), max(c1, o.true_col + 10, ec + 10)
    o.bbox = (max(0, int(r0)), max(0, int(c0)), min(h, int(math.ceil(r1))),
              min(w, int(math.ceil(c1))))
    if o.kind is ObjectKind.GHOST:
        return
    sea = float(sample_bilinear(sea_vv_lr, *pixel_to_lr(np.array(o.row), np.array(o.col))))
    contrast = o.peak_db - sea
    if o.is_vessel:
        if contrast < 14 or (o.length_m < 18 and rng.random() < 0.5):
            conf = Confidence.LOW
        elif contrast < 21:
            conf = Confidence.MEDIUM
        else:
            conf = Confidence.HIGH
        if conf is not Confidence.LOW and rng.random() < 0.1:
            conf = Confidence.MEDIUM if conf is Confidence.HIGH else Confidence.LOW
    else:
        conf = Confidence.HIGH if rng.random() < 0.7 else Confidence.MEDIUM
    o.confidence = conf


def _span(centre: float, half: float, size: int) -> tuple[int, int]:
    """Integer [lo, hi] around ``centre``, shifted (not shrunk) to stay inside ``[0, size)``."""
    lo, hi = int(math.floor(centre - half)), int(math.ceil(centre + half))
    if lo < 0:
        lo, hi = 0, min(size - 1, hi - lo)
    if hi > size - 1:
        lo, hi = max(0, lo - (hi - size + 1)), size - 1
    return lo, hi


def _ghosts(geom: SwathGeometry, objs: list[SceneObject], sea_vv_lr: np.ndarray,
            rng: np.random.Generator) -> list[SceneObject]:
    """Azimuth ambiguities of bright targets (unlabelled), ~20–25 dB below, ~500 px away."""
    aasr = rng.uniform(20.0, 25.0)
    ar, ac = geom.az_hat
    out = []
    for o in objs:
        _, v = geom.uv(np.array(o.row), np.array(o.col))
        inc = math.radians(float(geom.incidence_deg(v)))
        slant = 693e3 / math.cos(inc)
        step = _WAVELENGTH * slant * _PRF / (2 * _VEFF) / PIXEL_M
        for sign in (-1.0, 1.0):
            r, c = o.row + sign * step * ar, o.col + sign * step * ac
            if not geom.inside(np.array(r), np.array(c), margin=20):
                continue
            if not (0 <= r < geom.height and 0 <= c < geom.width):
                continue
            sea = float(sample_bilinear(sea_vv_lr, *pixel_to_lr(np.array(r), np.array(c))))
            peak = o.peak_db - aasr - rng.uniform(0, 2)
            if peak < sea + 4.0:
                continue
            g = SceneObject(
                kind=ObjectKind.GHOST, row=r, col=c, true_row=r, true_col=c,
                length_m=o.length_m, heading_deg=o.heading_deg, speed_mps=0.0,
                offsets=o.offsets, amps=o.amps, peak_db=peak, vh_gap_db=o.vh_gap_db + 1.0,
                az_broadening=o.az_broadening * 2.5,
            )
            _finish(g, geom, sea_vv_lr, rng)
            out.append(g)
    return out


def _wake_len(o: SceneObject) -> float:
    return min(o.speed_mps * 70.0, 2500.0) / PIXEL_M


def _wake(o: SceneObject, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Dark turbulent wake (dB, ≤ 0) trailing behind the true position along the heading."""
    h = math.radians(o.heading_deg)
    back = (math.cos(h), -math.sin(h))  # (d_row, d_col) towards the stern
    side = (math.sin(h), math.cos(h))
    y, x = rows - o.true_row, cols - o.true_col
    s = y * back[0] + x * back[1]
    d = y * side[0] + x * side[1]
    wl = _wake_len(o)
    width = 1.0 + 0.5 * o.length_m / 6.5 / PIXEL_M + 0.02 * np.clip(s, 0, None)
    depth = -3.5 * np.exp(-np.clip(s, 0, None) / (0.5 * wl)) * (s > 0) * (s < wl)
    return (depth * np.exp(-((d / width) ** 2))).astype(np.float32)
