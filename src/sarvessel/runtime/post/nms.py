"""Non-maximum suppression: centre-distance NMS, box NMS and an incremental scene merger.

Pure numpy/scipy, shared by every backend. Vessels are point-like (a 10 m pixel, ships of a few
pixels), so overlapping tiles are de-duplicated by centre distance (docs/references.md §7: drop a
detection if a higher-scoring one lies within ~10 px), once per scene; box NMS serves the YOLO
decoder.

Greedy point NMS decomposes over the connected components of the "within radius" graph: a
detection's fate only depends on detections it is linked to through a chain of neighbours. The
:class:`SceneMerger` uses that to finalise, while tiles stream in row by row, every component
that no later tile can reach, and so returns exactly what one global :func:`point_nms` returns
while holding only a band of rows in memory.

Ordering convention (all functions): results are sorted by decreasing score; equal scores keep
their input order (for the merger, the order in which they were added).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from sarvessel.runtime.detections import Detections

log = logging.getLogger(__name__)

__all__ = ["SceneMerger", "box_iou", "box_nms", "point_nms"]


def point_nms(dets: Detections, *, radius_px: float) -> Detections:
    """Greedy centre-distance NMS: keep the best, drop lower scores within ``radius_px`` of it.

    A detection is suppressed when a *kept* higher-scoring detection lies at Euclidean centre
    distance ``<= radius_px`` (pixels). Classes are ignored (one vessel gives one detection
    whatever class the tiles gave it). Uses a k-d tree, so 10^5 detections take well under a
    second. Returns the kept detections sorted by decreasing score (ties: input order).

    >>> d = Detections(rows=[0, 3, 20], cols=[0, 4, 0], scores=[0.5, 0.9, 0.7],
    ...                classes=[1, 1, 1], boxes=np.zeros((3, 4)), lengths_px=[1, 2, 3])
    >>> point_nms(d, radius_px=5).rows.tolist()
    [3.0, 20.0]
    """
    if radius_px < 0:
        raise ValueError(f"radius_px must be >= 0, got {radius_px}")
    keep = _point_nms_keep(dets.rows, dets.cols, dets.scores, np.arange(len(dets)), radius_px)
    return dets.select(keep)


def box_nms(dets: Detections, *, iou_threshold: float, class_aware: bool = False) -> Detections:
    """Greedy box NMS: drop a box whose IoU with a kept higher-scoring box exceeds the threshold.

    ``iou_threshold`` in [0, 1]; a box is dropped when IoU ``> iou_threshold``. With
    ``class_aware`` boxes of different classes never suppress each other. The default is
    class-agnostic (one object, one box). Returns the kept detections sorted by decreasing score
    (ties: input order).
    """
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    n = len(dets)
    if n == 0:
        return dets.select(np.zeros(0, np.int64))
    boxes = dets.boxes.astype(np.float64)
    if class_aware:
        # Shift each class to its own region of the plane so classes cannot overlap.
        span = float(np.abs(boxes).max()) * 2.0 + 1.0
        boxes = boxes + (dets.classes.astype(np.float64) * span)[:, None]
    order = _score_order(dets.scores, np.arange(n))
    top, left, bottom, right = (boxes[order, k] for k in range(4))
    area = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    alive = np.ones(n, bool)
    keep: list[int] = []
    for i in range(n):
        if not alive[i]:
            continue
        keep.append(i)
        rest = np.nonzero(alive[i + 1:])[0] + i + 1
        if len(rest) == 0:
            break
        ih = np.clip(np.minimum(bottom[i], bottom[rest]) - np.maximum(top[i], top[rest]), 0, None)
        iw = np.clip(np.minimum(right[i], right[rest]) - np.maximum(left[i], left[rest]), 0, None)
        inter = ih * iw
        union = area[i] + area[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        alive[rest[iou > iou_threshold]] = False
    return dets.select(order[np.asarray(keep, np.int64)])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``[N, M]`` of boxes ``a [N, 4]`` and ``b [M, 4]`` (top, left, bottom, right)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    ih, iw = np.clip(hi - lo, 0, None).transpose(2, 0, 1)
    inter = ih * iw
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


class SceneMerger:
    """Incremental point NMS over a scene whose tiles arrive row band by row band.

    Call :meth:`add` once per tile with its detections in *scene* coordinates and the tile's
    top row (``row0``, e.g. ``window.row0`` of :func:`~sarvessel.runtime.tiling.tile_grid`);
    then :meth:`finish`. Passing ``row0`` promises that every later call only adds detections
    whose centre row is ``>= row0 - radius_px`` (true for row-major tiles: later tiles start at
    the same or a lower band, and centres lie inside their tile, with ``radius_px`` of slack for
    decoders that put a centre just outside). Components of the within-radius graph that lie
    wholly more than ``2 * radius_px`` above ``row0`` can no longer change, so they are
    suppressed and moved out of the buffer; the buffer holds about one band of tile rows.

    The result equals ``point_nms(Detections.concat(all added), radius_px=radius_px)``, order
    included.
    """

    def __init__(self, *, radius_px: float) -> None:
        if radius_px < 0:
            raise ValueError(f"radius_px must be >= 0, got {radius_px}")
        self.radius_px = float(radius_px)
        self._pending: list[Detections] = []
        self._pending_seq: list[np.ndarray] = []
        self._buffer = Detections()
        self._buffer_seq = np.zeros(0, np.int64)
        self._done: list[Detections] = []
        self._done_seq: list[np.ndarray] = []
        self._next_seq = 0
        self._bound = -np.inf
        self._finished = False
        #: Largest number of detections held in the buffer at once (for tests and logs).
        self.peak_buffer = 0

    @property
    def buffered(self) -> int:
        """Number of detections not yet finalised."""
        return len(self._buffer) + sum(len(d) for d in self._pending)

    def add(self, dets: Detections, *, row0: float | None = None) -> None:
        """Add one tile's detections (scene coordinates); ``row0`` is the tile's top scene row.

        ``row0=None`` finalises nothing (everything waits for :meth:`finish`). ``row0`` must not
        decrease between calls. Raises ``ValueError`` if a detection lies above what an earlier
        ``row0`` promised, since an already finalised result could then be wrong.
        """
        if self._finished:
            raise RuntimeError("SceneMerger.add() after finish()")
        if len(dets):
            low = float(dets.rows.min())
            if low < self._bound - self.radius_px:
                raise ValueError(
                    f"detection at row {low:.1f} lies above the promised bound "
                    f"{self._bound - self.radius_px:.1f}: tiles must arrive in row-major order"
                )
            self._pending.append(dets)
            self._pending_seq.append(np.arange(self._next_seq, self._next_seq + len(dets)))
            self._next_seq += len(dets)
        if row0 is None:
            return
        if row0 < self._bound:
            raise ValueError(f"row0 went back from {self._bound} to {row0}: tiles out of order")
        if row0 > self._bound:
            self._bound = float(row0)
            self._flush(self._bound - 2.0 * self.radius_px)

    def finish(self) -> Detections:
        """Finalise everything left and return the merged detections of the scene."""
        if not self._finished:
            self._flush(np.inf)
            self._finished = True
        if not self._done:
            return Detections()
        out = Detections.concat(self._done)
        seq = np.concatenate(self._done_seq)
        return out.select(_score_order(out.scores, seq))

    def _flush(self, limit: float) -> None:
        """Finalise the components whose every member lies above row ``limit``."""
        if self._pending:
            self._buffer = Detections.concat([self._buffer, *self._pending])
            self._buffer_seq = np.concatenate([self._buffer_seq, *self._pending_seq])
            self._pending, self._pending_seq = [], []
        buf, seq = self._buffer, self._buffer_seq
        self.peak_buffer = max(self.peak_buffer, len(buf))
        if len(buf) == 0:
            return
        if np.isinf(limit):
            ready = np.ones(len(buf), bool)
        else:
            labels = _components(buf.rows, buf.cols, self.radius_px)
            comp_max = np.full(labels.max() + 1, -np.inf)
            np.maximum.at(comp_max, labels, buf.rows.astype(np.float64))
            ready = comp_max[labels] < limit
        if not ready.any():
            return
        idx = np.nonzero(ready)[0]
        keep = _point_nms_keep(buf.rows[idx], buf.cols[idx], buf.scores[idx], seq[idx],
                               self.radius_px)
        self._done.append(buf.select(idx[keep]))
        self._done_seq.append(seq[idx[keep]])
        rest = np.nonzero(~ready)[0]
        self._buffer, self._buffer_seq = buf.select(rest), seq[rest]
        log.debug("merger: finalised %d -> %d, %d buffered", len(idx), len(keep), len(rest))


def _score_order(scores: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """Indices by decreasing score, ties by increasing ``seq``."""
    return np.lexsort((seq, -scores.astype(np.float64)))


def _neighbour_pairs(rows: np.ndarray, cols: np.ndarray, radius_px: float) -> np.ndarray:
    """All index pairs ``[P, 2]`` (i < j) whose centres are within ``radius_px``."""
    pts = np.stack([rows, cols], axis=1).astype(np.float64)
    pairs = cKDTree(pts).query_pairs(radius_px, output_type="ndarray")
    return np.asarray(pairs, np.int64).reshape(-1, 2)


def _components(rows: np.ndarray, cols: np.ndarray, radius_px: float) -> np.ndarray:
    """Connected-component label of each point in the within-radius graph."""
    n = len(rows)
    pairs = _neighbour_pairs(rows, cols, radius_px)
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _point_nms_keep(
    rows: np.ndarray, cols: np.ndarray, scores: np.ndarray, seq: np.ndarray, radius_px: float
) -> np.ndarray:
    """Indices kept by greedy point NMS, sorted by decreasing score then increasing ``seq``."""
    n = len(rows)
    if n == 0:
        return np.zeros(0, np.int64)
    order = _score_order(scores, seq)
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    pairs = _neighbour_pairs(rows, cols, radius_px)
    if len(pairs) == 0:
        return order
    # Directed edges from the better-ranked to the worse-ranked detection, in rank space (CSR).
    a, b = rank[pairs[:, 0]], rank[pairs[:, 1]]
    src, dst = np.minimum(a, b), np.maximum(a, b)
    srt = np.argsort(src, kind="stable")
    src, dst = src[srt], dst[srt]
    start = np.searchsorted(src, np.arange(n + 1))
    suppressed = np.zeros(n, bool)
    # Only detections with worse neighbours can suppress anything: loop over those alone.
    for r in np.unique(src):
        if not suppressed[r]:
            suppressed[dst[start[r]:start[r + 1]]] = True
    return order[~suppressed]
