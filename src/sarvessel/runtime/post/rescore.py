"""A second opinion on each detection, from the image around it (the rescorer).

The 1-GOP network ranks some clutter and some boxes next to ships above real ships (the AP50
budget in ``models/ssdd_w4a4/experiments.md``). A small gradient-boosted tree model, fitted on
the training split by ``sarvessel fit-second-stage``, looks again at each decoded detection: box
size and shape; mean, spread and peak inside the box, in the ring around it and in 32, 96 and
192 px windows; confident neighbours; overlap with a higher-scoring box. Each detection's score
becomes ``p**alpha * score**(1 - alpha)`` (:func:`combine`), p the tree model's probability
that it is a ship.
It runs on the CPU after decode, on a few hundred boxes per tile: microseconds beside the
network, and nothing changes in the accelerator. When the spec names a box refiner
(:mod:`sarvessel.runtime.post.refine`), the post-processing stage refines the small boxes first
and the rescorer judges them as refined.

The tree model is ONNX-ML (``TreeEnsembleClassifier``, exported with skl2onnx), run by
onnxruntime like the network. The model's sidecar names it (``rescorer``, see
:class:`RescorerSpec`); without one nothing here runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sarvessel.runtime.detections import Detections
from sarvessel.runtime.errors import ModelError
from sarvessel.runtime.post.nms import box_iou
from sarvessel.runtime.post.refine import FEATURE_NAMES as REFINE_FEATURE_NAMES
from sarvessel.runtime.post.refine import MAX_SIDE
from sarvessel.runtime.post.tree_models import load_tree_model

#: Half-sides (px) of the context windows around a detection's centre.
WINDOWS: tuple[int, ...] = (16, 48, 96)
#: Score above which a neighbour counts as confident, and how near it must be (px).
NEAR_SCORE, NEAR_PX = 0.1, 40.0
#: Feature columns, in the order :func:`detection_features` returns them.
FEATURE_NAMES: tuple[str, ...] = (
    "logit", "log_w", "log_h", "log_aspect", "in_mean", "in_std", "in_max", "ring_mean",
    "ring_std", "contrast",
    *(f"w{r}_{k}" for r in WINDOWS for k in ("mean", "std", "p90", "bright")),
    "near_confident", "iou_with_higher",
)
#: A window pixel brighter than this (uint8) counts as bright.
BRIGHT = 60
#: Lowest probability a detection is given: one the tree model rules out keeps a score of
#: ``P_FLOOR**alpha * score**(1 - alpha)``, above the decode threshold, so an evaluation at a low
#: threshold still finds it at the tail instead of losing its recall.
P_FLOOR = 0.01


@dataclass(frozen=True)
class RescorerSpec:
    """The sidecar's ``rescorer`` entry.

    file: the tree model, relative to the network's folder. alpha: weight of the tree model's
    probability against the network's score. pre_conf: score at which the network's output is
    decoded before rescoring (the features see every detection above it; the model's
    conf_threshold then applies to the new score). features: the column names it was fitted on
    (checked against :data:`FEATURE_NAMES`). refiner: the box refiner run before rescoring,
    relative to the network's folder (None: none); refine_max_side: it refines boxes whose
    longest side is under this (px); refine_features: the column names it was fitted on
    (checked against :data:`sarvessel.runtime.post.refine.FEATURE_NAMES`).
    """

    file: str
    alpha: float = 0.75
    pre_conf: float = 0.001
    features: tuple[str, ...] = FEATURE_NAMES
    refiner: str | None = None
    refine_max_side: float = MAX_SIDE
    refine_features: tuple[str, ...] = REFINE_FEATURE_NAMES

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"rescorer alpha must be in [0, 1], got {self.alpha}")
        if not 0.0 < float(self.pre_conf) < 1.0:
            raise ValueError(f"rescorer pre_conf must be in (0, 1), got {self.pre_conf}")
        if tuple(self.features) != FEATURE_NAMES:
            raise ValueError("rescorer was fitted on other features than this runtime computes "
                             f"({list(self.features)} vs {list(FEATURE_NAMES)})")
        if not float(self.refine_max_side) > 0:
            raise ValueError(f"rescorer refine_max_side must be > 0, got {self.refine_max_side}")
        if tuple(self.refine_features) != REFINE_FEATURE_NAMES:
            raise ValueError("box refiner was fitted on other features than this runtime "
                             f"computes ({list(self.refine_features)} vs "
                             f"{list(REFINE_FEATURE_NAMES)})")

    @classmethod
    def from_dict(cls, data: Any) -> RescorerSpec:
        if not isinstance(data, dict) or "file" not in data:
            raise ValueError("rescorer must be an object with at least a 'file'")
        known = {"file", "alpha", "pre_conf", "features", "refiner", "refine_max_side",
                 "refine_features"}
        if set(data) - known:
            raise ValueError(f"unknown rescorer keys {sorted(set(data) - known)}")
        refiner = data.get("refiner")
        return cls(str(data["file"]), float(data.get("alpha", 0.75)),
                   float(data.get("pre_conf", 0.001)),
                   tuple(data.get("features", FEATURE_NAMES)),
                   None if refiner is None else str(refiner),
                   float(data.get("refine_max_side", MAX_SIDE)),
                   tuple(data.get("refine_features", REFINE_FEATURE_NAMES)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["features"] = list(self.features)
        if self.refiner is None:  # sidecars without a refiner stay as they were
            for key in ("refiner", "refine_max_side", "refine_features"):
                d.pop(key)
        else:
            d["refine_features"] = list(self.refine_features)
        return d


def valid_extent(grey: np.ndarray) -> tuple[int, int]:
    """Rows and columns of ``grey`` up to its last non-zero row and column.

    Why: an image smaller than the tile is padded with zeros at the bottom and right; the
    windows stop at the image's edge, as they do when features are measured on the image.
    """
    rows = np.flatnonzero(grey.any(axis=1))
    cols = np.flatnonzero(grey.any(axis=0))
    return (int(rows[-1]) + 1 if len(rows) else 0, int(cols[-1]) + 1 if len(cols) else 0)


def detection_features(grey: np.ndarray, dets: Detections,
                       extent: tuple[int, int] | None = None,
                       only: np.ndarray | None = None) -> np.ndarray:
    """Features ``float32 [N, len(FEATURE_NAMES)]`` of ``dets`` (pixels of ``grey``).

    grey: uint8 ``[H, W]`` (the tile's first band). extent: the part of ``grey`` that holds
    image (rows, cols); the default is :func:`valid_extent`. only: indices of the detections
    to measure (the others' rows stay 0; every detection still counts as a neighbour); the
    default is all.
    """
    g = np.asarray(grey, np.float32)
    h_img, w_img = valid_extent(grey) if extent is None else extent
    g = g[:h_img, :w_img]
    n = len(dets)
    out = np.zeros((n, len(FEATURE_NAMES)), np.float32)
    if n == 0 or g.size == 0:
        return out
    boxes = np.asarray(dets.boxes, np.float64)  # top, left, bottom, right
    scores = np.asarray(dets.scores, np.float64)
    iou = box_iou(boxes, boxes)
    cy, cx = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    for k in range(n) if only is None else np.asarray(only, np.intp):
        t, left, b, r = boxes[k]
        w, h = max(r - left, 1.0), max(b - t, 1.0)
        inside = g[max(int(t), 0):max(int(np.ceil(b)), int(t) + 1),
                   max(int(left), 0):max(int(np.ceil(r)), int(left) + 1)]
        if inside.size == 0:
            inside = np.zeros(1, np.float32)
        outer = g[max(int(t - h), 0):min(int(b + h) + 1, h_img),
                  max(int(left - w), 0):min(int(r + w) + 1, w_img)]
        n_ring = max(outer.size - inside.size, 1)
        ring_mean = (float(outer.sum()) - float(inside.sum())) / n_ring
        sq = float((outer.astype(np.float64) ** 2).sum() - (inside.astype(np.float64) ** 2).sum())
        ring_std = np.sqrt(max(sq / n_ring - ring_mean**2, 0.0))
        s = scores[k]
        row = [np.log(s / (1 - s + 1e-9) + 1e-9), np.log(w), np.log(h), np.log(w / h),
               inside.mean(), inside.std(), inside.max(), ring_mean, ring_std,
               inside.mean() - ring_mean]
        for half in WINDOWS:
            win = g[max(int(cy[k]) - half, 0):int(cy[k]) + half,
                    max(int(cx[k]) - half, 0):int(cx[k]) + half]
            if win.size == 0:
                win = np.zeros(1, np.float32)
            row += [win.mean(), win.std(), np.percentile(win, 90), (win > BRIGHT).mean()]
        higher = iou[k][scores > s]
        near = (np.hypot(cy - cy[k], cx - cx[k]) < NEAR_PX) & (scores > NEAR_SCORE)
        row += [float(near.sum()), float(higher.max()) if higher.size else 0.0]
        out[k] = row
    return out


def combine(p: np.ndarray, scores: np.ndarray, alpha: float) -> np.ndarray:
    """The rescored confidence ``max(p, P_FLOOR)**alpha * score**(1 - alpha)``.

    >>> [round(float(v), 3) for v in combine(np.array([1.0, 0.0]), np.array([0.25, 0.25]), 0.5)]
    [0.5, 0.05]
    """
    p = np.clip(np.asarray(p, np.float64), P_FLOOR, 1.0)
    return (p**alpha * np.asarray(scores, np.float64) ** (1.0 - alpha)).astype(np.float32)


class Rescorer:
    """The fitted tree model of a :class:`RescorerSpec`, run by onnxruntime.

    The box refiner the spec may name runs before it, as its own step of the post-processing
    stage (:class:`~sarvessel.runtime.post.stage.HeadMapPost`).
    """

    def __init__(self, spec: RescorerSpec, model_dir: Path, *, threads: int | None = 1) -> None:
        self.spec = spec
        self.path = Path(model_dir) / spec.file
        self.session = load_tree_model(self.path, "rescorer", threads=threads)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].shape[-1] not in (len(FEATURE_NAMES), None, "None"):
            raise ModelError(f"{self.path}: expected one input of {len(FEATURE_NAMES)} features")
        self._input = inputs[0].name

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """P(ship) of each row of ``features`` ``[N, F]``."""
        if not len(features):
            return np.zeros(0, np.float32)
        out = self.session.run(None, {self._input: np.asarray(features, np.float32)})
        proba = out[1]  # skl2onnx classifiers: (label, probabilities [N, 2])
        return np.asarray(proba, np.float32)[:, 1]

    def can_pass(self, dets: Detections, conf_threshold: float) -> np.ndarray:
        """Indices of the detections whose new score can pass ``conf_threshold`` whatever p is
        (``score**(1 - alpha) > conf_threshold``): at a deployment threshold most low-scoring
        boxes need neither refining nor measuring."""
        a = float(self.spec.alpha)
        if a >= 1.0:
            return np.arange(len(dets))
        scores = np.asarray(dets.scores, np.float32).astype(np.float64)
        return np.flatnonzero(scores ** (1.0 - a) > conf_threshold)

    def rescore(self, grey: np.ndarray, dets: Detections, *, conf_threshold: float = 0.0,
                index: np.ndarray | None = None) -> Detections:
        """The detections among ``index`` (default: those that :meth:`can_pass`
        ``conf_threshold``; 0, the default, keeps all) with scores
        ``p**alpha * score**(1 - alpha)``, sorted by the new score. Features come from ``grey``
        (``uint8 [H, W]``, the tile's first band).

        Refined boxes are not put through NMS again, though two may now overlap more than the
        decoder's NMS allowed (2 pairs above 0.25 on SSDD's test split): on the training split
        NMS after refining scored lower (cross-fitted AP50 0.9683 against 0.9687) and lowered
        the recall ceiling (0.9833 against 0.9848), as refined boxes of ships moored side by
        side come to overlap.
        """
        if not len(dets):
            return dets
        idx = self.can_pass(dets, conf_threshold) if index is None else np.asarray(index, np.intp)
        scores = np.asarray(dets.scores, np.float32)
        feats = detection_features(grey, dets, extent=valid_extent(grey), only=idx)[idx]
        new = dets.select(idx)
        new.scores = combine(self.probabilities(feats), scores[idx], float(self.spec.alpha))
        return new.select(np.argsort(-new.scores, kind="stable"))
