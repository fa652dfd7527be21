"""The scene pipeline: read → tile → preprocess → infer → post-process → merge, a tile row at a
time.

Memory is bounded by one band of rows (tile height × scene width × bands), whatever the scene
size. Rows shared by two overlapping tile rows are read and preprocessed once. Each finished tile
row is appended to an optional journal (JSON lines, flushed and fsynced), so a run that dies —
power, input or process — resumes where it stopped and loses no detection already made.
Per-stage timings are returned for benchmarks.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sarvessel.runtime.backends.base import Backend
from sarvessel.runtime.contract import OVERLAP
from sarvessel.runtime.detections import Detections
from sarvessel.runtime.detector import Detector, compose
from sarvessel.runtime.errors import SceneError
from sarvessel.runtime.io.outputs import atomic_open
from sarvessel.runtime.io.scene import Scene
from sarvessel.runtime.post.nms import SceneMerger
from sarvessel.runtime.preprocess import (
    BATHYMETRY,
    DEFAULT_BANDS,
    UNITS_CHECK_MIN_SAMPLES,
    BandRange,
    db_units_problem,
    to_uint8,
    valid_mask,
)
from sarvessel.runtime.prescreen import PrescreenConfig, PrescreenCounts, keep_tiles
from sarvessel.runtime.tiling import tile_starts

log = logging.getLogger(__name__)

#: Called after each tile row with (tiles done, tiles in total).
ProgressFn = Callable[[int, int], None]


class Pacer(Protocol):
    """Paces the tile stream (the power governor, :class:`~sarvessel.runtime.power.
    PowerGovernor`): it may pause before a backend call, and it is told when each call and each
    tile row ends. Pausing only between calls, it cannot change any detection."""

    def before_batch(self, tiles: int = 1) -> float: ...

    def after_batch(self, tiles: int = 1) -> None: ...

    def mark_row(self, index: int) -> None: ...


#: Fewest newly read rows on which a band's missing data is judged (:func:`_combine_valid`).
BAND_CHECK_MIN_ROWS = 32


@dataclass(frozen=True)
class PipelineConfig:
    """How a scene is cut and merged. Distances in scene pixels."""

    #: Overlap between neighbouring tiles (px). Objects cut by one tile are whole in the next.
    #: The default is :data:`~sarvessel.runtime.contract.OVERLAP`.
    overlap: int = OVERLAP
    #: Tiles per backend call.
    batch_size: int = 8
    #: Detections closer than this to a higher-scoring one are duplicates (px). The default is
    #: 10 px (100 m), as the xView3 entries used (docs/references.md §7).
    nms_radius_px: float = 10.0
    #: Drop detections whose centre lies on land according to ``owiMask`` (when present).
    mask_land: bool = True
    #: Longest side of the quicklook thumbnail kept while streaming (px).
    thumbnail_max_side: int = 2048
    #: Run the three stages concurrently on neighbouring tile rows: while the backend infers
    #: row N, row N+1 is read and preprocessed and row N-1 post-processed and merged (bounded
    #: queues of one row each; results, journal and merge order are the same as sequential).
    #: On the board this keeps the accelerator fed while the ARM cores do the rest.
    concurrent: bool = True
    #: Tiles never sent to the backend (docs/prescreen.md): land (exact) on, brightness gate off.
    prescreen: PrescreenConfig = PrescreenConfig()


@dataclass
class StageTimings:
    """Wall-clock seconds spent in each stage of :func:`run_scene`."""

    read: float = 0.0
    preprocess: float = 0.0
    infer: float = 0.0
    post: float = 0.0
    #: Pauses the power governor made between backend calls (part of ``total``).
    throttle: float = 0.0
    merge: float = 0.0
    write: float = 0.0
    total: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


#: Called after each tile row with (row index, tiles done, the running :class:`StageTimings`):
#: per-row stage samples for benchmarks (:mod:`sarvessel.runtime.bench`). The timings object is
#: live; copy what you keep.
RowHook = Callable[[int, int, StageTimings], None]


@dataclass
class SceneResult:
    """Detections of one scene (scene pixel coordinates) and how they were made."""

    scene_id: str
    detections: Detections
    height: int
    width: int
    tiles_total: int
    tiles_run: int
    tiles_skipped_nodata: int
    tiles_resumed: int
    timings: StageTimings
    #: Tiles with data the pre-screen skipped: no sea in reach (land), below the gate (dark).
    tiles_skipped_land: int = 0
    tiles_skipped_dark: int = 0
    #: Downsampled VV (uint8) for quicklooks, and the scene pixels per thumbnail pixel.
    thumbnail: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), np.uint8))
    thumbnail_scale: float = 1.0
    #: The energy report of the run (:class:`~sarvessel.runtime.power.EnergyReport`), set by
    #: :func:`~sarvessel.runtime.detect.detect_scene` when a governor measured it.
    power: Any = None

    @property
    def megapixels(self) -> float:
        return self.height * self.width / 1e6

    @property
    def mpx_per_s(self) -> float:
        """Scene megapixels per second of this run, counting only the share of tiles it ran
        (rows resumed from a journal cost no inference and would inflate the rate)."""
        if self.timings.total <= 0:
            return float("nan")
        share = 1.0 - self.tiles_resumed / self.tiles_total if self.tiles_total else 1.0
        return self.megapixels * share / self.timings.total if share > 0 else float("nan")


def run_scene(
    scene: Scene,
    detector: Detector | Backend,
    *,
    config: PipelineConfig = PipelineConfig(),
    journal: Path | None = None,
    progress: ProgressFn | None = None,
    pacer: Pacer | None = None,
    on_row: RowHook | None = None,
) -> SceneResult:
    """Run ``detector`` over every tile of ``scene`` and merge the detections once per scene.

    ``detector``: a :class:`~sarvessel.runtime.detector.Detector`, or a bare backend, which is
    composed with the post stage its output needs (:func:`~sarvessel.runtime.detector.compose`).

    ``journal``: a JSON-lines file recording finished tile rows; if it exists and belongs to the
    same scene, backend and tiling, those rows are not run again. The caller deletes it after the
    outputs are safely written. The default is no journal. ``pacer``: paces the backend calls
    (the power governor); the default is none.

    ``on_row``: called after each tile row (:data:`RowHook`); the default is none.
    """
    t_start = time.perf_counter()
    if not isinstance(detector, Detector):  # a bare backend: compose its post stage
        detector = compose(detector)
    scale = float(getattr(detector.metadata, "input_scale", 1.0))
    if scale != 1.0:
        raise SceneError(f"backend {detector.name} expects images resampled by {scale:g} "
                         "(its input_scale); the scene pipeline runs native pixels only")
    tile = int(detector.tile_size)
    ranges = _band_ranges(scene, detector.channels)
    row_starts = tile_starts(scene.height, tile, config.overlap)
    col_starts = tile_starts(scene.width, tile, config.overlap)
    n_total = len(row_starts) * len(col_starts)
    timings = StageTimings()
    # the land pre-screen is exact only while land detections are dropped
    screen = config.prescreen if config.mask_land else replace(config.prescreen, skip_land=False)
    counts = PrescreenCounts()
    jr = (_Journal(journal, _journal_key(scene, detector, tile, config, screen))
          if journal else None)
    done_rows = jr.load() if jr else {}

    f = max(1, -(-max(scene.height, scene.width) // config.thumbnail_max_side))
    rows = _RowSource(scene, row_starts, col_starts, tile, ranges, timings, done_rows,
                      batch_size=config.batch_size, thumb_step=f, screen=screen,
                      counts=counts)
    merge = _RowSink(scene, detector, config, timings, jr, n_total, len(col_starts), progress,
                     pacer, on_row=on_row)
    if config.concurrent:
        _run_concurrently(rows, detector, merge, timings, pacer)
    else:
        for row in rows:
            merge(_infer_row(detector, row, timings, pacer))
    n_skip, n_run, n_resumed = rows.skipped, merge.ran, merge.resumed
    if n_skip == n_total:
        raise SceneError(f"{scene.source}: scene holds no valid pixels (all nodata or NaN)")
    t0 = time.perf_counter()
    merged = merge.merger.finish()
    timings.merge += time.perf_counter() - t0
    timings.total = time.perf_counter() - t_start
    thumb = (np.concatenate(rows.thumb_rows, axis=0) if rows.thumb_rows
             else np.zeros((0, 0), np.uint8))
    return SceneResult(
        scene_id=scene.scene_id, detections=merged, height=scene.height, width=scene.width,
        tiles_total=n_total, tiles_run=n_run, tiles_skipped_nodata=n_skip,
        tiles_resumed=n_resumed, timings=timings, thumbnail=thumb, thumbnail_scale=float(f),
        tiles_skipped_land=counts.land, tiles_skipped_dark=counts.dark,
    )


# -- helpers ------------------------------------------------------------------------------


def _check_units(scene: Scene, u8: np.ndarray, valid: np.ndarray, r0: int,
                 ranges: tuple[BandRange, ...]) -> bool:
    """Refuse a scene whose first tile row with enough data does not look like dB
    (:func:`~sarvessel.runtime.preprocess.db_units_problem`); True once a verdict is made."""
    rows = min(u8.shape[1], scene.height - r0)
    v = valid[:rows, : scene.width]
    if np.count_nonzero(v) < UNITS_CHECK_MIN_SAMPLES:
        return False
    for c, band in enumerate(ranges):
        problem = db_units_problem(u8[c, :rows, : scene.width], v, band)
        if problem:
            raise SceneError(f"{scene.source}: rows {r0}-{r0 + rows}: {problem}")
    return True


def _band_ranges(scene: Scene, channels: int) -> tuple[BandRange, ...]:
    """uint8 ranges of the channels the backend takes: VV, VH, then bathymetry if asked."""
    base = DEFAULT_BANDS[: min(channels, len(scene.band_names))]
    if channels == len(base):
        return base
    if channels == len(DEFAULT_BANDS) + 1 and "bathymetry" in scene.aux_names:
        return (*DEFAULT_BANDS, BATHYMETRY)
    raise SceneError(
        f"{scene.source}: the model takes {channels} channels but the scene has "
        f"{len(scene.band_names)} bands ({', '.join(scene.band_names)})"
    )


def _row_bands(
    scene: Scene, row_starts: list[int], tile: int, ranges: tuple[BandRange, ...],
    timings: StageTimings,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (row0, uint8 [C, tile, W'], valid [tile, W']) per tile row, W' = max(W, tile).

    Each band is read and mapped to uint8 in its own thread, straight into one of two
    preallocated ping-pong buffers (no per-row allocation); rows shared with the previous tile
    row are copied from it, not read again. Rows or columns past the scene edge stay 0 / False.
    The arrays yielded are only valid until the next iteration.
    """
    n_img = min(len(ranges), len(scene.band_names))
    n_ch, width = len(ranges), max(scene.width, tile)
    u8_bufs = [np.zeros((n_ch, tile, width), np.uint8) for _ in range(2)]
    valid_bufs = [np.zeros((tile, width), bool) for _ in range(2)]
    band_valid = [np.zeros((tile, scene.width), bool) for _ in range(n_img)]  # per image band
    raw_bufs = [np.empty(tile * scene.width, np.float32) for _ in range(n_ch)]

    def load(c: int, u8: np.ndarray, k: int, a: int, b: int) -> float:
        """Read rows a:b of channel c into rows k: of the buffers; return the read seconds."""
        t0 = time.perf_counter()
        if c < n_img:
            raw = scene.read_band_rows(c, a, b, out=raw_bufs[c])
        else:
            raw = scene.read_aux_rows("bathymetry", a, b)
        t_read = time.perf_counter() - t0
        rows = slice(k, k + b - a)
        to_uint8(raw, ranges[c], out=u8[c, rows, : scene.width])
        if c < n_img:
            valid_mask(raw, out=band_valid[c][rows])
        return t_read

    prev_r0, prev_n = 0, 0
    with ThreadPoolExecutor(max_workers=2) as pool:  # one band per core; numpy frees the GIL
        for i, r0 in enumerate(row_starts):
            u8, valid = u8_bufs[i % 2], valid_bufs[i % 2]
            prev_u8, prev_valid = u8_bufs[(i + 1) % 2], valid_bufs[(i + 1) % 2]
            n = min(r0 + tile, scene.height) - r0
            t0 = time.perf_counter()
            k = max(0, prev_r0 + prev_n - r0) if i else 0  # rows already in the previous band
            if k:
                u8[:, :k] = prev_u8[:, r0 - prev_r0 : r0 - prev_r0 + k]
                valid[:k] = prev_valid[r0 - prev_r0 : r0 - prev_r0 + k]
            reads = list(pool.map(lambda c, u=u8, k=k, a=r0 + k, b=r0 + n:
                                  load(c, u, k, a, b), range(n_ch)))
            _combine_valid(scene, band_valid, valid, k, n, r0)
            if n < tile:  # scene lower than one tile: pad
                u8[:, n:] = 0
                valid[n:] = False
            elapsed = time.perf_counter() - t0
            # split the parallel wall time between the stages in proportion to the CPU time
            t_read = min(sum(reads) / n_ch, elapsed)
            timings.read += t_read
            timings.preprocess += elapsed - t_read
            prev_r0, prev_n = r0, n
            yield r0, u8, valid


