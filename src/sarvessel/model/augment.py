"""SAR-respecting augmentation of uint8 images ``[C, H, W]`` with boxes ``[N, 4]`` x1y1x2y2 px.

Geometric: flips, 90-degree rotations, scale (SAR has no preferred up direction, so all eight
dihedral orientations are valid). Radiometric, in the dB domain the uint8 levels represent
(:mod:`sarvessel.runtime.preprocess` maps a 70 dB range linearly to 0..255): a gain/offset jitter
(calibration and incidence-angle changes) and a multiplicative Gamma speckle re-draw (extra looks
of fully developed speckle, additive in dB). Pixels at 0 (nodata) stay 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

__all__ = ["AugmentConfig", "augment", "augment_mosaic", "crop_or_pad", "cut_patch", "db_jitter",
           "flip", "letterbox", "mosaic", "paste_patches", "resize", "rot90", "speckle"]

#: dB per uint8 level of the shared preprocessing (70 dB over 255 levels).
DB_PER_LEVEL = 70.0 / 255.0


@dataclass
class AugmentConfig:
    """Probabilities and ranges of the training augmentation."""

    #: Probability of a horizontal / vertical flip (each).
    flip: float = 0.5
    #: Probability of a random 90-degree rotation (k in 1..3).
    rot90: float = 0.5
    #: Random scale range (uniform), applied with probability ``scale_p``.
    scale: tuple[float, float] = (0.7, 1.3)
    scale_p: float = 0.5
    #: Gain range and offset range (uint8 levels) of the dB jitter, probability ``jitter_p``.
    gain: tuple[float, float] = (0.85, 1.15)
    offset: tuple[float, float] = (-12.0, 12.0)
    jitter_p: float = 0.5
    #: Equivalent number of looks of the extra speckle (lower is noisier), probability.
    looks: tuple[float, float] = (4.0, 16.0)
    speckle_p: float = 0.3
    #: Probability that a training sample is a 4-image mosaic (:func:`mosaic`); 0 is off.
    mosaic: float = 0.0
    #: Probability that ships cut from other images are pasted into a sample
    #: (:func:`paste_patches`); 0 is off. ``paste_n``: how many (uniform, inclusive).
    copy_paste: float = 0.0
    paste_n: tuple[int, int] = (1, 4)
    #: Images larger than the model's tile: shrunk to fit it before the random scale (True,
    #: the recipe of every shipped model) or kept at native pixels and cropped (False). Why
    #: False exists: the runtime does not shrink such images, it tiles them at native pixels,
    #: so shrinking them in training teaches their ships at a scale the runtime never shows.
    shrink_oversize: bool = True


def flip(img: np.ndarray, boxes: np.ndarray, *, horizontal: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right (``horizontal``) or top-bottom."""
    h, w = img.shape[-2:]
    b = boxes.copy()
    if horizontal:
        img = img[..., ::-1]
        b[:, [0, 2]] = w - boxes[:, [2, 0]]
    else:
        img = img[..., ::-1, :]
        b[:, [1, 3]] = h - boxes[:, [3, 1]]
    return np.ascontiguousarray(img), b


def rot90(img: np.ndarray, boxes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rotate by ``k`` x 90 degrees counter-clockwise (as ``np.rot90`` on the H, W axes)."""
    k %= 4
    b = boxes.copy()
    for _ in range(k):
        w = img.shape[-1]
        img = np.rot90(img, 1, axes=(-2, -1))
        # (x, y) -> (y, w - x)
        b = np.stack([b[:, 1], w - b[:, 2], b[:, 3], w - b[:, 0]], 1)
    return np.ascontiguousarray(img), b.astype(np.float32).reshape(-1, 4)


def resize(img: np.ndarray, boxes: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale image (bilinear) and boxes by ``scale``."""
    h, w = img.shape[-2:]
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) == (h, w):
        return img, boxes.copy()
    out = np.stack([np.asarray(Image.fromarray(c).resize((nw, nh), Image.BILINEAR))
                    for c in img])
    sx, sy = nw / w, nh / h
    return out, (boxes * np.array([sx, sy, sx, sy], np.float32)).astype(np.float32)


