"""Box maths in torch: IoU / CIoU, NMS, and the model's raw output decoded to boxes."""

from __future__ import annotations

import math

import numpy as np
import torch

from sarvessel.model.anchors import dfl_decode, dist2bbox, make_anchors

__all__ = ["bbox_iou", "box_iou_matrix", "decode_raw", "nms"]


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


def box_iou_matrix(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Pairwise IoU ``[N, M]`` of x1y1x2y2 boxes ``[N, 4]`` and ``[M, 4]``."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(0).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter + eps)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS; returns indices of kept boxes in descending score order."""
    order = scores.argsort(descending=True)
    boxes = boxes[order]
    over = (box_iou_matrix(boxes, boxes) > iou_threshold).numpy()
    keep = np.ones(len(order), dtype=bool)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1:] &= ~over[i, i + 1:]
    return order[torch.from_numpy(keep)]


def decode_raw(raw: torch.Tensor, *, stride: int, reg_max: int, conf_threshold: float = 0.001,
               iou_threshold: float = 0.5, max_det: int = 300
               ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Raw output ``[B, 4*reg_max+nc, h, w]`` to per-image (boxes x1y1x2y2 px ``[K, 4]``,
    scores ``[K]``, classes ``[K]``) after a class-aware NMS."""
    b, _, h, w = raw.shape
    x = raw.flatten(2).permute(0, 2, 1)  # B, N, C
    dist = dfl_decode(x[..., : 4 * reg_max].float(), reg_max)
    anchors = make_anchors(h, w, stride, device=raw.device)
    boxes = dist2bbox(dist, anchors) * stride
    scores = x[..., 4 * reg_max:].float().sigmoid()
    out = []
    for i in range(b):
        conf, cls = scores[i].max(-1)
        keep = conf > conf_threshold
        bx, cf, cl = boxes[i][keep], conf[keep], cls[keep]
        if len(cf) > 3 * max_det:
            top = cf.topk(3 * max_det).indices
            bx, cf, cl = bx[top], cf[top], cl[top]
        k = nms(bx + cl[:, None].float() * 4096.0, cf, iou_threshold)[:max_det]
        out.append((bx[k], cf[k], cl[k]))
    return out