def _combine_valid(scene: Scene, band_valid: list[np.ndarray], valid: np.ndarray, k: int,
                   n: int, r0: int) -> None:
    """A pixel holds data only where every image band does (rows ``k:n`` of the band).

    Why: nodata or NaN in VH alone would otherwise reach the model as real backscatter. A band
    with (almost) no data where the first band has plenty is a broken file, not a footprint
    edge, and is refused by name.
    """
    out = valid[k:n, : scene.width]
    if len(band_valid) == 1:
        np.copyto(out, band_valid[0][k:n])
        return
    np.logical_and(band_valid[0][k:n], band_valid[1][k:n], out=out)
    for c in range(2, len(band_valid)):
        np.logical_and(out, band_valid[c][k:n], out=out)
    # judged on a band of rows only: a few rows (the tail of the last tile row) missing in one
    # band are a ragged edge, masked as nodata, not a broken file
    if n - k < BAND_CHECK_MIN_ROWS:
        return
    n_both = int(np.count_nonzero(out))
    if n_both >= 0.01 * out.size:  # the usual row: the first band cannot have 100x more
        return
    n_first = int(np.count_nonzero(band_valid[0][k:n]))
    if n_first < UNITS_CHECK_MIN_SAMPLES or n_both >= 0.01 * n_first:
        return
    for c in range(1, len(band_valid)):  # rare: find the band that lacks the data
        if np.count_nonzero(band_valid[0][k:n] & band_valid[c][k:n]) < 0.01 * n_first:
            raise SceneError(
                f"{scene.source}: band {scene.band_names[c]} holds no data (nodata or NaN) in "
                f"rows {r0 + k}-{r0 + n}, where {scene.band_names[0]} has {n_first} valid "
                "pixels")


