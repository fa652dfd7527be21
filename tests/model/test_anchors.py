"""Anchor maths: grid layout, dist2bbox / bbox2dist round trip, DFL decoding."""

from __future__ import annotations

import torch

from sarvessel.model.anchors import bbox2dist, dfl_decode, dist2bbox, make_anchors


def test_make_anchors_row_major_centres() -> None:
    a = make_anchors(3, 4, 8)
    assert a.shape == (12, 2)
    assert a[0].tolist() == [0.5, 0.5]
    assert a[5].tolist() == [1.5, 1.5]  # row 1, col 1
    assert a[-1].tolist() == [3.5, 2.5]


def test_dist2bbox_bbox2dist_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    anchors = make_anchors(4, 4, 8)
    dist = torch.rand(2, 16, 4, generator=g) * 10
    boxes = dist2bbox(dist, anchors)
    assert torch.allclose(bbox2dist(anchors, boxes, 15), dist, atol=1e-5)
    xywh = dist2bbox(dist, anchors, xywh=True)
    assert torch.allclose(xywh[..., 2:], boxes[..., 2:] - boxes[..., :2], atol=1e-5)


def test_bbox2dist_clamps_to_reg_max() -> None:
    anchors = torch.tensor([[5.0, 5.0]])
    d = bbox2dist(anchors, torch.tensor([[-100.0, 4.0, 6.0, 105.0]]), 15)
    assert torch.allclose(d, torch.tensor([[14.99, 1.0, 1.0, 14.99]]))


def test_dfl_decode_expectation() -> None:
    logits = torch.full((1, 1, 4 * 16), -1e4)
    for side, bin_ in enumerate((0, 3, 7, 15)):
        logits[0, 0, side * 16 + bin_] = 0.0
    assert dfl_decode(logits, 16).tolist() == [[[0.0, 3.0, 7.0, 15.0]]]
