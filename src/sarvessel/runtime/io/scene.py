"""Scenes: xView3 scene folders and plain multi-band GeoTIFFs, read a band of rows at a time.

An xView3 scene folder holds ``VV_dB.tif`` and ``VH_dB.tif`` (10 m pixels, nodata −32768) and,
optionally, 500 m auxiliary rasters (``bathymetry.tif``, ``owiMask.tif`` ...) that are resampled
to the requested rows on the fly (nearest neighbour). The shoreline, when present, is
``<root>/shoreline/<scene_id>_shoreline.npy`` or ``<scene_dir>/<scene_id>_shoreline.npy``.
A plain GeoTIFF with C bands (samples or planes) is read as bands in file order.

Nothing here loads a whole 10 m band: :meth:`Scene.read_rows` returns one band of rows.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarvessel.runtime.errors import SceneError
from sarvessel.runtime.io.raster import RasterReader

log = logging.getLogger(__name__)

#: The 10 m polarisation bands of an xView3 scene folder, in channel order.
XVIEW3_BANDS: tuple[str, ...] = ("VV_dB", "VH_dB")
#: Optional 500 m auxiliary rasters of an xView3 scene folder.
XVIEW3_AUX: tuple[str, ...] = (
    "bathymetry", "owiMask", "owiWindSpeed", "owiWindDirection", "owiWindQuality",
)
#: owiMask value of land (0 valid sea, 1 land, 2 ice).
OWI_LAND = 1
DEFAULT_PIXEL_SIZE_M = 10.0


@dataclass(frozen=True)
class SceneInfo:
    """What a scene is, without its pixels."""

    scene_id: str
    height: int
    width: int
    bands: tuple[str, ...]
    pixel_size_m: float

    @property
    def megapixels(self) -> float:
        return self.height * self.width / 1e6


class Scene:
    """An open scene. Use :func:`open_scene`; close it (or use ``with``) when done."""

    def __init__(
        self,
        scene_id: str,
        readers: Sequence[RasterReader],
        band_names: Sequence[str],
        *,
        aux: dict[str, RasterReader] | None = None,
        shoreline_path: Path | None = None,
        source: Path,
    ) -> None:
        self.scene_id = scene_id
        self.source = source
        self._readers = list(readers)
        self.band_names = tuple(band_names)
        self._aux = aux or {}
        self._aux_cache: dict[str, np.ndarray] = {}
        self.shoreline_path = shoreline_path
        first = self._readers[0]
        self.height, self.width = first.height, first.width
        for r in self._readers[1:]:
            if (r.height, r.width) != (self.height, self.width):
                raise SceneError(
                    f"{r.path}: size {r.height} x {r.width} does not match "
                    f"{first.path.name} ({self.height} x {self.width})"
                )
        self.georef = _read_georef(first)
        self.pixel_size_m = (
            float(self.georef.pixel_size_m) if self.georef is not None else DEFAULT_PIXEL_SIZE_M
        )
        self._pool = ThreadPoolExecutor(max_workers=2) if len(self._readers) > 1 else None
        # the last rows read from a single multi-band file, shared by its bands' readers
        self._block_lock = threading.Lock()
        self._block_rows: tuple[int, int] | None = None
        self._block = np.zeros((0, 0, 0), np.float32)

    # -- public ---------------------------------------------------------------------------
    @property
    def info(self) -> SceneInfo:
        return SceneInfo(self.scene_id, self.height, self.width, self.band_names,
                         self.pixel_size_m)

    def fingerprint(self) -> list[list]:
        """[path, size, mtime_ns] of every file read for detection (bands, then auxiliary
        rasters): a resumed run reuses finished rows only if these are unchanged."""
        out = []
        for r in [*self._readers, *self._aux.values()]:
            st = r.path.stat()
            out.append([str(r.path.resolve()), st.st_size, st.st_mtime_ns])
        return out

    @property
    def aux_names(self) -> tuple[str, ...]:
        return tuple(self._aux)

    def read_rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows ``r0:r1`` of every band as ``float32 [C, rows, width]`` (nodata kept as is).

        Bands in separate files are read in parallel threads (tifffile decoding and numpy
        release the GIL).
        """
        if self._pool is None:
            return self._readers[0].read_rows(r0, r1)
        parts = list(self._pool.map(lambda rd: rd.read_rows(r0, r1), self._readers))
        return np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]

    def read_band_rows(
        self, index: int, r0: int, r1: int, *, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Rows ``r0:r1`` of band ``index`` as ``float32 [rows, width]``.

        ``out``: an optional reusable float32 buffer (see :meth:`RasterReader.read_rows`).
        """
        if len(self._readers) == 1:  # one multi-band file: read the rows once for all bands
            with self._block_lock:
                if self._block_rows != (r0, r1):
                    self._block, self._block_rows = self._readers[0].read_rows(r0, r1), (r0, r1)
                return self._block[index]
        return self._readers[index].read_rows(r0, r1, out=out)[0]

    def read_band_window(self, index: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Rows ``r0:r1``, columns ``c0:c1`` of band ``index`` as ``float32 [rows, cols]``
        (a tiled file decodes only the tiles the window touches)."""
        if len(self._readers) == 1:
            return self._readers[0].read_rows(r0, r1, cols=(c0, c1))[index]
        return self._readers[index].read_rows(r0, r1, cols=(c0, c1))[0]

    def read_aux_rows(self, name: str, r0: int, r1: int) -> np.ndarray:
        """Auxiliary raster ``name`` resampled to scene rows ``r0:r1``: ``float32 [rows, width]``.

        The auxiliary rasters are small (500 m pixels), so they are read once and cached.
        """
        full = self._aux_full(name)
        ah, aw = full.shape
        rows = np.minimum((np.arange(r0, r1) + 0.5) * ah / self.height, ah - 1).astype(np.intp)
        cols = np.minimum((np.arange(self.width) + 0.5) * aw / self.width, aw - 1).astype(np.intp)
        return full[rows][:, cols]

    def aux_at(self, name: str, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Auxiliary raster ``name`` at scene pixel positions (nearest neighbour)."""
        full = self._aux_full(name)
        ah, aw = full.shape
        r = np.clip((np.asarray(rows, np.float64) + 0.5) * ah / self.height, 0, ah - 1)
        c = np.clip((np.asarray(cols, np.float64) + 0.5) * aw / self.width, 0, aw - 1)
        return full[r.astype(np.intp), c.astype(np.intp)]

    def aux_shape(self, name: str) -> tuple[int, int]:
        """(rows, columns) of auxiliary raster ``name`` in its own coarse pixels: a scene pixel
        spans ``height / rows`` scene rows (the cell size :meth:`aux_at` resamples from)."""
        rd = self._aux.get(name)
        if rd is None:
            raise SceneError(f"{self.source}: scene has no auxiliary raster {name!r}")
        return rd.height, rd.width

    def on_land(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """True where a scene pixel is land by ``owiMask`` (all False if the scene has none)."""
        if "owiMask" not in self._aux:
            return np.zeros(np.shape(rows), bool)
        return self.aux_at("owiMask", rows, cols) == OWI_LAND

    def _aux_full(self, name: str) -> np.ndarray:
        if name not in self._aux:
            raise SceneError(f"{self.source}: scene has no auxiliary raster {name!r}")
        full = self._aux_cache.get(name)
        if full is None:
            rd = self._aux[name]
            full = rd.read_rows(0, rd.height)[0]
            self._aux_cache[name] = full
        return full

    def to_lonlat(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scene pixel coordinates to (lon, lat) in degrees; raises if not georeferenced."""
        if self.georef is None:
            raise SceneError(f"{self.source}: scene is not georeferenced")
        return self.georef.pixel_to_lonlat(np.asarray(rows), np.asarray(cols))

    def close(self) -> None:
        """Close every file of the scene."""
        self._block, self._block_rows = np.zeros((0, 0, 0), np.float32), None
        if self._pool is not None:
            self._pool.shutdown()
        for r in [*self._readers, *self._aux.values()]:
            r.close()

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_scene(path: Path | str, *, bands: Sequence[str] = XVIEW3_BANDS) -> Scene:
    """Open an xView3 scene folder, or a single (multi-band) GeoTIFF.

    ``bands`` names the 10 m rasters of a scene folder to read, in channel order. The default is
    VV then VH. Raises :class:`SceneError` naming the file for a missing band, a size mismatch or
    an unreadable TIFF.
    """
    path = Path(path)
    if path.is_dir():
        return _open_xview3_folder(path, bands)
    if path.is_file():
        reader = RasterReader(path)
        names = tuple(f"band{i + 1}" for i in range(reader.bands))
        return Scene(path.stem, [reader], names, source=path)
    raise SceneError(f"{path}: no such scene folder or file")


def find_shoreline(scene_dir: Path, scene_id: str) -> Path | None:
    """The xView3 shoreline file of a scene, looked for beside and inside the scene folder."""
    name = f"{scene_id}_shoreline.npy"
    for cand in (scene_dir.parent / "shoreline" / name, scene_dir / name):
        if cand.is_file():
            return cand
    return None


def _open_xview3_folder(folder: Path, bands: Sequence[str]) -> Scene:
    # absolute, "." and ".." folded, symlinks kept: "detect ." names its folder, a linked
    # scene keeps the link's name, and the shoreline is looked for beside the folder
    folder = Path(os.path.abspath(folder))
    readers: list[RasterReader] = []
    try:
        for name in bands:
            f = folder / f"{name}.tif"
            if f.exists() and not f.is_file():
                raise SceneError(f"{f}: band {name} is not a file")
            if not f.is_file():
                have = ", ".join(sorted(p.name for p in folder.glob("*.tif"))) or "no .tif files"
                raise SceneError(f"{folder}: missing band {f.name} (found: {have})")
            rd = RasterReader(f)
            if rd.bands != 1:
                raise SceneError(f"{f}: expected one band, found {rd.bands}")
            readers.append(rd)
        aux = {n: RasterReader(folder / f"{n}.tif") for n in XVIEW3_AUX
               if (folder / f"{n}.tif").is_file()}
        scene_id = folder.name
        return Scene(scene_id, readers, bands, aux=aux,
                     shoreline_path=find_shoreline(folder, scene_id), source=folder)
    except BaseException:
        for r in readers:
            r.close()
        raise


def _read_georef(reader: RasterReader):  # -> GeoTransform | None
    try:
        from sarvessel.runtime.io.geotiff import ProjectedCRSError, read_georef
    except ImportError:  # pragma: no cover - geotiff module always ships
        return None
    try:
        geo = read_georef(reader.page)
    except ProjectedCRSError:  # positions and pixel sizes would come out wrong: refuse
        raise
    except (ValueError, KeyError, IndexError) as exc:  # malformed tags: pixel coordinates
        log.warning("%s: ignoring unreadable georeferencing (%s)", reader.path, exc)
        return None
    if geo is not None and not (np.isfinite(geo.pixel_size_m) and geo.pixel_size_m > 0):
        log.warning("%s: ignoring georeferencing with a pixel size of %s m", reader.path,
                    geo.pixel_size_m)
        return None
    return geo