@dataclass
class _Row:
    """One tile row between the stages: its tiles batched for the backend (or its resumed
    detections), then the backend's raw outputs."""

    index: int
    r0: int
    #: Detections of a row resumed from the journal (nothing to run).
    resumed: Detections | None = None
    #: (tile columns, uint8 batch [B, C, T, T]) per backend call.
    batches: list[tuple[list[int], np.ndarray]] = field(default_factory=list)
    #: Valid-pixel mask of each tile run, by column.
    valid: dict[int, np.ndarray] = field(default_factory=dict)
    #: Raw backend output per batch (filled by the infer stage).
    raws: list[Any] = field(default_factory=list)


class _RowSource:
    """Read → preprocess → tile: yields each tile row's batches (copies: the row buffers are
    reused), checks the units, keeps the thumbnail, counts all-nodata tiles skipped."""

    def __init__(self, scene: Scene, row_starts: list[int], col_starts: list[int], tile: int,
                 ranges: tuple[BandRange, ...], timings: StageTimings,
                 done_rows: dict[int, Detections], *, batch_size: int, thumb_step: int,
                 screen: PrescreenConfig | None = None,
                 counts: PrescreenCounts | None = None) -> None:
        self.scene, self.tile = scene, tile
        self.row_starts, self.col_starts = row_starts, col_starts
        self.ranges, self.timings, self.done_rows = ranges, timings, done_rows
        self.batch_size, self.f = batch_size, thumb_step
        self.thumb_rows: list[np.ndarray] = []
        self.skipped = 0
        self.screen, self.counts = screen, counts

    def __iter__(self) -> Iterator[_Row]:
        scene, tile, f = self.scene, self.tile, self.f
        units_checked = False
        next_thumb_row = 0
        for i, (r0, u8, valid) in enumerate(
                _row_bands(scene, self.row_starts, tile, self.ranges, self.timings)):
            if not units_checked:
                units_checked = _check_units(scene, u8, valid, r0, self.ranges)
            rows_here = range(max(next_thumb_row, r0 + (-r0) % f), min(r0 + tile, scene.height),
                              f)
            if len(rows_here):
                self.thumb_rows.append(u8[0, [r - r0 for r in rows_here], : scene.width : f])
                next_thumb_row = rows_here[-1] + f
            if i in self.done_rows:
                yield _Row(i, r0, resumed=self.done_rows[i])
                continue
            t0 = time.perf_counter()
            todo = [c for c in self.col_starts if valid[:tile, c : c + tile].any()]
            self.skipped += len(self.col_starts) - len(todo)
            if self.screen is not None and self.screen.active and todo:
                keep = keep_tiles(scene, u8, valid, r0, todo, tile, self.screen, self.counts)
                todo = [c for c, k in zip(todo, keep, strict=True) if k]
            row = _Row(i, r0, valid={c: valid[:tile, c : c + tile].copy() for c in todo})
            for b in range(0, len(todo), self.batch_size):
                cols = todo[b : b + self.batch_size]
                row.batches.append((cols, np.stack([u8[:, :tile, c : c + tile] for c in cols])))
            self.timings.preprocess += time.perf_counter() - t0
            yield row


