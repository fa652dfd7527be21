"""Minimal GeoTIFF support for EPSG:4326 rasters: read the georeference, write streamed files.

xView3 scenes are plain single-band GeoTIFFs in geographic coordinates (EPSG:4326). Only the
affine pixel → lon/lat mapping is needed, so this module reads the three GeoTIFF tags that carry
it (ModelPixelScaleTag 33550 + ModelTiepointTag 33922, or ModelTransformationTag 34264) and writes
them back, with a GeoKeyDirectoryTag (34735) that declares EPSG:4326 and GDAL's nodata tag (42113).

Real xView3 files may be tiled or stored in strips; :func:`write_geotiff` writes either, from an
iterator of row blocks, so a 700 MPx band never has to be in memory at once. Strip files without
compression can be memory-mapped by tifffile; tiled files are read tile by tile.

Pixel convention: ``pixel_to_lonlat(row, col)`` returns the coordinates of the pixel *centre*
(``row + 0.5``, ``col + 0.5`` in the raster's corner-based grid, GeoTIFF "PixelIsArea").
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import tifffile

from sarvessel.runtime.errors import SceneError

log = logging.getLogger(__name__)

#: Metres per degree of latitude (and of longitude at the equator), WGS84 equatorial radius.
METRES_PER_DEGREE = 6_378_137.0 * math.pi / 180.0

#: GeoTIFF / GDAL tag codes.
TAG_MODEL_PIXEL_SCALE = 33550
TAG_MODEL_TIEPOINT = 33922
TAG_MODEL_TRANSFORMATION = 34264
TAG_GEO_KEY_DIRECTORY = 34735
TAG_GDAL_NODATA = 42113

#: GeoKey ids used here.
_GT_MODEL_TYPE = 1024  # 1 projected, 2 geographic, 3 geocentric
_GT_RASTER_TYPE = 1025  # 1 PixelIsArea, 2 PixelIsPoint
_GEOGRAPHIC_TYPE = 2048  # EPSG code of the geographic CRS
_GEOG_ANGULAR_UNITS = 2054  # 9102 = degree


class Compression(str, Enum):
    """Compression of written GeoTIFFs (stdlib zlib only, no imagecodecs needed)."""

    NONE = "none"
    DEFLATE = "deflate"


@dataclass(frozen=True)
class GeoTransform:
    """Affine map from raster grid to EPSG:4326 lon/lat (GDAL geotransform order).

    ``lon = lon0 + x * lon_per_col + y * lon_per_row`` and
    ``lat = lat0 + x * lat_per_col + y * lat_per_row`` where ``(y, x)`` are continuous raster
    coordinates with ``(0, 0)`` the top-left corner of the top-left pixel. ``shape`` (rows, cols)
    is optional and only used to evaluate :attr:`pixel_size_m` at the scene centre.

    >>> g = GeoTransform.north_up(10.0, 50.0, 0.001, 0.001, shape=(100, 100))
    >>> lon, lat = g.pixel_to_lonlat(np.array([0]), np.array([0]))
    >>> round(float(lon[0]), 4), round(float(lat[0]), 4)
    (10.0005, 49.9995)
    """

    lon0: float
    lon_per_col: float
    lon_per_row: float
    lat0: float
    lat_per_col: float
    lat_per_row: float
    shape: tuple[int, int] | None = None

    @classmethod
    def north_up(
        cls,
        lon0: float,
        lat0: float,
        dlon: float,
        dlat: float,
        *,
        shape: tuple[int, int] | None = None,
    ) -> GeoTransform:
        """A north-up grid: top-left corner ``(lon0, lat0)``, pixel size ``dlon`` × ``dlat`` (°).

        ``dlat`` is positive; latitude decreases with the row index.
        """
        return cls(float(lon0), float(dlon), 0.0, float(lat0), 0.0, -float(dlat), shape)

    @property
    def is_north_up(self) -> bool:
        """True when there is no rotation (the GeoTIFF can use pixel scale + tiepoint)."""
        return self.lon_per_row == 0.0 and self.lat_per_col == 0.0

    def pixel_to_lonlat(
        self, rows: np.ndarray | float, cols: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Lon/lat (°, float64 arrays) of the centres of pixels ``(rows, cols)`` (0-based)."""
        y = np.asarray(rows, dtype=np.float64) + 0.5
        x = np.asarray(cols, dtype=np.float64) + 0.5
        lon = self.lon0 + x * self.lon_per_col + y * self.lon_per_row
        lat = self.lat0 + x * self.lat_per_col + y * self.lat_per_row
        return lon, lat

    def lonlat_to_pixel(
        self, lon: np.ndarray | float, lat: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`pixel_to_lonlat`: fractional (row, col) pixel indices (float64)."""
        a, b, d, e = self.lon_per_col, self.lon_per_row, self.lat_per_col, self.lat_per_row
        det = a * e - b * d
        if det == 0.0:
            raise ValueError("degenerate geotransform (zero determinant)")
        dx = np.asarray(lon, dtype=np.float64) - self.lon0
        dy = np.asarray(lat, dtype=np.float64) - self.lat0
        x = (e * dx - b * dy) / det
        y = (-d * dx + a * dy) / det
        return y - 0.5, x - 0.5

    def pixel_spacing_m(self) -> tuple[float, float]:
        """Approximate (row, column) pixel spacing in metres at the scene centre.

        Uses a spherical Earth (equatorial radius), good to ~0.5 % for 10 m pixels.
        """
        if self.shape is not None:
            _, lat_c = self.pixel_to_lonlat(self.shape[0] / 2 - 0.5, self.shape[1] / 2 - 0.5)
            lat_c = float(lat_c)
        else:
            lat_c = self.lat0
        coslat = math.cos(math.radians(lat_c))
        col_m = math.hypot(self.lon_per_col * coslat, self.lat_per_col) * METRES_PER_DEGREE
        row_m = math.hypot(self.lon_per_row * coslat, self.lat_per_row) * METRES_PER_DEGREE
        return row_m, col_m

    @property
    def pixel_size_m(self) -> float:
        """Approximate pixel size in metres at the scene centre (mean of row and column spacing)."""
        row_m, col_m = self.pixel_spacing_m()
        return 0.5 * (row_m + col_m)


class ProjectedCRSError(SceneError):
    """A GeoTIFF in a projected CRS: the runtime needs lon/lat (EPSG:4326)."""


def read_georef(page: tifffile.TiffPage) -> GeoTransform | None:
    """The :class:`GeoTransform` of a GeoTIFF page, or None when the page has no georeference.

    Reads ModelTransformationTag, else ModelPixelScaleTag + the first ModelTiepointTag. A
    "PixelIsPoint" raster is shifted by half a pixel so the result is always corner-based.
    Raises :class:`SceneError` (naming the file) for malformed tags or a projected CRS.
    """
    tags = page.tags
    where = _page_name(page)
    keys = _geokeys(page)
    model_type = keys.get(_GT_MODEL_TYPE)
    if model_type is not None and model_type != 2:
        raise ProjectedCRSError(
            f"{where}: GeoTIFF model type {model_type} is not geographic (EPSG:4326 lon/lat "
            "expected; reproject the scene with gdalwarp -t_srs EPSG:4326)"
        )
    epsg = keys.get(_GEOGRAPHIC_TYPE)
    if epsg is not None and epsg not in (4326, 32767):
        log.warning("%s: geographic CRS EPSG:%s treated as EPSG:4326", where, epsg)
    shape = (int(page.shape[0]), int(page.shape[1])) if len(page.shape) >= 2 else None

    if TAG_MODEL_TRANSFORMATION in tags:
        m = np.asarray(tags[TAG_MODEL_TRANSFORMATION].value, dtype=np.float64)
        if m.size != 16 or not np.all(np.isfinite(m)):
            raise SceneError(f"{where}: ModelTransformationTag must hold 16 finite numbers")
        m = m.reshape(4, 4)
        coef = (m[0, 3], m[0, 0], m[0, 1], m[1, 3], m[1, 0], m[1, 1])
        geo = GeoTransform(*(float(c) for c in coef), shape)
    elif TAG_MODEL_PIXEL_SCALE in tags and TAG_MODEL_TIEPOINT in tags:
        scale = np.asarray(tags[TAG_MODEL_PIXEL_SCALE].value, dtype=np.float64)
        tie = np.asarray(tags[TAG_MODEL_TIEPOINT].value, dtype=np.float64)
        if scale.size < 2 or tie.size < 6 or tie.size % 6:
            raise SceneError(
                f"{where}: malformed ModelPixelScaleTag ({scale.size} values) or "
                f"ModelTiepointTag ({tie.size} values)"
            )
        if not (np.all(np.isfinite(scale[:2])) and np.all(np.isfinite(tie[:6]))):
            raise SceneError(f"{where}: non-finite GeoTIFF pixel scale or tiepoint")
        if scale[0] <= 0 or scale[1] <= 0:
            raise SceneError(f"{where}: GeoTIFF pixel scale must be positive, got {scale[:2]}")
        i, j, _, lon, lat, _ = tie[:6]
        sx, sy = scale[0], scale[1]
        coef = (lon - i * sx, sx, 0.0, lat + j * sy, 0.0, -sy)
        geo = GeoTransform(*(float(c) for c in coef), shape)
    else:
        return None

    if keys.get(_GT_RASTER_TYPE) == 2:  # PixelIsPoint: the tie refers to the pixel centre
        geo = GeoTransform(
            geo.lon0 - 0.5 * (geo.lon_per_col + geo.lon_per_row),
            geo.lon_per_col,
            geo.lon_per_row,
            geo.lat0 - 0.5 * (geo.lat_per_col + geo.lat_per_row),
            geo.lat_per_col,
            geo.lat_per_row,
            shape,
        )
    return geo


def write_geotiff(
    path: Path | str,
    data: np.ndarray | Iterable[np.ndarray],
    *,
    shape: tuple[int, int] | None = None,
    dtype: np.dtype | type | str | None = None,
    georef: GeoTransform | None = None,
    nodata: float | None = None,
    tile: int | None = 512,
    compression: Compression | str | None = None,
) -> Path:
    """Write a single-band GeoTIFF (EPSG:4326) from an array or an iterator of row blocks.

    ``data`` is a 2-D array ``[H, W]`` or an iterable of row blocks ``[h_i, W]`` (any ``h_i``,
    top to bottom, summing to ``H``); with an iterable, ``shape`` ``(H, W)`` and ``dtype`` are
    required and only about ``tile`` rows (or one block) are held at once. ``tile`` is the
    square tile size in pixels (a multiple of 16); None writes strips. ``nodata`` goes to
    GDAL_NODATA (tag 42113). ``compression`` is :class:`Compression` (the default is none).
    Returns the path written.
    """
    path = Path(path)
    comp = Compression(compression) if compression is not None else Compression.NONE
    if isinstance(data, np.ndarray):
        if data.ndim != 2:
            raise ValueError(f"expected a 2-D array, got shape {data.shape}")
        if shape is not None and tuple(shape) != data.shape:
            raise ValueError(f"shape {shape} does not match array shape {data.shape}")
        shape = (int(data.shape[0]), int(data.shape[1]))
        dtype = data.dtype if dtype is None else np.dtype(dtype)
        blocks: Iterable[np.ndarray] = (data,)
    else:
        if shape is None or dtype is None:
            raise ValueError("shape and dtype are required when data is an iterator")
        blocks = data
    dt = np.dtype(dtype)
    height, width = int(shape[0]), int(shape[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"raster size must be positive, got {height} x {width}")
    if tile is not None and (tile <= 0 or tile % 16):
        raise ValueError(f"tile must be a positive multiple of 16, got {tile}")

    extratags = _geotiff_tags(georef, nodata)
    rows = _rechunk_rows(blocks, height, width, dt, tile if tile is not None else 0)
    kwargs: dict = {
        "shape": (height, width),
        "dtype": dt,
        "photometric": "minisblack",
        "extratags": extratags,
        "metadata": None,
    }
    if tile is not None:
        kwargs["tile"] = (tile, tile)
        if comp is Compression.DEFLATE:
            kwargs["compression"] = "zlib"
        it: Iterator = _tiles(rows, width, tile)
    else:
        rps = max(1, (256 * 1024) // (width * dt.itemsize))
        kwargs["rowsperstrip"] = rps
        if comp is Compression.DEFLATE:
            kwargs["compression"] = "zlib"
        it = _strip_bytes(_rechunk_rows(rows, height, width, dt, rps), comp)
    try:
        with tifffile.TiffWriter(path, bigtiff=height * width * dt.itemsize > 2**32 - 2**27) as tw:
            tw.write(it, **kwargs)
    except BaseException:
        path.unlink(missing_ok=True)  # never leave a truncated raster behind
        raise
    return path


# --- helpers -------------------------------------------------------------------------------


def _page_name(page: tifffile.TiffPage) -> str:
    try:
        return str(page.parent.filehandle.path)
    except AttributeError:  # pragma: no cover - detached page
        return "GeoTIFF"


def _geokeys(page: tifffile.TiffPage) -> dict[int, int]:
    """Short-valued GeoKeys of the page (id → value); empty when there is no directory."""
    tag = page.tags.get(TAG_GEO_KEY_DIRECTORY)
    if tag is None:
        return {}
    v = [int(x) for x in np.asarray(tag.value).ravel()]
    if len(v) < 4 or len(v) < 4 + 4 * v[3]:
        raise SceneError(f"{_page_name(page)}: truncated GeoKeyDirectoryTag ({len(v)} values)")
    keys = {}
    for k in range(v[3]):
        key_id, location, _count, value = v[4 + 4 * k : 8 + 4 * k]
        if location == 0:  # value stored inline
            keys[key_id] = value
    return keys


def _geotiff_tags(georef: GeoTransform | None, nodata: float | None) -> list[tuple]:
    tags: list[tuple] = []
    if georef is not None:
        geokeys = [1, 1, 0, 4]
        geokeys += [_GT_MODEL_TYPE, 0, 1, 2]  # geographic
        geokeys += [_GT_RASTER_TYPE, 0, 1, 1]  # PixelIsArea
        geokeys += [_GEOGRAPHIC_TYPE, 0, 1, 4326]
        geokeys += [_GEOG_ANGULAR_UNITS, 0, 1, 9102]
        tags.append((TAG_GEO_KEY_DIRECTORY, "H", len(geokeys), geokeys, True))
        if georef.is_north_up:
            scale = (georef.lon_per_col, -georef.lat_per_row, 0.0)
            tie = (0.0, 0.0, 0.0, georef.lon0, georef.lat0, 0.0)
            tags.append((TAG_MODEL_PIXEL_SCALE, "d", 3, scale, True))
            tags.append((TAG_MODEL_TIEPOINT, "d", 6, tie, True))
        else:
            g = georef
            m = (
                (g.lon_per_col, g.lon_per_row, 0.0, g.lon0),
                (g.lat_per_col, g.lat_per_row, 0.0, g.lat0),
                (0.0, 0.0, 0.0, 0.0),
                (0.0, 0.0, 0.0, 1.0),
            )
            tags.append((TAG_MODEL_TRANSFORMATION, "d", 16, [x for r in m for x in r], True))
    if nodata is not None:
        text = repr(float(nodata)) if not float(nodata).is_integer() else str(int(nodata))
        tags.append((TAG_GDAL_NODATA, "s", 0, text, True))
    return tags


def _rechunk_rows(
    blocks: Iterable[np.ndarray], height: int, width: int, dtype: np.dtype, rows: int
) -> Iterator[np.ndarray]:
    """Re-cut row blocks into blocks of exactly ``rows`` rows (the last may be shorter).

    ``rows == 0`` passes the blocks through after checking them.
    """
    pending: list[np.ndarray] = []
    npending = 0
    seen = 0
    for block in blocks:
        b = np.asarray(block)
        if b.ndim != 2 or b.shape[1] != width:
            raise ValueError(f"row block of shape {b.shape} does not fit raster width {width}")
        if b.dtype != dtype:
            b = b.astype(dtype)
        seen += b.shape[0]
        if seen > height:
            raise ValueError(f"row blocks give more than {height} rows")
        if rows == 0:
            yield b
            continue
        pending.append(b)
        npending += b.shape[0]
        while npending >= rows:
            merged = pending[0] if len(pending) == 1 else np.concatenate(pending, axis=0)
            yield merged[:rows]
            rest = merged[rows:]
            pending = [rest] if rest.shape[0] else []
            npending = rest.shape[0]
    if seen != height:
        raise ValueError(f"row blocks gave {seen} rows, expected {height}")
    if npending:
        yield pending[0] if len(pending) == 1 else np.concatenate(pending, axis=0)


def _tiles(rows: Iterator[np.ndarray], width: int, tile: int) -> Iterator[np.ndarray]:
    """Row-major ``tile`` × ``tile`` tiles from blocks of ``tile`` rows (edges zero-padded)."""
    for band in rows:
        for c0 in range(0, width, tile):
            t = band[:, c0 : c0 + tile]
            if t.shape != (tile, tile):
                padded = np.zeros((tile, tile), dtype=band.dtype)
                padded[: t.shape[0], : t.shape[1]] = t
                t = padded
            yield np.ascontiguousarray(t)


def _strip_bytes(rows: Iterator[np.ndarray], comp: Compression) -> Iterator[bytes]:
    for strip in rows:
        raw = np.ascontiguousarray(strip).tobytes()
        yield zlib.compress(raw, 6) if comp is Compression.DEFLATE else raw
