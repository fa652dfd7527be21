"""Quick AP50, NMS and raw-output decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sarvessel.model.boxes import bbox_iou, decode_raw, nms
from sarvessel.model.evaluate import average_precision


def test_ap_hand_cases() -> None:
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)]
    perfect = [(gt[0], np.array([0.9, 0.8]))]
    assert average_precision(perfect, gt) == 1.0
    # one hit, one false positive ranked first: precision 0.5 at recall 0.5
    dets = [(np.array([[50, 50, 60, 60], [0, 0, 10, 10]], np.float32), np.array([0.9, 0.8]))]
    assert average_precision(dets, gt) == pytest.approx(0.25)
    # a duplicate detection of one box counts once
    dup = [(np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32), np.array([0.9, 0.8]))]
    assert average_precision(dup, gt) == pytest.approx(0.5)
    assert average_precision([(np.zeros((0, 4)), np.zeros(0))], gt) == 0.0


def test_iou_and_ciou() -> None:
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    assert float(bbox_iou(a, a, ciou=True)) == pytest.approx(1.0, abs=1e-5)
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0]])
    assert float(bbox_iou(a, b)) == pytest.approx(1 / 3, abs=1e-4)
    assert float(bbox_iou(a, b, ciou=True)) < 1 / 3


def test_nms_keeps_best_of_overlaps() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    keep = nms(boxes, torch.tensor([0.5, 0.9, 0.3]), 0.5)
    assert keep.tolist() == [1, 2]


def test_decode_raw_places_a_box() -> None:
    reg_max, nc, s = 16, 1, 8
    raw = torch.full((1, 4 * reg_max + nc, 4, 4), -20.0)
    # anchor at row 1, col 2 -> centre (20, 12) px; distances 1,1,2,2 grid units
    for side, d in enumerate((1, 1, 2, 2)):
        raw[0, side * reg_max + d, 1, 2] = 20.0
    raw[0, 4 * reg_max, 1, 2] = 5.0
    (boxes, scores, classes), = decode_raw(raw, stride=s, reg_max=reg_max, conf_threshold=0.5)
    assert boxes.tolist() == [[12.0, 4.0, 36.0, 28.0]]
    assert scores.tolist() == [pytest.approx(1 / (1 + np.exp(-5)))]
    assert classes.tolist() == [0]