def _infer_row(detector: Detector, row: _Row, timings: StageTimings,
               pacer: Pacer | None) -> _Row:
    """Infer: the backend on each batch of the row, paced by ``pacer``."""
    for cols, batch in row.batches:
        t1 = time.perf_counter()
        if pacer:
            pacer.before_batch(len(cols))
            t_paced = time.perf_counter()
            timings.throttle += t_paced - t1
            t1 = t_paced
        row.raws.append(detector.infer(batch))
        if pacer:
            pacer.after_batch(len(cols))
        timings.infer += time.perf_counter() - t1
    return row


class _RowSink:
    """Post-process → shift → drop nodata and land → merge → journal, strictly in row order."""

    def __init__(self, scene: Scene, detector: Detector, config: PipelineConfig,
                 timings: StageTimings, journal: _Journal | None, n_total: int, per_row: int,
                 progress: ProgressFn | None, pacer: Pacer | None, *,
                 on_row: RowHook | None = None) -> None:
        self.scene, self.detector, self.config, self.timings = scene, detector, config, timings
        self.journal, self.n_total, self.per_row = journal, n_total, per_row
        self.progress, self.pacer, self.on_row = progress, pacer, on_row
        self.merger = SceneMerger(radius_px=config.nms_radius_px)
        self.ran = self.resumed = self.done = 0

    def __call__(self, row: _Row) -> None:
        if row.resumed is not None:
            self.merger.add(row.resumed, row0=row.r0)
            self.resumed += self.per_row
        else:
            found: list[Detections] = []
            for (cols, batch), raw in zip(row.batches, row.raws, strict=True):
                t2 = time.perf_counter()
                results = self.detector.post(raw, batch)
                t3 = time.perf_counter()
                if len(results) != len(cols):
                    raise RuntimeError(f"backend {self.detector.name} returned {len(results)} "
                                       f"results for {len(cols)} tiles")
                for c, dets in zip(cols, results, strict=True):
                    if len(dets):
                        found.append(dets.select(_on_valid(dets, row.valid[c])).shifted(row.r0, c))
                self.timings.post += t3 - t2
                self.timings.merge += time.perf_counter() - t3
            t0 = time.perf_counter()
            row_dets = Detections.concat(found)
            if self.config.mask_land:
                row_dets = _drop_on_land(self.scene, row_dets)
            self.merger.add(row_dets, row0=row.r0)
            if self.journal:
                self.journal.append(row.index, row_dets)
            self.timings.merge += time.perf_counter() - t0
            self.ran += sum(len(cols) for cols, _ in row.batches)
        self.done += self.per_row
        if self.pacer:
            self.pacer.mark_row(row.index)
        if self.progress:
            self.progress(self.done, self.n_total)
        if self.on_row:
            self.on_row(row.index, self.done, self.timings)


