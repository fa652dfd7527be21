"""Decoding of the raw head output into detections, on the CPU, shared by every backend.

Every backend (ONNX on the CPU, FINN on the FPGA) returns the same raw map
``float [B, 4*reg_max + nc, H, W]`` (H = W = tile / stride): channels ``0 .. 4*reg_max-1`` are
DFL logits laid out as ``[4, reg_max]`` in ultralytics order (left, top, right, bottom distances
in units of stride), then ``nc`` class logits before the sigmoid. Anchor points sit at
``((x + 0.5) * stride, (y + 0.5) * stride)`` pixels.

A model with ``subgrid`` r > 1 (sidecar ``subgrid``) packs r*r anchors per cell into its output
channels, ``[B, r*r*(4*reg_max + nc), H, W]`` in ``torch.nn.functional.pixel_shuffle`` order;
:func:`unpack_subgrid` rearranges that onto the anchor grid ``[B, 4*reg_max + nc, rH, rW]``
(what every backend's ``infer`` returns), whose anchors sit at ``(x + 0.5) * stride / r``
while box distances stay in units of ``stride``.

Post-processing dominated the latency of the system we reproduce (docs/references.md §1: 41-159 ms
per chip on the ARM cores), so :func:`decode` compares the class *logits* against
``logit(conf_threshold)`` first and runs the sigmoid, the DFL softmax and the box maths only on the
few cells that pass; a tile of open sea costs one max over the class channels.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from sarvessel.runtime.detections import Detections
from sarvessel.runtime.errors import ModelError
from sarvessel.runtime.post.nms import box_nms

log = logging.getLogger(__name__)

#: Most candidate cells per tile sent to NMS (the highest scores are kept), as ultralytics'
#: ``max_nms``; bounds the NMS cost of a pathological tile (e.g. bright land everywhere).
MAX_NMS_CANDIDATES = 30000


def decode(
    raw: np.ndarray,
    *,
    stride: int,
    reg_max: int,
    conf_threshold: float,
    iou_threshold: float,
    max_det: int = 300,
    class_aware: bool = False,
    subgrid: int = 1,
) -> list[Detections]:
    """Decode a raw head output into one :class:`Detections` per tile (tile pixel coordinates).

    raw: float ``[B, 4*reg_max + nc, H, W]`` (a single tile ``[4*reg_max + nc, H, W]`` is taken
    as B = 1). stride: pixels per output cell. reg_max: DFL bins per side. conf_threshold: keep
    cells whose best class score ``sigmoid(logit)`` is strictly above this, in (0, 1).
    iou_threshold: box NMS overlap above which the lower-scoring box is dropped.
    max_det: most detections kept per tile after NMS; the default is 300. class_aware: NMS only
    between boxes of the same class; the default (False) lets a vessel suppress a non-vessel on
    the same spot. subgrid: anchors per ``stride`` cell and axis of ``raw`` (already on the
    anchor grid, see :func:`unpack_subgrid`); the default is 1.

    Returns per tile: boxes ``[N, 4]`` as top, left, bottom, right (pixels), rows/cols the box
    centre, scores the sigmoid of the best class logit, classes its argmax, lengths_px the longer
    box side; sorted by decreasing score.
    """
    raw = np.asarray(raw)
    if raw.ndim == 3:
        raw = raw[None]
    if raw.ndim != 4:
        raise ModelError(f"raw output must be [B, 4*reg_max+nc, H, W], got shape {raw.shape}")
    nbox = 4 * reg_max
    nc = raw.shape[1] - nbox
    if reg_max < 1 or nc < 1:
        raise ModelError(f"raw output has {raw.shape[1]} channels: not 4*reg_max ({nbox}) + nc "
                         f"(nc >= 1) for reg_max={reg_max}")
    if not 0.0 < conf_threshold < 1.0:
        raise ValueError(f"conf_threshold must be in (0, 1), got {conf_threshold}")
    if subgrid < 1:
        raise ValueError(f"subgrid must be a positive integer, got {subgrid}")
    if raw.dtype != np.float32:
        raw = raw.astype(np.float32)
    threshold = np.float32(_logit(conf_threshold))
    # One reduction over the class channels for the whole batch: [B, H, W].
    best = raw[:, nbox] if nc == 1 else raw[:, nbox:].max(axis=1)
    out = []
    for b in range(raw.shape[0]):
        ys, xs = np.nonzero(best[b] > threshold)
        out.append(_decode_cells(raw[b], ys, xs, best[b, ys, xs], stride=stride,
                                 subgrid=subgrid, reg_max=reg_max, iou_threshold=iou_threshold,
                                 max_det=max_det, class_aware=class_aware))
    return out


def dfl_expectation(logits: np.ndarray) -> np.ndarray:
    """Expected bin index of DFL logits ``[..., reg_max]`` (softmax over the last axis).

    >>> float(dfl_expectation(np.array([0.0, 0.0, 0.0, 0.0]))[()])
    1.5
    >>> round(float(dfl_expectation(np.array([-50.0, 50.0, -50.0]))[()]), 4)
    1.0
    """
    logits = np.asarray(logits, np.float32)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    bins = np.arange(logits.shape[-1], dtype=np.float32)
    return (e @ bins) / e.sum(axis=-1)


def unpack_subgrid(raw: np.ndarray, subgrid: int) -> np.ndarray:
    """Packed head output ``[B, r*r*C, H, W]`` (pixel-shuffle order: channel ``c*r*r + i*r + j``
    is anchor ``(i, j)`` of the cell) to the anchor grid ``[B, C, r*H, r*W]``; r = 1 is a no-op.

    >>> unpack_subgrid(np.arange(4.0).reshape(1, 4, 1, 1), 2)[0, 0].tolist()
    [[0.0, 1.0], [2.0, 3.0]]
    """
    if subgrid == 1:
        return raw
    b, c, h, w = raw.shape
    r = subgrid
    if c % (r * r):
        raise ModelError(f"raw output has {c} channels: not a multiple of subgrid**2 = {r * r}")
    return (raw.reshape(b, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3)
            .reshape(b, c // (r * r), h * r, w * r))


def _decode_cells(
    raw: np.ndarray, ys: np.ndarray, xs: np.ndarray, best: np.ndarray, *, stride: int,
    subgrid: int, reg_max: int, iou_threshold: float, max_det: int, class_aware: bool,
) -> Detections:
    """Decode the cells ``(ys, xs)`` of one tile's raw map ``[4*reg_max + nc, H, W]``."""
    if len(ys) == 0:
        return Detections()
    if len(ys) > MAX_NMS_CANDIDATES:
        keep = np.argpartition(-best, MAX_NMS_CANDIDATES - 1)[:MAX_NMS_CANDIDATES]
        ys, xs, best = ys[keep], xs[keep], best[keep]
    nbox = 4 * reg_max
    cells = raw[:, ys, xs]  # [C, K]
    dist = dfl_expectation(cells[:nbox].T.reshape(-1, 4, reg_max)) * np.float32(stride)  # [K, 4]
    spacing = np.float32(stride / subgrid)
    ax = (xs.astype(np.float32) + np.float32(0.5)) * spacing
    ay = (ys.astype(np.float32) + np.float32(0.5)) * spacing
    left, top = ax - dist[:, 0], ay - dist[:, 1]
    right, bottom = ax + dist[:, 2], ay + dist[:, 3]
    classes = cells[nbox:].argmax(axis=0)
    scores = 1.0 / (1.0 + np.exp(-best))
    dets = Detections(
        rows=(top + bottom) * np.float32(0.5),
        cols=(left + right) * np.float32(0.5),
        scores=scores,
        classes=classes,
        boxes=np.stack([top, left, bottom, right], axis=1),
        lengths_px=np.maximum(bottom - top, right - left),
    )
    dets = box_nms(dets, iou_threshold=iou_threshold, class_aware=class_aware)
    return dets.select(np.argsort(-dets.scores, kind="stable")[:max_det])


def _logit(p: float) -> float:
    """Inverse sigmoid: ``sigmoid(x) > p`` exactly when ``x > _logit(p)``."""
    return math.log(p / (1.0 - p))
