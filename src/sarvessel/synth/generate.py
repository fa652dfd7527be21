"""Synthetic Sentinel-1 IW GRD scenes in the xView3 layout, for tests, demos and benchmarks.

``synthesize_scene`` writes, under ``root``::

    <scene_id>/VV_dB.tif, VH_dB.tif        float32 dB, 10 m pixels, nodata -32768
    <scene_id>/bathymetry.tif              float32 m, 500 m pixels (ceil(H/50) × ceil(W/50))
    <scene_id>/owiMask.tif                 uint8 0 sea / 1 land (2 ice is never produced)
    <scene_id>/owiWindSpeed.tif            float32 m/s;  owiWindDirection.tif  float32 °
    shoreline/<scene_id>_shoreline.npy     object array of [N, 2] float (row, col) contours
    labels.csv                             xView3 columns; rows of this scene replaced

All rasters are EPSG:4326 GeoTIFFs (10 m ≈ 0.0000898° of latitude). The scene is produced and
written in blocks of rows (bounded memory: a 20,000² scene stays well under 1 GB) and is
deterministic by seed: the same seed gives the same bytes whatever the block size.

What is simulated (docs/references.md §9) is described in :mod:`~sarvessel.synth.fields` (clutter,
speckle, land, wind) and :mod:`~sarvessel.synth.objects` (vessels, platforms, turbines,
ghosts). Ghost ships (azimuth ambiguities) are rendered but not labelled. Open-sea scenes
(``land=False``) measure ``distance_from_shore_km`` to a virtual coast outside the scene and
write an empty shoreline array.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sarvessel.runtime.errors import LabelsError, SarvesselError
from sarvessel.runtime.io.geotiff import METRES_PER_DEGREE, GeoTransform, write_geotiff
from sarvessel.runtime.preprocess import NODATA

if TYPE_CHECKING:
    from sarvessel.synth.fields import LowResFields, SwathGeometry
    from sarvessel.synth.objects import Patch, SceneObject, ShoreIndex

log = logging.getLogger(__name__)

#: Columns of the xView3 labels CSV, in order.
LABEL_COLUMNS = (
    "scene_id",
    "detect_scene_row",
    "detect_scene_column",
    "detect_lat",
    "detect_lon",
    "detect_id",
    "top",
    "left",
    "bottom",
    "right",
    "is_vessel",
    "is_fishing",
    "vessel_length_m",
    "confidence",
    "distance_from_shore_km",
)
#: Labelled objects per million sea pixels when ``n_vessels`` is not given (real xView3 has
#: ~0.5; denser scenes make better training and test material).
DEFAULT_DENSITY_PER_MPX = 1.2
#: Smallest and largest accepted scene side (px).
MIN_SIZE, MAX_SIZE = 64, 40_000
#: Rendered object patches kept between the VV and VH passes (bytes); others are re-rendered.
KEEP_PATCH_BYTES = 48 * 2**20
#: Rows generated per block (results do not depend on it).
DEFAULT_BLOCK_ROWS = 256


@dataclass(frozen=True)
class SynthScene:
    """Where a synthetic scene was written and how many labels it has."""

    scene_id: str
    scene_dir: Path
    labels_csv: Path
    shoreline_path: Path
    n_labels: int
    height: int
    width: int
    georef: GeoTransform


def synthesize_scene(
    root: Path | str,
    *,
    scene_id: str | None = None,
    height: int = 4096,
    width: int = 4096,
    seed: int = 0,
    n_vessels: int | None = None,
    land: bool = True,
    tiled: bool = True,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    progress: Callable[[int, int], None] | None = None,
) -> SynthScene:
    """Write one synthetic scene (xView3 layout) under ``root`` and append its labels.

    ``height`` × ``width`` is the VV/VH size in 10 m pixels (64 … 40,000 each; the default is
    4096²). ``n_vessels`` is the number of labelled objects (vessels + ~15 % platforms/turbines);
    the default scales with the sea area (:data:`DEFAULT_DENSITY_PER_MPX`). ``tiled`` writes
    512² tiles, else strips (real xView3 files come both ways). ``block_rows`` only trades memory
    for speed. ``progress(done, total)`` is called after each block with rows written over both
    bands (``total = 2 * height``). The default ``scene_id`` is ``synth{seed:04d}{h}x{w}v``.
    """
    from sarvessel.synth import fields as sf
    from sarvessel.synth import objects as so

    t_start = time.perf_counter()
    root = Path(root)
    height, width, seed = int(height), int(width), int(seed)
    for name, val in (("height", height), ("width", width)):
        if not MIN_SIZE <= val <= MAX_SIZE:
            raise SarvesselError(f"scene {name} must be in [{MIN_SIZE}, {MAX_SIZE}], got {val}")
    if seed < 0:
        raise SarvesselError(f"seed must be non-negative, got {seed}")
    if n_vessels is not None and n_vessels < 0:
        raise SarvesselError(f"number of vessels must be non-negative, got {n_vessels}")
    if block_rows <= 0:
        raise SarvesselError(f"block_rows must be positive, got {block_rows}")
    scene_id = scene_id or f"synth{seed:04d}{height}x{width}v"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", scene_id):
        raise SarvesselError(f"scene id {scene_id!r} must be letters, digits, '_', '-' or '.'")

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA11CE]))
    geom = sf.SwathGeometry(
        height=height,
        width=width,
        theta=math.radians(rng.uniform(4.0, 13.0) * (1 if rng.random() < 0.5 else -1)),
        half_u=0.5 * height * rng.uniform(0.96, 1.12),
        half_v=0.5 * width * rng.uniform(0.88, 0.98),
        near_sign=1.0 if rng.random() < 0.5 else -1.0,
    )
    georef = _georef(rng, height, width)
    fields = sf.make_fields(geom, rng, land=land, land_fraction=rng.uniform(0.08, 0.3))

    contours = [sf.lr_to_pixel(c[:, 0], c[:, 1]) for c in sf.zero_contours(fields.land)]
    contours = [np.stack(rc, axis=1) for rc in contours]
    shore_pts = np.concatenate(contours) if contours else np.zeros((0, 2))
    shore = so.ShoreIndex(shore_pts, offset_km=fields.shore_offset_km)

    if n_vessels is None:
        sea_frac = _sea_fraction(geom, fields.land)
        n_vessels = max(3, int(round(DEFAULT_DENSITY_PER_MPX * height * width * sea_frac / 1e6)))
    objs = so.plan_objects(geom, fields.land, fields.sea_db[0], shore, rng, n_vessels)
    labelled = [o for o in objs if o.labelled]
    if len(labelled) < n_vessels:
        log.warning("placed %d of %d objects (not enough free sea)", len(labelled), n_vessels)

    scene_dir = root / scene_id
    scene_dir.mkdir(parents=True, exist_ok=True)
    writer = _BandWriter(geom, fields, objs, seed=seed, block_rows=block_rows, progress=progress)
    tile = 512 if tiled else None
    for band, name in enumerate(("VV_dB.tif", "VH_dB.tif")):
        write_geotiff(
            scene_dir / name,
            writer.blocks(band),
            shape=(height, width),
            dtype=np.float32,
            georef=georef,
            nodata=NODATA,
            tile=tile,
        )
    aux = GeoTransform.north_up(
        georef.lon0,
        georef.lat0,
        georef.lon_per_col * sf.AUX_FACTOR,
        -georef.lat_per_row * sf.AUX_FACTOR,
        shape=fields.owi_mask.shape,
    )
    for name, arr in (
        ("bathymetry.tif", fields.bathymetry),
        ("owiMask.tif", fields.owi_mask),
        ("owiWindSpeed.tif", fields.wind_speed),
        ("owiWindDirection.tif", fields.wind_dir),
    ):
        write_geotiff(scene_dir / name, arr, georef=aux, tile=None)

    shoreline_dir = root / "shoreline"
    shoreline_dir.mkdir(parents=True, exist_ok=True)
    shoreline_path = shoreline_dir / f"{scene_id}_shoreline.npy"
    arr = np.empty(len(contours), dtype=object)
    for i, c in enumerate(contours):
        arr[i] = c.astype(np.float64)
    np.save(shoreline_path, arr, allow_pickle=True)

    rows = _label_rows(scene_id, labelled, georef, shore)
    labels_csv = root / "labels.csv"
    write_labels(labels_csv, rows, scene_id=scene_id)
    n_ghosts = sum(1 for o in objs if not o.labelled)
    log.info(
        "synthesized %s: %d x %d px, %d labels (%d vessels, %d fishing), %d ghosts, "
        "%.1f %% land, %.1f s -> %s",
        scene_id, height, width, len(rows),
        sum(o.is_vessel for o in labelled),
        sum(o.kind is so.ObjectKind.FISHING for o in labelled),
        n_ghosts, 100.0 * float(fields.owi_mask.mean()), time.perf_counter() - t_start, scene_dir,
    )
    return SynthScene(
        scene_id=scene_id,
        scene_dir=scene_dir,
        labels_csv=labels_csv,
        shoreline_path=shoreline_path,
        n_labels=len(rows),
        height=height,
        width=width,
        georef=georef,
    )


def write_labels(path: Path, rows: list[dict[str, str]], *, scene_id: str) -> None:
    """Replace ``scene_id``'s rows of the labels CSV at ``path`` with ``rows`` (others kept).

    The file is rewritten atomically with :data:`LABEL_COLUMNS`; a present file without a
    ``scene_id`` column raises :class:`LabelsError`.
    """
    kept: list[dict[str, str]] = []
    if path.exists():
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or "scene_id" not in reader.fieldnames:
                raise LabelsError(f"{path}: not a labels CSV (no 'scene_id' column in header)")
            kept = [r for r in reader if r.get("scene_id") != scene_id]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(LABEL_COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in kept:
            w.writerow({k: r.get(k, "") or "" for k in LABEL_COLUMNS})
        w.writerows(rows)
    os.replace(tmp, path)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sarvessel synth OUT_DIR ...`` to the CLI."""
    p = subparsers.add_parser(
        "synth",
        help="write a synthetic Sentinel-1 scene in the xView3 layout",
        description="Write a synthetic Sentinel-1 IW GRD scene (VV/VH dB, aux rasters, "
        "shoreline, labels.csv rows) in the xView3 layout under OUT_DIR.",
    )
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="dataset root to write into")
    p.add_argument("--size", metavar="HxW", help="scene size in pixels, e.g. 4096x4096")
    p.add_argument("--height", type=int, default=None, help="rows (default 4096)")
    p.add_argument("--width", type=int, default=None, help="columns (default 4096)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--scene-id", default=None, help="scene id (default synth<seed><H>x<W>v)")
    p.add_argument("--vessels", type=int, default=None, metavar="N",
                   help="labelled objects (default: scales with sea area)")
    p.add_argument("--no-land", action="store_true", help="open sea only")
    p.add_argument("--strips", action="store_true", help="write strips instead of 512² tiles")
    p.set_defaults(func=_cmd_synth)