#: Seconds a stage waits on a full or empty queue before it looks whether another stage failed.
_POLL_S = 0.1


def _run_concurrently(rows: _RowSource, detector: Detector, sink: _RowSink,
                      timings: StageTimings, pacer: Pacer | None) -> None:
    """Read/preprocess (a thread), infer (this thread) and post/merge (a thread) on neighbouring
    rows, through queues of one row each: memory stays bounded by a few rows in flight, and
    rows merge in order.

    When reading or inferring fails, every row already inferred is still merged (and
    journaled) before the error is raised here, as in the sequential loop; when merging fails,
    everything stops at once.
    """
    to_infer: queue.Queue[_Row | BaseException | None] = queue.Queue(maxsize=1)
    to_merge: queue.Queue[_Row | None] = queue.Queue(maxsize=1)
    reader_stop = threading.Event()  # the consumer of the read queue is gone
    merge_failed = threading.Event()
    merge_errors: list[BaseException] = []

    def put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for row in rows:
                if not put(to_infer, row, reader_stop):
                    return
            put(to_infer, None, reader_stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the inferring thread
            put(to_infer, exc, reader_stop)

    def merge() -> None:
        try:
            while (row := to_merge.get()) is not None:
                sink(row)
        except BaseException as exc:  # noqa: BLE001 - handed to the inferring thread
            merge_errors.append(exc)
            merge_failed.set()

    reader = threading.Thread(target=read, name="sarvessel-read", daemon=True)
    merger = threading.Thread(target=merge, name="sarvessel-merge", daemon=True)
    reader.start()
    merger.start()
    failure: BaseException | None = None
    try:
        while not merge_failed.is_set():
            try:
                item = to_infer.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if item is None:
                break
            if isinstance(item, BaseException):
                failure = item
                break
            if item.resumed is None:
                item = _infer_row(detector, item, timings, pacer)
            if not put(to_merge, item, merge_failed):
                break
    except BaseException as exc:
        failure = exc
    finally:
        reader_stop.set()
        put(to_merge, None, merge_failed)  # the merge thread drains what was inferred, then ends
        merger.join()
        reader.join()
    if merge_errors:
        raise merge_errors[0]
    if failure is not None:
        raise failure


def _on_valid(dets: Detections, valid: np.ndarray) -> np.ndarray:
    r = np.clip(dets.rows.astype(np.intp), 0, valid.shape[0] - 1)
    c = np.clip(dets.cols.astype(np.intp), 0, valid.shape[1] - 1)
    return valid[r, c]


def _drop_on_land(scene: Scene, dets: Detections) -> Detections:
    if not len(dets):
        return dets
    return dets.select(~scene.on_land(dets.rows, dets.cols))


def _journal_key(scene: Scene, detector: Detector, tile: int, config: PipelineConfig,
                 screen: PrescreenConfig) -> dict:
    """What makes a finished row reusable: the same files (path, size, mtime), the same
    detector (its fingerprint: model bytes and thresholds) and the same tiling."""
    return {"scene_id": scene.scene_id, "height": scene.height, "width": scene.width,
            "files": scene.fingerprint(),
            "backend": detector.fingerprint, "tile": tile,
            "overlap": config.overlap, "mask_land": config.mask_land,
            "prescreen": asdict(screen)}


class _Journal:
    """Append-only JSON lines: a header, then one line per finished tile row."""

    def __init__(self, path: Path, key: dict) -> None:
        self.path = Path(path)
        self.key = key

    def load(self) -> dict[int, Detections]:
        """Finished rows of a previous run of the same job (empty if none or another job)."""
        if not self.path.is_file():
            self._write_header()
            return {}
        done: dict[int, Detections] = {}
        with self.path.open() as fh:
            lines = fh.read().splitlines()
        try:
            header = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError:
            header = None
        if header != {"journal": self.key}:
            log.warning("%s belongs to another job (other files, detector or tiling); "
                        "starting afresh", self.path)
            self._write_header()
            return {}
        good = [lines[0]]
        for line in lines[1:]:
            try:
                rec = json.loads(line)
                d = rec["dets"]
                done[int(rec["row"])] = Detections(d["rows"], d["cols"], d["scores"],
                                                   d["classes"], d["boxes"], d["lengths_px"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a record torn by a kill or power cut mid-write: run that row again
            good.append(line)
        if len(good) != len(lines):
            log.warning("%s: dropped %d damaged record(s); their rows run again", self.path,
                        len(lines) - len(good))
        self._rewrite(good)  # appends then start on a fresh line after the last good record
        log.info("resuming from %s: %d tile rows already done", self.path, len(done))
        return done

    def append(self, row: int, dets: Detections) -> None:
        rec = {"row": row, "dets": {k: getattr(dets, k).tolist() for k in
                                    ("rows", "cols", "scores", "classes", "boxes", "lengths_px")}}
        with self.path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _write_header(self) -> None:
        self._rewrite([json.dumps({"journal": self.key})])

    def _rewrite(self, lines: list[str]) -> None:
        """Replace the journal with ``lines`` atomically (a temporary file, then a rename)."""
        with atomic_open(self.path) as fh:
            fh.write("".join(line + "\n" for line in lines))
