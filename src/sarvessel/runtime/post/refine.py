"""Second-stage box refinement of small detections, from the pixels around them (the refiner).

Why: at stride 8 the network places the boxes of ships narrower than about two cells loosely.
On SSDD's test split v12 had a detection near every one of the 16 ships it never found (NMS at
IoU 0.7), but at IoU 0.22-0.5, so AP50 counted each as a miss plus a false alarm. The bright
pixels around a small box say where the ship is: a gradient-boosted regressor, fitted on the
training split by ``sarvessel fit-second-stage``, predicts the offset of each edge of every box
whose longest side is under ``max_side`` px from the moments and the half-maximum extent of the
brightness above the local background (:func:`refine_features`). It runs on the CPU before the
rescorer (:mod:`sarvessel.runtime.post.rescore`), which then judges the refined boxes; the network
and the accelerator are unchanged.

The regressor is ONNX-ML (four ``TreeEnsembleRegressor`` nodes joined into one ``[N, 4]``
output, exported with skl2onnx) and runs in onnxruntime like the network; the rescorer's
sidecar entry names it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sarvessel.runtime.detections import Detections
from sarvessel.runtime.errors import ModelError
from sarvessel.runtime.post.tree_models import load_tree_model

#: Feature columns, in the order :func:`refine_features` returns them: box size; offset and
#: spread of the brightness above the window's median, the background (its moments; 0 where
#: nothing is above it); offset of each edge of the half-maximum extent (pixels above background
#: + half of peak - background) from the box's edge; background, peak, the pixels above
#: background + a half and a quarter of peak - background, and the mean excess brightness.
FEATURE_NAMES: tuple[str, ...] = (
    "h", "w", "dy", "dx", "sy", "sx", "e_top", "e_left", "e_bottom", "e_right",
    "background", "peak", "n_half", "n_quarter", "mean_excess",
)
#: Boxes whose longest side is under this (px) are refined; larger ones are boxed well.
MAX_SIDE = 32.0
#: Half-side (px) of the window around a box's centre is max(box side, this).
MIN_HALF_WINDOW = 8.0


def refine_features(grey: np.ndarray, boxes: np.ndarray,
                    extent: tuple[int, int] | None = None) -> np.ndarray:
    """Features ``float32 [N, len(FEATURE_NAMES)]`` of ``boxes`` (``[N, 4]`` top, left, bottom,
    right in pixels of ``grey``, uint8 ``[H, W]``). extent: the rows and columns of ``grey``
    that hold image (zero padding beyond); the default is all of it. A box whose window holds
    no image pixel gets a row of zeros (:func:`has_window` tells which)."""
    h_img, w_img = grey.shape if extent is None else extent
    out = np.zeros((len(boxes), len(FEATURE_NAMES)), np.float32)
    for i, (t, left, b, r) in enumerate(np.asarray(boxes, np.float64)):
        window = _window(t, left, b, r, h_img, w_img)
        if window is None:
            continue
        r0, r1, c0, c1 = window
        h, w = max(b - t, 1.0), max(r - left, 1.0)
        cy, cx = (t + b) / 2, (left + r) / 2
        win = grey[r0:r1, c0:c1].astype(np.float32)
        bg = float(np.median(win))
        peak = float(win.max())
        excess = np.maximum(win - bg, 0.0)
        total = float(excess.sum())
        my, mx, sy, sx = cy, cx, 0.0, 0.0  # nothing above the background: no pull
        if total > 0:
            ys = np.arange(r0, r1) + 0.5
            xs = np.arange(c0, c1) + 0.5
            prof_y, prof_x = excess.sum(1), excess.sum(0)
            my, mx = float(prof_y @ ys) / total, float(prof_x @ xs) / total
            sy = np.sqrt(float(prof_y @ (ys - my) ** 2) / total)
            sx = np.sqrt(float(prof_x @ (xs - mx) ** 2) / total)
        half = win > bg + 0.5 * (peak - bg)
        if half.any():
            rows, cols = np.flatnonzero(half.any(1)), np.flatnonzero(half.any(0))
            ey0, ey1 = r0 + rows[0], r0 + rows[-1] + 1
            ex0, ex1 = c0 + cols[0], c0 + cols[-1] + 1
        else:
            ey0, ey1, ex0, ex1 = t, b, left, r
        out[i] = [h, w, my - cy, mx - cx, sy, sx, ey0 - t, ex0 - left, ey1 - b, ex1 - r,
                  bg, peak, float(half.sum()), float((win > bg + 0.25 * (peak - bg)).sum()),
                  total / win.size]
    return out


def _window(t: float, left: float, b: float, r: float, h_img: int, w_img: int
            ) -> tuple[int, int, int, int] | None:
    """Rows r0:r1 and columns c0:c1 of the window around a box, inside the image; None if
    empty."""
    hh, hw = max(b - t, MIN_HALF_WINDOW), max(r - left, MIN_HALF_WINDOW)
    cy, cx = (t + b) / 2, (left + r) / 2
    r0, r1 = int(max(cy - hh, 0)), int(min(cy + hh, h_img))
    c0, c1 = int(max(cx - hw, 0)), int(min(cx + hw, w_img))
    return (r0, r1, c0, c1) if r1 > r0 and c1 > c0 else None


def has_window(boxes: np.ndarray, extent: tuple[int, int]) -> np.ndarray:
    """Whether the window around each box (``[N, 4]``) holds image pixels (``extent``)."""
    return np.array([_window(*map(float, bx), *extent) is not None
                     for bx in np.asarray(boxes, np.float64).reshape(-1, 4)], bool)


def refinable(dets: Detections, max_side: float = MAX_SIDE) -> np.ndarray:
    """Indices of the boxes of ``dets`` whose longest side is under ``max_side``."""
    bx = np.asarray(dets.boxes, np.float64).reshape(-1, 4)
    return np.flatnonzero(np.maximum(bx[:, 2] - bx[:, 0], bx[:, 3] - bx[:, 1]) < max_side)


def candidates(dets: Detections, extent: tuple[int, int], *, max_side: float = MAX_SIDE,
               index: np.ndarray | None = None) -> np.ndarray:
    """Indices of the boxes the refiner moves: among ``index`` (default all), those under
    ``max_side`` whose window holds image pixels (``extent``). The fit
    (``sarvessel fit-second-stage``) picks its training boxes with this too."""
    small = refinable(dets, max_side)
    if index is not None:
        small = np.intersect1d(small, np.asarray(index, np.intp))
    return small[has_window(np.asarray(dets.boxes)[small], extent)]


def apply_offsets(dets: Detections, index: np.ndarray, offsets: np.ndarray,
                  shape: tuple[int, int]) -> Detections:
    """A copy of ``dets`` with ``offsets`` (``[len(index), 4]`` px, top, left, bottom, right)
    added to the boxes picked by ``index``, their edges clipped to ``shape`` and then widened
    about their middle to at least 1 px a side (so a box on the image's edge may stick out by
    half a pixel); their centres and lengths (the longer side) follow the boxes."""
    out = dets.select(np.arange(len(dets)))
    if not len(index):
        return out
    new = out.boxes[index].astype(np.float64) + offsets
    h, w = shape
    new[:, [0, 2]] = np.clip(new[:, [0, 2]], 0, h)
    new[:, [1, 3]] = np.clip(new[:, [1, 3]], 0, w)
    mid_r, mid_c = (new[:, 0] + new[:, 2]) / 2, (new[:, 1] + new[:, 3]) / 2
    half_h = np.maximum((new[:, 2] - new[:, 0]) / 2, 0.5)
    half_w = np.maximum((new[:, 3] - new[:, 1]) / 2, 0.5)
    new = np.stack([mid_r - half_h, mid_c - half_w, mid_r + half_h, mid_c + half_w], 1)
    out.boxes[index] = new
    out.rows[index], out.cols[index] = mid_r, mid_c
    out.lengths_px[index] = 2 * np.maximum(half_h, half_w)
    return out


class BoxRefiner:
    """The fitted edge-offset regressor, run by onnxruntime."""

    def __init__(self, path: Path, *, max_side: float = MAX_SIDE,
                 threads: int | None = 1) -> None:
        self.path = Path(path)
        self.max_side = float(max_side)
        self.session = load_tree_model(self.path, "box refiner", threads=threads)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if (len(inputs) != 1 or inputs[0].shape[-1] not in (len(FEATURE_NAMES), None, "None")
                or len(outputs) != 1 or outputs[0].shape[-1] != 4):
            raise ModelError(f"{self.path}: expected one input of {len(FEATURE_NAMES)} features "
                             "and one output of 4 edge offsets")
        self._input = inputs[0].name

    def offsets(self, features: np.ndarray) -> np.ndarray:
        """Edge offsets ``[N, 4]`` (px) for feature rows ``[N, F]``."""
        if not len(features):
            return np.zeros((0, 4), np.float64)
        out = self.session.run(None, {self._input: np.asarray(features, np.float32)})[0]
        return np.asarray(out, np.float64).reshape(-1, 4)

    def refine(self, grey: np.ndarray, dets: Detections, *, index: np.ndarray | None = None,
               extent: tuple[int, int] | None = None) -> Detections:
        """``dets`` with the small boxes among ``index`` (default all) refined on ``grey``; boxes
        whose window holds no image pixel (past the image, in the tile's padding) stay."""
        shape = grey.shape if extent is None else extent
        small = candidates(dets, shape, max_side=self.max_side, index=index)
        feats = refine_features(grey, np.asarray(dets.boxes)[small], extent=shape)
        return apply_offsets(dets, small, self.offsets(feats), shape)
