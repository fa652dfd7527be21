"""Tests of sarvessel.runtime.post.decode: hand-built raw maps with known boxes, and a brute-force
reference decode (sigmoid and DFL softmax on every cell) for random maps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sarvessel.runtime.errors import ModelError
from sarvessel.runtime.post.decode import decode, dfl_expectation, unpack_subgrid

STRIDE = 8
REG_MAX = 16


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _empty_raw(b: int = 1, nc: int = 1, h: int = 8, w: int = 8) -> np.ndarray:
    """A raw map where every class logit is very negative (no detections)."""
    raw = np.zeros((b, 4 * REG_MAX + nc, h, w), np.float32)
    raw[:, 4 * REG_MAX:] = -20.0
    return raw


def _put(raw: np.ndarray, b: int, y: int, x: int, ltrb: tuple[int, int, int, int],
         cls_logits: list[float]) -> None:
    """Write a cell whose DFL logits peak sharply at the bins ``ltrb`` (units of stride)."""
    for side, d in enumerate(ltrb):
        logits = np.full(REG_MAX, -40.0, np.float32)
        logits[d] = 40.0
        raw[b, side * REG_MAX:(side + 1) * REG_MAX, y, x] = logits
    raw[b, 4 * REG_MAX:, y, x] = cls_logits


def test_single_cell_box_and_fields() -> None:
    raw = _empty_raw()
    _put(raw, 0, 3, 5, (2, 1, 3, 5), [2.0])
    (dets,) = decode(raw, stride=STRIDE, reg_max=REG_MAX, conf_threshold=0.5,
                     iou_threshold=0.5)
    assert len(dets) == 1
    # anchor x = 5.5*8 = 44, y = 3.5*8 = 28; left 44-16, top 28-8, right 44+24, bottom 28+40
    np.testing.assert_allclose(dets.boxes[0], [20.0, 28.0, 68.0, 68.0], atol=1e-4)
    assert dets.rows[0] == pytest.approx(44.0)
    assert dets.cols[0] == pytest.approx(48.0)
    assert dets.lengths_px[0] == pytest.approx(48.0)  # max(h=48, w=40)
    assert dets.scores[0] == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-6)
    assert dets.classes[0] == 0


def test_threshold_is_strict_and_on_logits() -> None:
    raw = _empty_raw()
    t = _logit(0.3)
    _put(raw, 0, 1, 1, (1, 1, 1, 1), [t - 1e-3])
    _put(raw, 0, 6, 6, (1, 1, 1, 1), [t + 1e-3])
    (dets,) = decode(raw, stride=STRIDE, reg_max=REG_MAX, conf_threshold=0.3,
                     iou_threshold=0.5)
    assert len(dets) == 1
    assert dets.rows[0] == pytest.approx(6.5 * STRIDE)
    assert dets.scores[0] > 0.3


def test_class_argmax_with_three_classes() -> None:
    raw = _empty_raw(nc=3)
    _put(raw, 0, 0, 0, (1, 1, 1, 1), [-5.0, 3.0, 1.0])
    _put(raw, 0, 7, 7, (1, 1, 1, 1), [-5.0, 1.0, 4.0])
    (dets,) = decode(raw, stride=STRIDE, reg_max=REG_MAX, conf_threshold=0.5,
                     iou_threshold=0.5)
    assert dets.classes.tolist() == [2, 1]  # sorted by score: sigmoid(4) > sigmoid(3)
    np.testing.assert_allclose(dets.scores, 1 / (1 + np.exp(-np.array([4.0, 3.0]))), rtol=1e-6)


def test_nms_keeps_best_of_overlapping_cells_and_max_det() -> None:
    raw = _empty_raw()
    # two neighbouring cells predicting the same box (x shifted by one cell, distances adjusted)
    _put(raw, 0, 4, 4, (3, 3, 3, 3), [1.0])
    _put(raw, 0, 4, 5, (4, 3, 2, 3), [2.0])
    _put(raw, 0, 0, 0, (0, 0, 1, 1), [0.5])  # far away, kept
    (dets,) = decode(raw, stride=STRIDE, reg_max=REG_MAX, conf_threshold=0.5,
                     iou_threshold=0.5)
    assert len(dets) == 2
    assert dets.scores[0] == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-6)
    (top1,) = decode(raw, stride=STRIDE, reg_max=REG_MAX, conf_threshold=0.5,
                     iou_threshold=0.5, max_det=1)
    assert len(top1) == 1 and top1.scores[0] == dets.scores[0]


def test_batch_tiles_are_independent_and_empty_tile_is_empty() -> None:
    raw = _empty_raw(b=3)
    _put(raw, 1, 2, 2, (1, 1, 1, 1), [1.0])
    res = decode(raw, stride=STRIDE, reg_max=REG_MAX, conf_threshold=0.5, iou_threshold=0.5)
    assert [len(d) for d in res] == [0, 1, 0]
    assert res[0].boxes.shape == (0, 4)


def _reference_decode(raw: np.ndarray, conf: float) -> np.ndarray:
    """Brute force (sigmoid, softmax on every cell): rows [score, cls, top, left, bottom, right]."""
    nbox = 4 * REG_MAX
    _, h, w = raw.shape
    scores = 1 / (1 + np.exp(-raw[nbox:].astype(np.float64)))  # [nc, H, W]
    p = np.exp(raw[:nbox].reshape(4, REG_MAX, h, w).astype(np.float64))
    p /= p.sum(axis=1, keepdims=True)
    dist = (p * np.arange(REG_MAX)[None, :, None, None]).sum(axis=1) * STRIDE  # [4, H, W]
    ys, xs = np.mgrid[0:h, 0:w]
    ax, ay = (xs + 0.5) * STRIDE, (ys + 0.5) * STRIDE
    rows = []
    for y in range(h):
        for x in range(w):
            s = scores[:, y, x]
            if s.max() > conf:
                d = dist[:, y, x]
                rows.append([s.max(), s.argmax(), ay[y, x] - d[1], ax[y, x] - d[0],
                             ay[y, x] + d[3], ax[y, x] + d[2]])
    a = np.array(rows).reshape(-1, 6)
    return a[np.argsort(-a[:, 0], kind="stable")]


def test_matches_brute_force_reference_without_suppression() -> None:
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 2, (2, 4 * REG_MAX + 2, 16, 16)).astype(np.float32)
    raw[:, 4 * REG_MAX:] -= 3.0  # a few percent of cells pass
    res = decode(raw, stride=STRIDE, reg_max=REG_MAX, conf_threshold=0.25, iou_threshold=1.0,
                 max_det=10_000)
    for b in range(2):
        ref = _reference_decode(raw[b], 0.25)
        assert 5 < len(ref) < 200
        got = res[b]
        assert len(got) == len(ref)
        np.testing.assert_allclose(got.scores, ref[:, 0], rtol=1e-5)
        assert got.classes.tolist() == ref[:, 1].astype(int).tolist()
        np.testing.assert_allclose(got.boxes, ref[:, 2:], atol=1e-3)


def test_dfl_expectation_uniform_and_peaked() -> None:
    np.testing.assert_allclose(dfl_expectation(np.zeros((2, 4, 16))), 7.5)
    logits = np.full((16,), -30.0)
    logits[9] = 30.0
    assert float(dfl_expectation(logits)) == pytest.approx(9.0, abs=1e-5)


@pytest.mark.parametrize("shape", [(1, 4 * REG_MAX, 4, 4), (1, 10, 4, 4), (4 * REG_MAX + 1, 4)])
def test_bad_shapes_raise_model_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(ModelError, match="raw output"):
        decode(np.zeros(shape, np.float32), stride=STRIDE, reg_max=REG_MAX,
               conf_threshold=0.5, iou_threshold=0.5)


def test_bad_threshold_raises() -> None:
    with pytest.raises(ValueError, match="conf_threshold"):
        decode(_empty_raw(), stride=STRIDE, reg_max=REG_MAX, conf_threshold=1.0,
               iou_threshold=0.5)


def test_unpack_subgrid_is_pixel_shuffle_order() -> None:
    """Packed channel ``c*r*r + i*r + j`` of cell (y, x) lands at (r*y + i, r*x + j) of channel c
    (``torch.nn.functional.pixel_shuffle``, which the training loss uses)."""
    rng = np.random.default_rng(0)
    packed = rng.normal(size=(2, 3 * 4, 5, 6)).astype(np.float32)
    grid = unpack_subgrid(packed, 2)
    assert grid.shape == (2, 3, 10, 12)
    for c, i, j, y, x in [(0, 0, 0, 0, 0), (2, 1, 0, 4, 5), (1, 0, 1, 3, 2), (2, 1, 1, 1, 1)]:
        assert grid[1, c, 2 * y + i, 2 * x + j] == packed[1, c * 4 + i * 2 + j, y, x]
    assert unpack_subgrid(packed, 1) is packed
    with pytest.raises(ModelError, match="subgrid"):
        unpack_subgrid(packed[:, :10], 2)


def test_subgrid_anchors_sit_at_sub_cell_centres_with_stride_distances() -> None:
    """Two ships 4 px apart inside one stride-8 cell: a one-anchor head can report only one of
    them there, a subgrid-2 head reports both, each from its own anchor at (x + 0.5) * 4 px,
    with box distances still in units of the stride (8 px)."""
    raw = _empty_raw(h=16, w=16)  # the anchor grid of an 8 x 8-cell map
    _put(raw, 0, 6, 6, (0, 1, 0, 1), [3.0])  # anchor (26, 26): x 26..26, y 18..34
    _put(raw, 0, 6, 7, (0, 1, 0, 1), [2.0])  # anchor (30, 26), 4 px to the right
    dets = decode(raw, stride=STRIDE, reg_max=REG_MAX, conf_threshold=0.5, iou_threshold=0.5,
                  subgrid=2)[0]
    assert len(dets) == 2
    np.testing.assert_allclose(dets.cols, [26.0, 30.0], atol=1e-4)
    np.testing.assert_allclose(dets.boxes[:, [0, 2]], [[18.0, 34.0]] * 2, atol=1e-4)
    with pytest.raises(ValueError, match="subgrid"):
        decode(raw, stride=STRIDE, reg_max=REG_MAX, conf_threshold=0.5, iou_threshold=0.5,
               subgrid=0)
