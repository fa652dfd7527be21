"""Point/box NMS against brute force, and the incremental merger against one global NMS."""

from __future__ import annotations

import time

import numpy as np
import pytest

from sarvessel.runtime.detections import Detections
from sarvessel.runtime.post.nms import SceneMerger, box_iou, box_nms, point_nms
from sarvessel.runtime.tiling import tile_grid


def _random_dets(rng: np.random.Generator, n: int, h: float, w: float, *, quant: bool = False
                 ) -> Detections:
    rows = rng.uniform(0, h, n)
    cols = rng.uniform(0, w, n)
    scores = rng.uniform(0, 1, n)
    if quant:  # many exact ties in score
        scores = np.round(scores * 4) / 4
    size = rng.uniform(4, 30, (n, 2))
    boxes = np.stack([rows - size[:, 0] / 2, cols - size[:, 1] / 2,
                      rows + size[:, 0] / 2, cols + size[:, 1] / 2], axis=1)
    return Detections(rows, cols, scores, rng.integers(0, 3, n), boxes, rng.uniform(1, 30, n))


def _brute_point_nms(d: Detections, radius: float) -> np.ndarray:
    order = sorted(range(len(d)), key=lambda i: (-float(d.scores[i]), i))
    kept: list[int] = []
    r = d.rows.astype(np.float64)
    c = d.cols.astype(np.float64)
    for i in order:
        if all((r[i] - r[k]) ** 2 + (c[i] - c[k]) ** 2 > radius**2 for k in kept):
            kept.append(i)
    return np.array(kept, np.int64)


def _brute_box_nms(d: Detections, thr: float, class_aware: bool) -> np.ndarray:
    order = sorted(range(len(d)), key=lambda i: (-float(d.scores[i]), i))
    iou = box_iou(d.boxes, d.boxes)
    kept: list[int] = []
    for i in order:
        if all(iou[i, k] <= thr or (class_aware and d.classes[i] != d.classes[k]) for k in kept):
            kept.append(i)
    return np.array(kept, np.int64)


