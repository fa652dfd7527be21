"""The scene pipeline: read → tile → preprocess → infer → post-process → merge, a tile row at a
time.

Memory is bounded by one band of rows (tile height × scene width × bands), whatever the scene
size. Rows shared by two overlapping tile rows are read and preprocessed once. Each finished tile
row is appended to an optional journal (JSON lines, flushed and fsynced), so a run that dies —
power, input or process — resumes where it stopped and loses no detection already made.
Per-stage timings are returned for benchmarks.

Before any tile runs and before the journal is written, a sampled pre-scan
(:func:`prescan_scene`) judges the units (dB) and finds valid pixels; a scene without any
is refused after one read pass, so refusals leave nothing behind.
"""

from __future__ import annotations

import logging
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
from sarvessel.runtime.errors import ModelError, SceneError
from sarvessel.runtime.io.scene import Scene
from sarvessel.runtime.journal import JobLock, Journal, lock_path
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
#: The pre-scan reads a grid of this many windows down and across the scene ...
PRESCAN_GRID = 6
#: ... each this many pixels square (fewer on a smaller scene): 36 windows of 64² px give
#: 147,456 samples for the units check, read from at most 36 tiles of a tiled file.
PRESCAN_WINDOW = 64
#: Rows per read when the pre-scan has found no valid pixel and looks at every row.
VALIDITY_SCAN_ROWS = 512


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
    #: Detections a backend placed outside their tile (dropped; a healthy backend makes none).
    detections_outside_tile: int = 0

    @property
    def megapixels(self) -> float:
        return self.height * self.width / 1e6

    @property
    def mpx_per_s(self) -> float | None:
        """Scene megapixels per second of this run, counting only the share of tiles it ran
        (rows resumed from a journal cost no inference and would inflate the rate); None when
        this run measured nothing (every row resumed), never NaN."""
        if self.timings.total <= 0:
            return None
        share = 1.0 - self.tiles_resumed / self.tiles_total if self.tiles_total else 1.0
        return self.megapixels * share / self.timings.total if share > 0 else None


