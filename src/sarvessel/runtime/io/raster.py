"""Windowed reading of one TIFF raster, a band of rows at a time, never the whole image.

Why not ``tifffile.imread`` or ``aszarr``: a scene band is ~3 GB, so it must be streamed; tiled
files cannot be memory-mapped, and reading whole tiles straight from ``page.dataoffsets`` was ~8×
faster than ``aszarr`` (docs/references.md §6). This module reads the segments (tiles or strips)
that intersect a band of rows in one sequential ``read`` and decodes them with ``TiffPage.decode``
(which handles every compression and predictor tifffile knows), with a zero-copy fast path for
uncompressed data. Uncompressed, contiguous strip files are memory-mapped instead.

The raw bytes go through one reused buffer per reader of at most :data:`READ_CHUNK_BYTES`
(or one segment, if larger): segments are read in runs that fit it, so the buffer does not
grow with the scene's width (it once held two full-width tile rows per band and thread,
~27 KB per scene column).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import tifffile

from sarvessel.runtime.errors import SceneError

log = logging.getLogger(__name__)

#: Most bytes read in one go (a run of adjacent segments); also the size of the reused buffer.
READ_CHUNK_BYTES = 8 << 20


class RasterReader:
    """Reads rows ``r0:r1`` of the first page of a TIFF as ``float32 [bands, r1-r0, width]``.

    Thread-safe: each call takes the file lock only for the raw read; decoding runs unlocked so
    bands in different files can be read in parallel threads.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SceneError(f"{self.path}: file not found")
        try:
            self._tif = tifffile.TiffFile(self.path)
            page = self._tif.pages.first
            page.shape  # noqa: B018 - forces the IFD to be parsed here, inside the try
        except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError) as exc:
            raise SceneError(f"{self.path}: not a readable TIFF ({exc})") from exc
        self.page: tifffile.TiffPage = page
        self._lock = threading.Lock()
        if page.imagedepth != 1:
            raise SceneError(f"{self.path}: 3-D (volumetric) TIFFs are not supported")
        self.height = int(page.imagelength)
        self.width = int(page.imagewidth)
        self.bands = int(page.samplesperpixel)
        self.dtype = page.dtype
        if self.dtype is None or self.dtype.kind not in "iuf":
            raise SceneError(f"{self.path}: unsupported pixel type {page.dtype}")
        self._check_not_truncated()
        self._planar_separate = self.bands > 1 and page.planarconfig == 2
        if page.is_tiled:
            self.seg_h, self.seg_w = int(page.tilelength), int(page.tilewidth)
        else:
            self.seg_h, self.seg_w = int(page.rowsperstrip or self.height), self.width
            self.seg_h = min(self.seg_h, self.height)
        self.segs_across = -(-self.width // self.seg_w)
        self.segs_down = -(-self.height // self.seg_h)
        self._raw = page.compression == 1 and page.predictor == 1 and page.fillorder == 1
        self._check_segment_table()
        self._memmap = self._open_memmap()
        self._buffers: list[bytearray] = []  # reusable raw-read buffers, one per concurrent read

    # -- public ---------------------------------------------------------------------------
    def read_rows(self, r0: int, r1: int, *, out: np.ndarray | None = None,
                  cols: tuple[int, int] | None = None) -> np.ndarray:
        """Return rows ``r0:r1`` (clipped to the image) as ``float32 [bands, rows, width]``.

        ``out``, if given, is a float32 array of at least that shape whose leading part is
        filled and returned: streaming callers reuse one buffer per band instead of allocating
        (and page-faulting) tens of megabytes per row band. ``cols``: only columns
        ``c0:c1`` (clipped), e.g. a window of a tiled file read from the tiles it touches;
        the default is every column.
        """
        r0, r1 = max(0, r0), min(self.height, r1)
        c0, c1 = (0, self.width) if cols is None else (max(0, cols[0]),
                                                       min(self.width, cols[1]))
        shape = (self.bands, max(0, r1 - r0), max(0, c1 - c0))
        if out is None:
            out = np.empty(shape, np.float32)
        else:
            out = out.reshape(-1)[: np.prod(shape)].reshape(shape)
        if r1 <= r0 or c1 <= c0:
            return out
        if self._memmap is not None:
            block = self._memmap[r0:r1, c0:c1]
            out[...] = block[np.newaxis] if block.ndim == 2 else np.moveaxis(block, -1, 0)
            return out
        return self._read_segments(r0, r1, c0, c1, out)

    def close(self) -> None:
        """Close the file."""
        self._memmap = None
        self._tif.close()

    # -- helpers --------------------------------------------------------------------------
    def _check_not_truncated(self) -> None:
        size = os.path.getsize(self.path)
        offsets = np.asarray(self.page.dataoffsets, np.int64)
        counts = np.asarray(self.page.databytecounts, np.int64)
        if len(offsets) == 0 or np.any(offsets + counts > size) or np.any(counts == 0):
            raise SceneError(
                f"{self.path}: truncated or damaged TIFF (pixel data ends past the end of the "
                f"{size}-byte file)"
            )

    def _check_segment_table(self) -> None:
        """Refuse a header whose image size disagrees with its own strip or tile table.

        Why: a damaged or hand-edited header (an image length of 200000 on a 1024-row file)
        would otherwise fail deep in a read with an IndexError or an mmap error.
        """
        planes = self.bands if self._planar_separate else 1
        want = self.segs_across * self.segs_down * planes
        got = len(self.page.dataoffsets)
        if got != want:
            raise SceneError(
                f"{self.path}: damaged TIFF header: {self.height} x {self.width} px in "
                f"{self.seg_h} x {self.seg_w} px segments needs {want} segments, the file "
                f"lists {got}")
        if self._raw:
            spp = 1 if self._planar_separate else self.bands
            seg_bytes = self.seg_w * spp * np.dtype(self.dtype).itemsize
            counts = np.asarray(self.page.databytecounts, np.int64)
            rows = np.minimum(self.seg_h, self.height - (np.arange(got) % (got // planes)
                                                         // self.segs_across) * self.seg_h)
            need = rows * seg_bytes  # bottom-edge segments may stop at the image's last row
            if np.any(counts < need):
                raise SceneError(
                    f"{self.path}: damaged TIFF header: uncompressed segments hold fewer bytes "
                    f"than {self.height} x {self.width} px of {self.dtype} need")

    def _open_memmap(self) -> np.ndarray | None:
        page = self.page
        if page.is_tiled or not self._raw or self._planar_separate:
            return None
        offsets, counts = page.dataoffsets, page.databytecounts
        if any(offsets[i] + counts[i] != offsets[i + 1] for i in range(len(offsets) - 1)):
            return None
        shape = (self.height, self.width) + ((self.bands,) if self.bands > 1 else ())
        dtype = np.dtype(self.dtype).newbyteorder(self._tif.byteorder)
        return np.memmap(self.path, dtype=dtype, mode="r", offset=offsets[0], shape=shape)

    def _read_segments(self, r0: int, r1: int, c0: int, c1: int, out: np.ndarray
                       ) -> np.ndarray:
        s0, s1 = r0 // self.seg_h, (r1 - 1) // self.seg_h + 1
        k0, k1 = c0 // self.seg_w, (c1 - 1) // self.seg_w + 1
        planes = self.bands if self._planar_separate else 1
        per_plane = self.segs_across * self.segs_down
        for plane in range(planes):
            idx = [plane * per_plane + s * self.segs_across + k
                   for s in range(s0, s1) for k in range(k0, k1)]
            store = self._take_buffer()
            try:
                for run in self._runs(idx):
                    store = self._read_run(run, r0, r1, c0, c1, plane, per_plane, store, out)
            finally:
                self._buffers.append(store)
        return out

    def _runs(self, idx: list[int]) -> list[list[int]]:
        """``idx`` cut into runs of segments whose bytes span at most :data:`READ_CHUNK_BYTES`
        (a run holds at least one segment)."""
        offsets, counts = self.page.dataoffsets, self.page.databytecounts
        runs: list[list[int]] = []
        lo = hi = 0
        for i in idx:
            a, b = offsets[i], offsets[i] + counts[i]
            if runs and max(hi, b) - min(lo, a) <= READ_CHUNK_BYTES:
                runs[-1].append(i)
                lo, hi = min(lo, a), max(hi, b)
            else:
                runs.append([i])
                lo, hi = a, b
        return runs

    def _take_buffer(self) -> bytearray:
        try:
            return self._buffers.pop()  # list.pop is atomic: each read gets its own buffer
        except IndexError:
            return bytearray()

    def _read_run(self, run: list[int], r0: int, r1: int, c0: int, c1: int, plane: int,
                  per_plane: int, store: bytearray, out: np.ndarray) -> bytearray:
        """Read the segments ``run`` in one ``read`` and decode them into ``out``; return the
        (possibly grown) buffer."""
        offsets, counts = self.page.dataoffsets, self.page.databytecounts
        lo = min(offsets[i] for i in run)
        hi = max(offsets[i] + counts[i] for i in run)
        if len(store) < hi - lo:
            store = bytearray(hi - lo)
        buf = memoryview(store)[: hi - lo]
        with self._lock:
            fh = self._tif.filehandle
            fh.seek(lo)
            got = fh.readinto(buf)
        if got != hi - lo:
            raise SceneError(f"{self.path}: file ended while reading rows {r0}:{r1}")
        planes = self.bands if self._planar_separate else 1
        for i in run:
            seg = self._decode(buf, offsets[i] - lo, counts[i], i)
            k = i - plane * per_plane
            sr, sc = (k // self.segs_across) * self.seg_h, (k % self.segs_across) * self.seg_w
            # rows of this segment inside r0:r1, columns inside c0:c1 (and the image)
            a, b = max(sr, r0), min(sr + self.seg_h, r1, self.height)
            x0, x1 = max(sc, c0), min(sc + self.seg_w, c1, self.width)
            part = seg[:, a - sr : b - sr, x0 - sc : x1 - sc]
            if planes > 1:
                out[plane, a - r0 : b - r0, x0 - c0 : x1 - c0] = part[0]
            else:
                out[:, a - r0 : b - r0, x0 - c0 : x1 - c0] = part
        del buf
        return store

    def _decode(self, buf: memoryview, start: int, count: int, index: int) -> np.ndarray:
        """One segment as ``[samples, seg_h, seg_w]`` (the last strip may be shorter)."""
        spp = 1 if self._planar_separate else self.bands
        if self._raw:
            dtype = np.dtype(self.dtype).newbyteorder(self._tif.byteorder)
            flat = np.frombuffer(buf, dtype=dtype, count=count // dtype.itemsize, offset=start)
            rows = len(flat) // (self.seg_w * spp)
            seg = flat[: rows * self.seg_w * spp].reshape(rows, self.seg_w, spp)
        else:
            try:
                data, _, _ = self.page.decode(bytes(buf[start : start + count]), index)
            except Exception as exc:  # codecs raise many types; name the file either way
                raise SceneError(f"{self.path}: cannot decode segment {index} ({exc})") from exc
            seg = np.asarray(data).reshape(-1, self.seg_w, spp)
        return np.moveaxis(seg, -1, 0)