def _same(a: Detections, b: Detections) -> None:
    for name in ("rows", "cols", "scores", "classes", "boxes", "lengths_px"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("quant", [False, True])
def test_point_nms_matches_brute_force(seed: int, quant: bool) -> None:
    rng = np.random.default_rng(seed)
    d = _random_dets(rng, 400, 200, 200, quant=quant)
    got = point_nms(d, radius_px=10.0)
    want = d.select(_brute_point_nms(d, 10.0))
    _same(got, want)
    assert 30 < len(got) < 400  # dense enough that suppression chains happen


def test_point_nms_radius_is_inclusive_and_empty_ok() -> None:
    d = Detections([0, 0, 0], [0, 10, 10.5], [0.9, 0.8, 0.7], [1, 1, 1], np.zeros((3, 4)),
                   [1, 1, 1])
    assert point_nms(d, radius_px=10).cols.tolist() == [0.0, 10.5]
    assert len(point_nms(Detections(), radius_px=10)) == 0
    with pytest.raises(ValueError):
        point_nms(d, radius_px=-1)


def test_point_nms_scales_to_1e5() -> None:
    rng = np.random.default_rng(3)
    d = _random_dets(rng, 100_000, 20_000, 20_000)
    t0 = time.perf_counter()
    out = point_nms(d, radius_px=10.0)
    elapsed = time.perf_counter() - t0
    # Expected pairs: N^2 * pi r^2 / (2 A) ~ 39k, so a few percent are suppressed.
    assert 0.9 * len(d) < len(out) < len(d)
    assert elapsed < 5.0, elapsed


@pytest.mark.parametrize("class_aware", [False, True])
@pytest.mark.parametrize("thr", [0.3, 0.5])
def test_box_nms_matches_brute_force(class_aware: bool, thr: float) -> None:
    rng = np.random.default_rng(4)
    d = _random_dets(rng, 300, 150, 150, quant=True)
    got = box_nms(d, iou_threshold=thr, class_aware=class_aware)
    want = d.select(_brute_box_nms(d, thr, class_aware))
    _same(got, want)
    assert 10 < len(got) < 300


def test_box_nms_known_case() -> None:
    boxes = [[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]]
    d = Detections([5, 6, 5, 55], [5, 6, 5, 55], [0.9, 0.8, 0.7, 0.6], [1, 1, 2, 1], boxes,
                   [0, 0, 0, 0])
    # IoU(0,1) = 81 / 119 = 0.68.
    assert box_nms(d, iou_threshold=0.5).rows.tolist() == [5, 55]
    assert box_nms(d, iou_threshold=0.7).rows.tolist() == [5, 6, 55]
    aware = box_nms(d, iou_threshold=0.5, class_aware=True)
    assert aware.classes.tolist() == [1, 2, 1]
    np.testing.assert_allclose(box_iou(boxes[:1], boxes[1:2]), [[81 / 119]])
    assert len(box_nms(Detections(), iou_threshold=0.5)) == 0


def _tile_stream(rng: np.random.Generator, h: int, w: int, tile: int, overlap: int, per_tile: int):
    """Row-major tiles with random detections in scene coordinates, duplicated in overlaps."""
    for window_row in tile_grid(h, w, tile=tile, overlap=overlap):
        for win in window_row:
            d = _random_dets(rng, per_tile, win.height, win.width, quant=True)
            yield win, d.shifted(win.row0, win.col0)


@pytest.mark.parametrize("seed", [0, 1])
def test_scene_merger_equals_global_nms(seed: int) -> None:
    rng = np.random.default_rng(seed)
    merger = SceneMerger(radius_px=10.0)
    added = []
    for win, d in _tile_stream(rng, 2000, 600, 128, 32, 40):
        merger.add(d, row0=win.row0)
        added.append(d)
    got = merger.finish()
    everything = Detections.concat(added)
    _same(got, point_nms(everything, radius_px=10.0))
    # Bounded: the buffer never held more than a few tile rows of the ~1200 added.
    per_row = 5 * 40
    assert merger.peak_buffer <= 3 * per_row, merger.peak_buffer
    assert len(everything) > 15 * per_row
    assert merger.buffered == 0


def test_scene_merger_without_row0_and_with_chains() -> None:
    # A vertical chain of detections 8 px apart with falling scores spans many tile rows: the
    # merger must keep the whole component until it is closed.
    rows = np.arange(0, 800, 8.0)
    scores = np.linspace(1.0, 0.1, len(rows))
    chain = Detections(rows, np.zeros_like(rows), scores, np.ones(len(rows)),
                       np.zeros((len(rows), 4)), np.ones(len(rows)))
    merger = SceneMerger(radius_px=10.0)
    for r0 in range(0, 800, 100):
        part = chain.select((chain.rows >= r0) & (chain.rows < r0 + 100))
        merger.add(part, row0=r0)
    got = merger.finish()
    _same(got, point_nms(chain, radius_px=10.0))
    assert got.rows.tolist() == rows[::2].tolist()  # alternate ones survive

    lazy = SceneMerger(radius_px=10.0)
    lazy.add(chain)
    _same(lazy.finish(), point_nms(chain, radius_px=10.0))


def test_scene_merger_rejects_out_of_order() -> None:
    merger = SceneMerger(radius_px=10.0)
    d = Detections([500.0], [0.0], [0.5], [1], np.zeros((1, 4)), [1.0])
    merger.add(d, row0=500)
    with pytest.raises(ValueError, match="row-major"):
        merger.add(Detections([100.0], [0.0], [0.5], [1], np.zeros((1, 4)), [1.0]), row0=500)
    with pytest.raises(ValueError, match="went back"):
        merger.add(Detections(), row0=400)
    assert len(merger.finish()) == 1
    with pytest.raises(RuntimeError):
        merger.add(d)