def crop_or_pad(img: np.ndarray, boxes: np.ndarray, classes: np.ndarray, size: int, *,
                x0: int, y0: int, min_visible: float = 0.4, min_side: float = 2.0,
                height: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place ``img`` on a ``size`` x ``size`` zero canvas (``height`` rows when given) with its
    origin at canvas ``(-x0, -y0)``: positive offsets crop, negative ones pad. Boxes are clipped;
    a box keeps only if at least ``min_visible`` of its area and ``min_side`` pixels per side
    remain."""
    c, h, w = img.shape
    rows = size if height is None else height
    canvas = np.zeros((c, rows, size), img.dtype)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + size, w), min(y0 + rows, h)
    if sx1 > sx0 and sy1 > sy0:
        canvas[:, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = img[:, sy0:sy1, sx0:sx1]
    b = boxes - np.array([x0, y0, x0, y0], np.float32)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    bc = b.copy()
    bc[:, [0, 2]] = bc[:, [0, 2]].clip(0, size)
    bc[:, [1, 3]] = bc[:, [1, 3]].clip(0, rows)
    bw, bh = bc[:, 2] - bc[:, 0], bc[:, 3] - bc[:, 1]
    keep = (bw >= min_side) & (bh >= min_side) & (bw * bh >= min_visible * np.maximum(area, 1e-6))
    return canvas, bc[keep].astype(np.float32), classes[keep]


def letterbox(img: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray,
                                                                       float]:
    """Fit ``img`` into a ``size`` canvas at the top-left corner, shrinking (never enlarging) when
    a side exceeds ``size``. Returns image, boxes and the scale applied (divide predicted boxes
    by it to get back to image pixels)."""
    h, w = img.shape[-2:]
    scale = min(1.0, size / max(h, w))
    img, boxes = resize(img, boxes, scale)
    canvas, b, _ = crop_or_pad(img, boxes, np.zeros(len(boxes), np.int64), size, x0=0, y0=0,
                               min_visible=0.0, min_side=0.0)
    return canvas, b, scale


def db_jitter(img: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """Linear gain/offset of the dB levels around the image mean; nodata (0) stays 0."""
    valid = img > 0
    x = img.astype(np.float32)
    mean = float(x[valid].mean()) if valid.any() else 0.0
    out = np.clip(np.rint((x - mean) * gain + mean + offset), 1, 255)
    return np.where(valid, out, 0).astype(np.uint8)


def speckle(img: np.ndarray, looks: float, rng: np.random.Generator, *,
            db_per_level: float = DB_PER_LEVEL) -> np.ndarray:
    """Multiply intensities by Gamma(L, 1/L) speckle: adds ``10 log10(g) / db_per_level`` levels.
    Nodata (0) stays 0."""
    g = rng.gamma(looks, 1.0 / looks, size=img.shape).astype(np.float32)
    delta = 10.0 * np.log10(np.maximum(g, 1e-6)) / db_per_level
    out = np.clip(np.rint(img.astype(np.float32) + delta), 1, 255)
    return np.where(img > 0, out, 0).astype(np.uint8)


def augment(img: np.ndarray, boxes: np.ndarray, classes: np.ndarray, size: int,
            rng: np.random.Generator, cfg: AugmentConfig | None = None, *,
            base_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training augmentation to a ``size`` x ``size`` uint8 sample.

    ``base_scale`` is applied first (the letterbox scale of the evaluation tile), then the random
    scale, flips and rotations, the radiometric jitter, and a random crop/pad window that keeps
    at least one box where possible. ``cfg=None`` means no random changes (centre placement).
    """
    scale = base_scale
    if cfg is not None and rng.random() < cfg.scale_p:
        scale *= rng.uniform(*cfg.scale)
    img, boxes = resize(img, boxes.astype(np.float32), scale)
    if cfg is not None:
        if rng.random() < cfg.flip:
            img, boxes = flip(img, boxes, horizontal=True)
        if rng.random() < cfg.flip:
            img, boxes = flip(img, boxes, horizontal=False)
        if rng.random() < cfg.rot90:
            img, boxes = rot90(img, boxes, int(rng.integers(1, 4)))
        if rng.random() < cfg.jitter_p:
            img = db_jitter(img, rng.uniform(*cfg.gain), rng.uniform(*cfg.offset))
        if rng.random() < cfg.speckle_p:
            img = speckle(img, rng.uniform(*cfg.looks), rng)
    h, w = img.shape[-2:]
    if cfg is None:
        x0, y0 = (w - size) // 2, (h - size) // 2
    else:
        x0 = _window_start(w, size, boxes[:, [0, 2]], rng)
        y0 = _window_start(h, size, boxes[:, [1, 3]], rng)
    return crop_or_pad(img, boxes, classes, size, x0=x0, y0=y0)


def augment_mosaic(items: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, float]], size: int,
                   rng: np.random.Generator, cfg: AugmentConfig
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`augment` each of four ``(img, boxes, classes, base_scale)`` items, then
    :func:`mosaic` them. The speckle re-draw runs once on the mosaic (it is the costly step)."""
    piece_cfg = replace(cfg, speckle_p=0.0)
    pieces = [augment(img, b, k, size, rng, piece_cfg, base_scale=s) for img, b, k, s in items]
    img, boxes, classes = mosaic(pieces, size, rng)
    if rng.random() < cfg.speckle_p:
        img = speckle(img, rng.uniform(*cfg.looks), rng)
    return img, boxes, classes


def mosaic(pieces: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], size: int,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four ``size`` x ``size`` samples -> one, as ultralytics' mosaic (without its affine): a
    random centre splits the canvas into four quadrants and each is filled by a window of one
    sample, placed near one of its boxes where it has any.

    Why: one sample then shows ships of four scenes against four backgrounds (quays, open sea,
    clutter), at their native scale, so a small data set such as SSDD yields more varied
    context per step; it is the augmentation YOLOv8 relies on most."""
    if len(pieces) != 4:
        raise ValueError(f"mosaic needs 4 samples, got {len(pieces)}")
    cx, cy = (int(rng.uniform(0.25, 0.75) * size) for _ in range(2))
    canvas = np.zeros((pieces[0][0].shape[0], size, size), np.uint8)
    all_boxes, all_classes = [], []
    quads = ((0, 0, cx, cy), (cx, 0, size, cy), (0, cy, cx, size), (cx, cy, size, size))
    for (img, boxes, classes), (qx0, qy0, qx1, qy1) in zip(pieces, quads, strict=True):
        qw, qh = qx1 - qx0, qy1 - qy0
        x0 = _window_start(img.shape[-1], qw, boxes[:, [0, 2]], rng)
        y0 = _window_start(img.shape[-2], qh, boxes[:, [1, 3]], rng)
        crop, b, k = crop_or_pad(img, boxes, classes, qw, x0=x0, y0=y0, height=qh)
        canvas[:, qy0:qy1, qx0:qx1] = crop
        all_boxes.append(b + np.array([qx0, qy0, qx0, qy0], np.float32))
        all_classes.append(k)
    return (canvas, np.concatenate(all_boxes).astype(np.float32).reshape(-1, 4),
            np.concatenate(all_classes))