# --- helpers -------------------------------------------------------------------------------


def _cmd_synth(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    height, width = args.height or 4096, args.width or 4096
    if args.size:
        m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", args.size)
        if not m:
            raise SarvesselError(f"--size must look like 4096x4096, got {args.size!r}")
        height, width = int(m.group(1)), int(m.group(2))
    with Progress(
        TextColumn("[bold]synth[/bold]"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("synth", total=2 * height)
        scene = synthesize_scene(
            args.out_dir,
            scene_id=args.scene_id,
            height=height,
            width=width,
            seed=args.seed,
            n_vessels=args.vessels,
            land=not args.no_land,
            tiled=not args.strips,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    log.info("wrote %s (%d labels) to %s", scene.scene_id, scene.n_labels, scene.scene_dir)
    return 0


def _georef(rng: np.random.Generator, height: int, width: int) -> GeoTransform:
    """A plausible north-up lon/lat box with 10 m pixels."""
    lat_c = rng.uniform(-50.0, 62.0)
    lon_c = rng.uniform(-170.0, 170.0)
    dlat = 10.0 / METRES_PER_DEGREE
    dlon = dlat / math.cos(math.radians(lat_c))
    return GeoTransform.north_up(
        lon_c - width / 2 * dlon, lat_c + height / 2 * dlat, dlon, dlat, shape=(height, width)
    )


def _sea_fraction(geom: SwathGeometry, land_lr: np.ndarray) -> float:
    from sarvessel.synth.fields import FACTOR

    step = max(1, land_lr.shape[0] // 128)
    sub = land_lr[::step, ::step]
    r = (np.arange(sub.shape[0]) * step + 0.5) * FACTOR - 0.5
    c = (np.arange(land_lr.shape[1])[::step] + 0.5) * FACTOR - 0.5
    rr, cc = np.meshgrid(r, c, indexing="ij")
    return float(np.mean((sub <= 0) & geom.inside(rr, cc)))


def _fmt(x: float, digits: int) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _label_rows(
    scene_id: str, objs: list[SceneObject], georef: GeoTransform, shore: ShoreIndex
) -> list[dict[str, str]]:
    if not objs:
        return []
    rows = np.array([int(round(o.row)) for o in objs])
    cols = np.array([int(round(o.col)) for o in objs])
    lon, lat = georef.pixel_to_lonlat(rows, cols)
    dist = shore.distance_km(rows.astype(np.float64), cols.astype(np.float64))
    out = []
    for i, o in enumerate(objs):
        fishing = ""
        length = ""
        if o.is_vessel:
            if o.fishing_known:
                fishing = str(o.kind.value == "fishing")
            if o.length_known:
                length = _fmt(o.length_m, 1)
        top, left, bottom, right = o.box
        out.append({
            "scene_id": scene_id,
            "detect_scene_row": str(rows[i]),
            "detect_scene_column": str(cols[i]),
            "detect_lat": _fmt(float(lat[i]), 7),
            "detect_lon": _fmt(float(lon[i]), 7),
            "detect_id": f"{scene_id}_{i:05d}",
            "top": str(top),
            "left": str(left),
            "bottom": str(bottom),
            "right": str(right),
            "is_vessel": str(o.is_vessel),
            "is_fishing": fishing,
            "vessel_length_m": length,
            "confidence": o.confidence.value,
            "distance_from_shore_km": _fmt(float(dist[i]), 3),
        })
    return out


class _BandWriter:
    """Produces the VV or VH raster block by block (float32 dB rows)."""

    def __init__(
        self,
        geom: SwathGeometry,
        fields: LowResFields,
        objs: list[SceneObject],
        *,
        seed: int,
        block_rows: int,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        from sarvessel.synth import fields as sf

        self.geom, self.fields, self.objs = geom, fields, objs
        self.seed, self.block_rows, self.progress = seed, block_rows, progress
        self.up = sf.Upsampler(geom.width, fields.land.shape[1])
        self.up_land = sf.Upsampler(geom.width, fields.land_db[0].shape[1], sf.LAND_FACTOR)
        self.lut = sf.speckle_lut()
        self.done = 0
        order = sorted(range(len(objs)), key=lambda i: objs[i].bbox[0])
        self.order = order
        self.kept: dict[int, Patch] = {}
        self.kept_bytes = 0

    def blocks(self, band: int) -> Iterator[np.ndarray]:
        from sarvessel.synth import fields as sf
        from sarvessel.synth import objects as so

        g, f = self.geom, self.fields
        h, w = g.height, g.width
        cache: dict[int, so.Patch] = {}
        nxt = 0
        # patches rendered in the VV pass are kept for the VH pass (each is rendered once)
        for r0 in range(0, h, self.block_rows):
            r1 = min(h, r0 + self.block_rows)
            out = self.up.rows(f.sea_db[band], r0, r1)
            a0 = max(0, int((r0 + 0.5) / sf.FACTOR - 0.5))
            a1 = min(f.land.shape[0], int((r1 + 0.5) / sf.FACTOR - 0.5) + 2)
            if f.has_land_rows[a0:a1].any():
                mask = self.up.rows(f.land, r0, r1) > 0
                if mask.any():
                    land = self.up_land.rows(f.land_db[band], r0, r1)
                    land += sf.parcel_rows(f, r0, r1, w)
                    np.copyto(out, land, where=mask)
                    del land
                del mask
            # objects whose patch touches this block
            while nxt < len(self.order) and self.objs[self.order[nxt]].bbox[0] < r1:
                i = self.order[nxt]
                p = self.kept.pop(i, None)
                cache[i] = p if p is not None else so.render(self.objs[i], g)
                nxt += 1
            for i in [i for i, p in cache.items() if p.r0 + p.target.shape[0] <= r0]:
                self._keep(band, i, cache.pop(i))
            active = [p for p in cache.values() if p.r0 < r1]
            for p in active:
                if p.wake_db is not None:
                    self._apply(out, p, p.wake_db, r0, r1, add=True)
            out += sf.speckle_rows(self.lut, self.seed, band, r0, r1, w)
            for p in active:
                t = p.target if band == 0 else p.target * np.float32(p.vh_scale)
                self._apply(out, p, t, r0, r1, add=False)
            lo, hi = g.valid_cols(r0, r1)
            for k in range(r1 - r0):
                out[k, : lo[k]] = NODATA
                out[k, hi[k] :] = NODATA
            self.done += r1 - r0
            if self.progress is not None:
                self.progress(self.done, 2 * h)
            yield out
        for i in list(cache):
            self._keep(band, i, cache.pop(i))

    def _keep(self, band: int, i: int, patch: Patch) -> None:
        """Keep a VV patch for the VH pass while the kept ones stay under the byte budget."""
        size = patch.target.nbytes + (patch.wake_db.nbytes if patch.wake_db is not None else 0)
        if band == 0 and self.kept_bytes + size <= KEEP_PATCH_BYTES:
            self.kept[i] = patch
            self.kept_bytes += size

    @staticmethod
    def _apply(
        out: np.ndarray, p: Patch, values: np.ndarray, r0: int, r1: int, *, add: bool
    ) -> None:
        pr0, pr1 = max(r0, p.r0), min(r1, p.r0 + values.shape[0])
        if pr0 >= pr1:
            return
        src = values[pr0 - p.r0 : pr1 - p.r0]
        dst = out[pr0 - r0 : pr1 - r0, p.c0 : p.c0 + values.shape[1]]
        if add:
            dst += src
        else:
            lin = np.power(np.float32(10.0), dst / np.float32(10.0))
            lin += src
            dst[...] = np.float32(10.0) * np.log10(lin)