def run_scene(
    scene: Scene,
    detector: Detector | Backend,
    *,
    config: PipelineConfig = PipelineConfig(),
    journal: Path | Journal | None = None,
    progress: ProgressFn | None = None,
    pacer: Pacer | None = None,
    on_row: RowHook | None = None,
) -> SceneResult:
    """Run ``detector`` over every tile of ``scene`` and merge the detections once per scene.

    ``detector``: a :class:`~sarvessel.runtime.detector.Detector`, or a bare backend, which is
    composed with the post stage its output needs (:func:`~sarvessel.runtime.detector.compose`).

    ``journal``: finished tile rows; if it holds rows of the same job (scene files, detector and
    tiling: :func:`journal_key`), they are not run again. A path: the journal file, whose lock
    (:func:`~sarvessel.runtime.journal.lock_path`) this call holds while it runs. A
    :class:`~sarvessel.runtime.journal.Journal` built with :func:`journal_key`: the caller
    holds its lock (as :func:`~sarvessel.runtime.detect.detect_scene` does, until its outputs
    are written). Nothing is written to it before the scene passed its checks. The caller
    deletes it after the outputs are safely written. The default is no journal. ``pacer``:
    paces the backend calls (the power governor); the default is none.

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
    screen = _effective_screen(config)
    counts = PrescreenCounts()
    key = journal_key(scene, detector, config)
    lock: JobLock | None = None
    jr: Journal | None = None
    if isinstance(journal, Journal):
        if journal.key != key:
            raise ValueError("journal was built for another job (use journal_key)")
        jr = journal
    elif journal is not None:
        jr = Journal(Path(journal), key)
        lock = JobLock(lock_path(jr.path), job=jr.job).acquire()
    try:
        t0 = time.perf_counter()
        scan = prescan_scene(scene, ranges)  # refuses bad units before any tile or journal
        timings.read += time.perf_counter() - t0
        done_rows = jr.load() if jr else {}
        f = max(1, -(-max(scene.height, scene.width) // config.thumbnail_max_side))
        rows = _RowSource(scene, row_starts, col_starts, tile, ranges, timings, done_rows,
                          batch_size=config.batch_size, thumb_step=f, screen=screen,
                          counts=counts, units_checked=scan.units_checked)
        merge = _RowSink(scene, detector, config, timings, jr, n_total, len(col_starts),
                         progress, pacer, on_row=on_row, passed=lambda: rows.units_checked)
        if config.concurrent:
            _run_concurrently(rows, detector, merge, timings, pacer)
        else:
            for row in rows:
                merge(_infer_row(detector, row, timings, pacer))
        n_skip, n_run, n_resumed = rows.skipped, merge.ran, merge.resumed
        if n_skip == n_total:
            raise SceneError(f"{scene.source}: scene holds no valid pixels (all nodata or NaN)")
        merge.flush()  # rows held back until the scene passed its checks
    finally:
        if jr is not None and jr is not journal:
            jr.close()
        if lock is not None:
            lock.release()
    if merge.outside:
        log.warning("%s: backend %s placed %d detection(s) outside their tile; dropped",
                    scene.scene_id, detector.name, merge.outside)
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
        detections_outside_tile=merge.outside,
    )


def journal_key(scene: Scene, detector: Detector, config: PipelineConfig) -> dict:
    """What makes a finished row reusable: the same files (path, size, mtime), the same
    detector (its fingerprint: model bytes and thresholds), the same tiling and pre-screen."""
    return {"scene_id": scene.scene_id, "height": scene.height, "width": scene.width,
            "files": scene.fingerprint(),
            "backend": detector.fingerprint, "tile": int(detector.tile_size),
            "overlap": config.overlap, "mask_land": config.mask_land,
            "prescreen": asdict(_effective_screen(config))}


def _effective_screen(config: PipelineConfig) -> PrescreenConfig:
    """The pre-screen a run applies: the land screen is exact only while land detections are
    dropped, so it is off without ``mask_land``."""
    return (config.prescreen if config.mask_land
            else replace(config.prescreen, skip_land=False))


@dataclass(frozen=True)
class Prescan:
    """What the pre-scan saw: valid samples, and whether it settled the units question."""

    valid_samples: int
    units_checked: bool


def prescan_scene(scene: Scene, ranges: tuple[BandRange, ...]) -> Prescan:
    """Check a scene before any tile runs: units (dB) and the bands' data on a sampled grid of
    windows, and that it holds a valid pixel at all.

    Why: a refusal must come before the journal exists and before tiles run, not rows later.
    The grid (:data:`PRESCAN_GRID` ² windows of :data:`PRESCAN_WINDOW` px) costs a few tiles
    of reading. Sampling cannot prove a scene empty, so when no window holds data every row
    is read (band by band, stopping at the first valid pixel) before the scene is refused:
    one read pass, no tile run, nothing written. Raises :class:`SceneError`.
    """
    n_img = min(len(ranges), len(scene.band_names))
    win_h, win_w = min(PRESCAN_WINDOW, scene.height), min(PRESCAN_WINDOW, scene.width)
    rows = np.unique(np.linspace(0, scene.height - win_h, PRESCAN_GRID).astype(int))
    cols = np.unique(np.linspace(0, scene.width - win_w, PRESCAN_GRID).astype(int))
    samples: list[list[np.ndarray]] = [[] for _ in range(n_img)]
    n_first = 0  # valid samples of the first band, and of it with each other band
    n_with = np.zeros(n_img, np.int64)
    for r0 in rows.tolist():
        for c0 in cols.tolist():
            raw = [scene.read_band_window(c, r0, r0 + win_h, c0, c0 + win_w)
                   for c in range(n_img)]
            band_valid = [valid_mask(b) for b in raw]
            n_first += int(np.count_nonzero(band_valid[0]))
            for c in range(n_img):
                n_with[c] += int(np.count_nonzero(band_valid[0] & band_valid[c]))
            valid = np.logical_and.reduce(band_valid)
            for c in range(n_img):
                samples[c].append(to_uint8(raw[c], ranges[c])[valid])
    n_valid = sum(len(a) for a in samples[0])
    where = f"{len(rows) * len(cols)} windows sampled over the scene"
    if n_first >= UNITS_CHECK_MIN_SAMPLES:  # as _combine_valid: a band without data is broken
        for c in range(1, n_img):
            if n_with[c] < 0.01 * n_first:
                raise SceneError(
                    f"{scene.source}: band {scene.band_names[c]} holds no data (nodata or NaN) "
                    f"in {where}, where {scene.band_names[0]} has {n_first} valid pixels")
    if n_valid >= UNITS_CHECK_MIN_SAMPLES:
        for c in range(n_img):
            u8 = np.concatenate(samples[c])
            problem = db_units_problem(u8, np.ones(u8.shape, bool), ranges[c])
            if problem:
                raise SceneError(f"{scene.source}: {where}: {problem}")
        return Prescan(valid_samples=n_valid, units_checked=True)
    if n_valid == 0 and not _any_valid_pixel(scene, n_img):
        raise SceneError(f"{scene.source}: scene holds no valid pixels (all nodata or NaN)")
    return Prescan(valid_samples=n_valid, units_checked=False)


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
                 counts: PrescreenCounts | None = None, units_checked: bool = False) -> None:
        self.scene, self.tile = scene, tile
        self.row_starts, self.col_starts = row_starts, col_starts
        self.ranges, self.timings, self.done_rows = ranges, timings, done_rows
        self.batch_size, self.f = batch_size, thumb_step
        self.thumb_rows: list[np.ndarray] = []
        self.skipped = 0
        self.screen, self.counts = screen, counts
        #: The units were judged fine (by the pre-scan, or on a row with enough data).
        self.units_checked = units_checked

    def __iter__(self) -> Iterator[_Row]:
        scene, tile, f = self.scene, self.tile, self.f
        next_thumb_row = 0
        for i, (r0, u8, valid) in enumerate(
                _row_bands(scene, self.row_starts, tile, self.ranges, self.timings)):
            if not self.units_checked:
                self.units_checked = _check_units(scene, u8, valid, r0, self.ranges)
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
                 timings: StageTimings, journal: Journal | None, n_total: int, per_row: int,
                 progress: ProgressFn | None, pacer: Pacer | None, *,
                 on_row: RowHook | None = None,
                 passed: Callable[[], bool] = lambda: True) -> None:
        self.scene, self.detector, self.config, self.timings = scene, detector, config, timings
        self.journal, self.n_total, self.per_row = journal, n_total, per_row
        self.progress, self.pacer, self.on_row = progress, pacer, on_row
        self.merger = SceneMerger(radius_px=config.nms_radius_px)
        self.ran = self.resumed = self.done = self.outside = 0
        #: Whether the scene passed its units check: rows are journaled only then, and wait in
        #: ``pending`` until it did, so a refused scene leaves no journal.
        self.passed = passed
        self.pending: list[tuple[int, Detections]] = []

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
                    raise ModelError(f"backend {self.detector.name} returned {len(results)} "
                                     f"results for {len(cols)} tiles")
                for c, dets in zip(cols, results, strict=True):
                    if len(dets):
                        inside, on_valid = _inside_on_valid(dets, row.valid[c])
                        self.outside += int(np.count_nonzero(~inside))
                        found.append(dets.select(on_valid).shifted(row.r0, c))
                self.timings.post += t3 - t2
                self.timings.merge += time.perf_counter() - t3
            t0 = time.perf_counter()
            row_dets = Detections.concat(found)
            if self.config.mask_land:
                row_dets = _drop_on_land(self.scene, row_dets)
            self.merger.add(row_dets, row0=row.r0)
            self.ran += sum(len(cols) for cols, _ in row.batches)
            if self.journal:
                self.pending.append((row.index, row_dets))
                if self.ran and self.passed():
                    self.flush()
            self.timings.merge += time.perf_counter() - t0
        self.done += self.per_row
        if self.pacer:
            self.pacer.mark_row(row.index)
        if self.progress:
            self.progress(self.done, self.n_total)
        if self.on_row:
            self.on_row(row.index, self.done, self.timings)

    def flush(self) -> None:
        """Journal the rows held back (the scene passed its checks, or had too little data for
        them ever to refuse it)."""
        if self.journal:
            for index, dets in self.pending:
                self.journal.append(index, dets)
        self.pending.clear()


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


def _inside_on_valid(dets: Detections, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of detections whose centre lies inside the tile, and inside on valid pixels.

    Why not clip: a centre outside the tile is a broken backend or decode (a head map larger
    than the contract), and clipping moved such detections onto the tile's edge.
    """
    h, w = valid.shape
    rows, cols = dets.rows, dets.cols
    with np.errstate(invalid="ignore"):
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)  # NaN: outside
    on_valid = inside.copy()
    on_valid[inside] = valid[rows[inside].astype(np.intp), cols[inside].astype(np.intp)]
    return inside, on_valid


def _any_valid_pixel(scene: Scene, n_img: int) -> bool:
    """Whether any pixel holds data in every image band (read :data:`VALIDITY_SCAN_ROWS` rows
    at a time, stopping at the first)."""
    for r0 in range(0, scene.height, VALIDITY_SCAN_ROWS):
        r1 = min(r0 + VALIDITY_SCAN_ROWS, scene.height)
        valid = valid_mask(scene.read_band_rows(0, r0, r1))
        for c in range(1, n_img):
            if not valid.any():
                break
            valid &= valid_mask(scene.read_band_rows(c, r0, r1))
        if valid.any():
            return True
    return False


def _drop_on_land(scene: Scene, dets: Detections) -> Detections:
    if not len(dets):
        return dets
    return dets.select(~scene.on_land(dets.rows, dets.cols))