def cut_patch(img: np.ndarray, box: np.ndarray, *, margin: int = 3
              ) -> tuple[np.ndarray, np.ndarray]:
    """The ``[C, h, w]`` window of ``img`` around ``box`` (x1y1x2y2) with ``margin`` pixels of
    background on each side (clipped at the image edge), and the box in window pixels."""
    h, w = img.shape[-2:]
    x1, y1 = max(int(np.floor(box[0])) - margin, 0), max(int(np.floor(box[1])) - margin, 0)
    x2, y2 = min(int(np.ceil(box[2])) + margin, w), min(int(np.ceil(box[3])) + margin, h)
    rel = np.asarray(box, np.float32) - np.array([x1, y1, x1, y1], np.float32)
    return img[:, y1:y2, x1:x2].copy(), rel


def paste_patches(img: np.ndarray, boxes: np.ndarray, classes: np.ndarray,
                  patches: Sequence[tuple[np.ndarray, np.ndarray, int]],
                  rng: np.random.Generator, *, tries: int = 10, max_contrast: float = 6.0,
                  ship_levels: float = 8.0, max_zero: float = 0.25
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste ship ``patches`` (``[C, h, w]`` windows from :func:`cut_patch`, the ship's box in
    window pixels, its class) into ``img`` at random free places; returns the new image, boxes
    and classes.

    A place is taken only if the window overlaps no box, is at most ``max_zero`` zeros (padding;
    SSDD's dark sea has some true zeros) and its median level is at most ``max_contrast`` uint8
    levels above the median of the window's own background (the pixels outside the ship's box),
    so a ship is not hidden in bright land or clutter. Only the ship's scatterers move: pixels
    inside its box more than ``ship_levels`` above that background, combined with ``max`` (in dB
    the brighter return dominates the sum), so the old sea leaves no rectangle.

    Why: SSDD has ~2 ships per image and few small ones; pasted ships add targets in new
    surroundings at no inference cost (copy-paste augmentation, Ghiasi et al. 2021)."""
    out = img.copy()
    h, w = out.shape[-2:]
    taken, new_classes = boxes.reshape(-1, 4).astype(np.float32), [classes]
    for patch, rel, cls in patches:
        ph, pw = patch.shape[-2:]
        outside = np.ones((ph, pw), bool)
        outside[int(rel[1]):int(np.ceil(rel[3])), int(rel[0]):int(np.ceil(rel[2]))] = False
        if ph >= h or pw >= w or not outside.any():
            continue
        ref = float(np.median(patch[:, outside]))
        ship = (patch > ref + ship_levels) & ~outside
        if not ship.any():
            continue
        for _ in range(tries):
            y0, x0 = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
            if len(taken) and np.any((taken[:, 2] > x0) & (taken[:, 0] < x0 + pw)
                                     & (taken[:, 3] > y0) & (taken[:, 1] < y0 + ph)):
                continue
            dst = out[:, y0:y0 + ph, x0:x0 + pw]
            if (dst == 0).mean() > max_zero or float(np.median(dst)) > ref + max_contrast:
                continue
            out[:, y0:y0 + ph, x0:x0 + pw] = np.where(ship, np.maximum(dst, patch), dst)
            box = rel + np.array([x0, y0, x0, y0], np.float32)
            taken = np.concatenate([taken, box[None]])
            new_classes.append(np.array([cls], classes.dtype))
            break
    return out, taken, np.concatenate(new_classes)


def _window_start(extent: int, size: int, spans: np.ndarray, rng: np.random.Generator) -> int:
    """Random window start along one axis; when cropping, centre it near a random box."""
    if extent <= size:
        return -int(rng.integers(0, size - extent + 1))
    if len(spans) and rng.random() < 0.8:
        c = float(spans[rng.integers(len(spans))].mean())
        lo = int(np.clip(c - size + 8, 0, extent - size))
        hi = int(np.clip(c - 8, 0, extent - size))
        return int(rng.integers(min(lo, hi), max(lo, hi) + 1))
    return int(rng.integers(0, extent - size + 1))
