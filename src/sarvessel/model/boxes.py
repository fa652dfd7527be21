"""Box maths in torch for the loss and the assigner: element-wise IoU / CIoU.

Decoding and NMS are the runtime's (:mod:`sarvessel.runtime.post.decode`), shared by training-time
validation and every backend."""

from __future__ import annotations

import math

import torch

__all__ = ["bbox_iou"]


def bbox_iou(box1: torch.Tensor, box2: torch.Tensor, *, ciou: bool = False,
             eps: float = 1e-7) -> torch.Tensor:
    """Element-wise IoU (or CIoU) of x1y1x2y2 boxes ``[..., 4]``; returns ``[..., 1]``.

    >>> b = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    >>> round(float(bbox_iou(b, torch.tensor([[1.0, 0.0, 3.0, 2.0]]))), 4)
    0.3333
    """
    b1_x1, b1_y1, b1_x2, b1_y2 = box1.chunk(4, -1)
    b2_x1, b2_y1, b2_x2, b2_y2 = box2.chunk(4, -1)
    w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1 + eps
    w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1 + eps
    inter = ((b1_x2.minimum(b2_x2) - b1_x1.maximum(b2_x1)).clamp_(0)
             * (b1_y2.minimum(b2_y2) - b1_y1.maximum(b2_y1)).clamp_(0))
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if not ciou:
        return iou
    cw = b1_x2.maximum(b2_x2) - b1_x1.minimum(b2_x1)
    ch = b1_y2.maximum(b2_y2) - b1_y1.minimum(b2_y1)
    c2 = cw.pow(2) + ch.pow(2) + eps
    rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2).pow(2) + (b2_y1 + b2_y2 - b1_y1 - b1_y2).pow(2)) / 4
    v = (4 / math.pi**2) * ((w2 / h2).atan() - (w1 / h1).atan()).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)
