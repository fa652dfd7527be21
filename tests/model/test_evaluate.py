"""Quick AP50 and the torch IoU of the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sarvessel.model.boxes import bbox_iou
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
