"""Average precision of box detections (COCO-style), plus precision/recall/F1 at a threshold.

Matching follows COCO (``pycocotools`` ``COCOeval.evaluateImg``): per image and class,
detections in decreasing score order each take the not-yet-matched ground-truth box of the same
class with the highest IoU, if that IoU is ``>=`` the threshold; a detection matched to an
*ignored* ground truth (VOC ``difficult``) counts as neither TP nor FP, and ignored boxes are not
counted as ground truth. AP is computed per class from all images pooled, then averaged over the
classes that have ground truth.

Three interpolations (:class:`Interpolation`): ``coco101`` (the default) samples the precision
envelope at 101 recall points 0, 0.01, ..., 1 as COCO does; ``all_point`` integrates the envelope
over every recall step (VOC 2010+); ``ultralytics`` is the trapezoid rule of ultralytics'
``compute_ap``, the figure that YOLOv8-based papers quote (see :class:`Interpolation`). AP50-95
is the mean AP over IoU 0.50:0.05:0.95.

Boxes are ``[N, 4]`` corner boxes; any corner order works (x1, y1, x2, y2 or top, left, bottom,
right) as long as predictions and ground truth use the same one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from sarvessel.runtime.io.outputs import atomic_open
from sarvessel.runtime.post.nms import box_iou

log = logging.getLogger(__name__)

__all__ = [
    "APReport",
    "ImageDetections",
    "ImageTruth",
    "Interpolation",
    "PRCurve",
    "average_precision",
    "evaluate_ap",
    "match_image",
    "recall_by_size",
    "threshold_matches",
    "save_pr_curve",
]

#: COCO IoU thresholds 0.50, 0.55, ..., 0.95.
COCO_IOUS: tuple[float, ...] = tuple(np.round(np.linspace(0.5, 0.95, 10), 2).tolist())


def evaluate_ap(
    detections: Sequence[ImageDetections],
    truths: Sequence[ImageTruth],
    *,
    nc: int,
    conf_threshold: float = 0.25,
    iou_thresholds: Sequence[float] = COCO_IOUS,
    interpolation: Interpolation | str = "coco101",
) -> APReport:
    """AP50, AP50-95 and P/R/F1 at ``conf_threshold`` over a set of images.

    detections[i], truths[i]: predictions and ground truth of image i. nc: number of classes.
    conf_threshold: score at or above which a detection counts for precision/recall/F1 (at IoU
    0.5); the default is 0.25. iou_thresholds: for the AP average; must contain 0.5; the default
    is COCO's 0.50:0.05:0.95. interpolation: ``coco101`` (default), ``all_point`` or
    ``ultralytics``.
    """
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} detection sets for {len(truths)} images")
    if not truths:
        raise ValueError("no images to evaluate")
    interp = Interpolation(interpolation)
    ious = np.asarray(iou_thresholds, np.float64)
    i50 = int(np.argmin(np.abs(ious - 0.5)))
    if abs(ious[i50] - 0.5) > 1e-9:
        raise ValueError("iou_thresholds must contain 0.5")
    per_class_ap = np.full((nc, len(ious)), np.nan)
    curves: dict[int, PRCurve] = {}
    tp_conf = fp_conf = 0
    n_gt_total = 0
    for c in range(nc):
        tps, valids, scores, n_gt = [], [], [], 0
        for det, gt in zip(detections, truths, strict=True):
            dm, gm = det.classes == c, gt.classes == c
            tp, valid = match_image(det.boxes[dm], det.scores[dm], gt.boxes[gm],
                                    gt_ignore=gt.ignore[gm], iou_thresholds=ious)
            tps.append(tp)
            valids.append(valid)
            scores.append(det.scores[dm])
            n_gt += int((~gt.ignore[gm]).sum())
        tp_all = np.concatenate(tps)
        valid_all = np.concatenate(valids)
        sc_all = np.concatenate(scores)
        n_gt_total += n_gt
        sel = (sc_all >= conf_threshold) & valid_all[:, i50]
        tp_conf += int(tp_all[sel, i50].sum())
        fp_conf += int((~tp_all[sel, i50]).sum())
        if n_gt == 0:
            continue
        for k in range(len(ious)):
            v = valid_all[:, k]
            ap, curve = average_precision(tp_all[v, k], sc_all[v], n_gt, interpolation=interp)
            per_class_ap[c, k] = ap
            if k == i50:
                curves[c] = curve
    have = ~np.isnan(per_class_ap[:, 0])
    max_recall = (float(np.mean([c.recall[-1] if len(c.recall) else 0.0 for c in curves.values()]))
                  if curves else float("nan"))
    ap_iou = per_class_ap[have].mean(axis=0) if have.any() else np.full(len(ious), np.nan)
    fn_conf = n_gt_total - tp_conf
    precision = tp_conf / (tp_conf + fp_conf) if tp_conf + fp_conf else 0.0
    recall = tp_conf / n_gt_total if n_gt_total else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return APReport(
        ap50=float(ap_iou[i50]), ap50_95=float(np.mean(ap_iou)),
        ap_per_iou={float(t): float(a) for t, a in zip(ious, ap_iou, strict=True)},
        ap50_per_class={c: float(per_class_ap[c, i50]) for c in range(nc)},
        precision=float(precision), recall=float(recall), f1=float(f1),
        tp=tp_conf, fp=fp_conf, fn=fn_conf, n_gt=n_gt_total,
        n_det=int(sum(len(d.scores) for d in detections)), images=len(truths),
        conf_threshold=float(conf_threshold), interpolation=interp.value, max_recall=max_recall,
        curves=curves,
    )


def match_image(
    boxes: np.ndarray, scores: np.ndarray, gt_boxes: np.ndarray, *,
    gt_ignore: np.ndarray | None = None, iou_thresholds: Sequence[float] = (0.5,),
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy COCO matching of one image and class.

    boxes ``[N, 4]``, scores ``[N]``: detections. gt_boxes ``[G, 4]``; gt_ignore ``[G]`` bool
    (default none ignored). Returns ``(tp, valid)``, both bool ``[N, T]``: detection n is a
    true positive at threshold t; ``valid`` is False where it matched an ignored box at that
    threshold, so it counts neither way.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    ious_t = np.asarray(iou_thresholds, np.float64)
    n, g = len(boxes), len(gt_boxes)
    ignore = np.zeros(g, bool) if gt_ignore is None else np.asarray(gt_ignore, bool)
    tp = np.zeros((n, len(ious_t)), bool)
    ignored_match = np.zeros((n, len(ious_t)), bool)
    if n == 0 or g == 0:
        return tp, np.ones((n, len(ious_t)), bool)
    iou = box_iou(boxes, gt_boxes)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    # COCO: prefer non-ignored ground truth: sort gt so ignored ones come last
    gt_order = np.argsort(ignore, kind="stable")
    iou, ignore = iou[:, gt_order], ignore[gt_order]
    for k, t in enumerate(ious_t):
        match = _greedy_match(iou, order, ignore, float(t))
        hit = match >= 0
        ignored_match[hit, k] = ignore[match[hit]]
        tp[hit, k] = ~ignore[match[hit]]
    return tp, ~ignored_match


def _greedy_match(iou: np.ndarray, order: np.ndarray, ignore: np.ndarray, t: float
                  ) -> np.ndarray:
    """COCO's greedy assignment at IoU ``t``: ground-truth index per detection, -1 for none.
    ``iou`` is ``[N, G]`` with ignored ground truth sorted last; ``order`` the detections by
    decreasing score."""
    g = iou.shape[1]
    taken = np.zeros(g, bool)
    match = np.full(iou.shape[0], -1, np.int64)
    for d in order:
        best, best_iou = -1, min(t, 1 - 1e-10)
        for j in range(g):
            if taken[j]:
                continue
            if best > -1 and not ignore[best] and ignore[j]:
                break  # a real match beats any ignored one
            if iou[d, j] < best_iou:
                continue
            best, best_iou = j, iou[d, j]
        if best > -1:
            taken[best] = True
            match[d] = best
    return match


def threshold_matches(det: ImageDetections, gt: ImageTruth, *, conf_threshold: float,
                      iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """COCO's greedy matching of one image at one score and IoU threshold, class by class.

    Returns ``(det_ok, gt_found)``: bool per detection with ``scores >= conf_threshold`` (in
    index order; True when it matched a box, an ignored one included, i.e. it is no false
    alarm) and per ground-truth box (ignored boxes count as found).
    """
    kept = np.flatnonzero(det.scores >= conf_threshold)
    det_ok = np.zeros(len(det.scores), bool)
    found = gt.ignore.copy()
    for c in np.unique(gt.classes):
        gm = np.flatnonzero(gt.classes == c)
        dm = kept[det.classes[kept] == c]
        if not len(dm):
            continue
        gt_order = gm[np.argsort(gt.ignore[gm], kind="stable")]
        match = _greedy_match(box_iou(det.boxes[dm], gt.boxes[gt_order]),
                              np.argsort(-det.scores[dm], kind="stable"),
                              gt.ignore[gt_order], iou_threshold)
        det_ok[dm] = match >= 0
        found[gt_order[match[match >= 0]]] = True
    return det_ok[kept], found


#: Upper edges (px, longest box side) of the size bins of :func:`recall_by_size`.
SIZE_BINS: tuple[float, ...] = (16.0, 32.0, 64.0, 128.0, float("inf"))


def recall_by_size(
    detections: Sequence[ImageDetections], truths: Sequence[ImageTruth], *,
    conf_threshold: float = 0.25, iou_threshold: float = 0.5,
    edges: Sequence[float] = SIZE_BINS,
) -> dict[str, dict[str, float]]:
    """Recall at ``conf_threshold`` and ``iou_threshold`` per bin of the ground truth's longest
    side (pixels), all classes pooled: where in the size range a detector loses its objects.

    Returns ``{"<16": {"n": 12, "recall": 0.75}, "16-32": ..., ">=128": ...}`` (bins from
    ``edges``; ignored boxes left out; an empty bin has recall NaN).
    """
    lows = [0.0, *edges[:-1]]
    names = [f"<{hi:g}" if lo == 0 else (f">={lo:g}" if np.isinf(hi) else f"{lo:g}-{hi:g}")
             for lo, hi in zip(lows, edges, strict=True)]
    hits = np.zeros(len(edges))
    counts = np.zeros(len(edges))
    for det, gt in zip(detections, truths, strict=True):
        side = np.maximum(np.abs(gt.boxes[:, 2] - gt.boxes[:, 0]),
                          np.abs(gt.boxes[:, 3] - gt.boxes[:, 1]))
        _, found = threshold_matches(det, gt, conf_threshold=conf_threshold,
                                     iou_threshold=iou_threshold)
        real = ~gt.ignore
        b = np.searchsorted(np.asarray(edges), side[real], side="right")
        np.add.at(counts, b, 1)
        np.add.at(hits, b, found[real])
    return {n: {"n": int(k), "recall": float(h / k) if k else float("nan")}
            for n, k, h in zip(names, counts, hits, strict=True)}


def average_precision(
    tp: np.ndarray, scores: np.ndarray, n_gt: int, *,
    interpolation: Interpolation | str = "coco101",
) -> tuple[float, PRCurve]:
    """AP of one class from pooled detections: ``tp`` bool ``[N]``, ``scores`` ``[N]``.

    n_gt: number of (non-ignored) ground-truth boxes. Returns the AP and the raw PR curve
    (NaN AP when ``n_gt`` is 0).

    >>> ap, _ = average_precision(np.array([True, False, True]), np.array([.9, .8, .7]), 2,
    ...                           interpolation="all_point")
    >>> round(ap, 4)
    0.8333
    """
    interp = Interpolation(interpolation)
    tp = np.asarray(tp, bool).reshape(-1)
    scores = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(-scores, kind="mergesort")
    tp, scores = tp[order], scores[order]
    ctp = np.cumsum(tp)
    cfp = np.cumsum(~tp)
    recall = ctp / n_gt if n_gt else np.zeros(len(tp))
    precision = ctp / np.maximum(ctp + cfp, 1)
    curve = PRCurve(recall=recall, precision=precision, scores=scores)
    if n_gt == 0:
        return float("nan"), curve
    if len(tp) == 0:
        return 0.0, curve
    if interp is Interpolation.ULTRALYTICS:
        return _ultralytics_ap(recall, precision), curve
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    if interp is Interpolation.COCO101:
        points = np.linspace(0.0, 1.0, 101)
        idx = np.searchsorted(recall, points, side="left")
        sampled = np.where(idx < len(envelope), envelope[np.minimum(idx, len(envelope) - 1)], 0.0)
        return float(sampled.mean()), curve
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float((steps * envelope).sum()), curve


def save_pr_curve(report: APReport, path: Path | str, *, title: str = "") -> Path:
    """Draw the IoU-0.5 precision-recall curve of every class to a PNG.

    Uses matplotlib when installed, else a plain pillow drawing (the runtime must not require
    matplotlib). Written atomically to exactly ``path`` (matplotlib would append ``.png`` to
    a name without a suffix).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    label = title or f"AP50 {report.ap50:.3f}  AP50-95 {report.ap50_95:.3f}"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _save_pr_curve_pillow(report, path, label)
        return path
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=120)
    for c, curve in sorted(report.curves.items()):
        r = np.concatenate([[0.0], curve.recall])
        p = np.concatenate([[1.0], np.maximum.accumulate(curve.precision[::-1])[::-1]])
        ax.plot(r, p, label=f"class {c}: AP50 {report.ap50_per_class[c]:.3f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=label)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    with atomic_open(path, binary=True) as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
    return path


@dataclass
class ImageDetections:
    """Predictions of one image: boxes ``[N, 4]`` (corners), scores ``[N]``, classes ``[N]``."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, np.float64).reshape(-1)
        self.classes = np.asarray(self.classes, np.int64).reshape(-1)
        if not len(self.boxes) == len(self.scores) == len(self.classes):
            raise ValueError("boxes, scores and classes differ in length")


@dataclass
class ImageTruth:
    """Ground truth of one image: boxes ``[G, 4]``, classes ``[G]``, ignore ``[G]`` (VOC
    difficult; default none)."""

    boxes: np.ndarray
    classes: np.ndarray
    ignore: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        self.classes = np.asarray(self.classes, np.int64).reshape(-1)
        self.ignore = (np.zeros(len(self.boxes), bool) if self.ignore is None
                       else np.asarray(self.ignore, bool).reshape(-1))
        if not len(self.boxes) == len(self.classes) == len(self.ignore):
            raise ValueError("boxes, classes and ignore differ in length")


@dataclass
class PRCurve:
    """Raw precision-recall points of one class, in decreasing score order."""

    recall: np.ndarray
    precision: np.ndarray
    scores: np.ndarray


@dataclass
class APReport:
    """Result of :func:`evaluate_ap`.

    ap50, ap50_95: mean over classes with ground truth. ap_per_iou: mean AP per IoU threshold.
    ap50_per_class: NaN for classes without ground truth. precision, recall, f1, tp, fp, fn: at
    ``conf_threshold`` and IoU 0.5. n_gt: ground-truth boxes (ignored ones excluded). n_det: all
    detections given. max_recall: IoU-0.5 recall of all detections given (mean over classes with
    ground truth); AP50 cannot exceed it, so it splits a low AP50 into boxes never found and
    boxes found but out-ranked by false alarms. curves: IoU-0.5 PR curve per class.
    """

    ap50: float
    ap50_95: float
    ap_per_iou: dict[float, float]
    ap50_per_class: dict[int, float]
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    n_gt: int
    n_det: int
    images: int
    conf_threshold: float
    interpolation: str
    max_recall: float = float("nan")
    curves: dict[int, PRCurve] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, object]:
        """JSON-able summary (no curves)."""
        return {k: v for k, v in self.__dict__.items() if k != "curves"}


class Interpolation(str, Enum):
    """How the precision envelope is integrated over recall."""

    #: COCO: mean of the envelope at recall 0, 0.01, ..., 1.
    COCO101 = "coco101"
    #: VOC 2010+: area under the envelope at every recall step.
    ALL_POINT = "all_point"
    #: ultralytics' ``compute_ap`` ("interp"): the envelope, with end points (0, 1) and
    #: (1, 0) added, linearly interpolated at recall 0, 0.01, ..., 1 and integrated by the
    #: trapezoid rule. Why it is here: the YOLOv8-class SSDD figures a model is compared with
    #: (docs/references.md §10) are computed this way. It credits a triangle beyond the highest
    #: recall reached (a detector whose recall stops short of 1 scores more than with ``coco101``),
    #: loses a little on each drop of the envelope, and gives a perfect detector 0.995.
    ULTRALYTICS = "ultralytics"


def _ultralytics_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """AP as ultralytics' ``compute_ap`` with its default ``"interp"`` method computes it."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    x = np.linspace(0.0, 1.0, 101)
    y = np.interp(x, mrec, mpre)
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)  # np.trapz, on numpy 1.x and 2.x


def _save_pr_curve_pillow(report: APReport, path: Path, label: str) -> None:
    """Minimal PR plot with pillow: axes, grid, one polyline per class."""
    from PIL import Image, ImageDraw

    w, h, m = 600, 540, 60
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = m, m // 2, w - m // 2, h - m

    def xy(r: float, p: float) -> tuple[float, float]:
        return x0 + r * (x1 - x0), y1 - p * (y1 - y0)

    for t in np.linspace(0, 1, 6):
        draw.line([xy(t, 0), xy(t, 1)], fill=(225, 225, 225))
        draw.line([xy(0, t), xy(1, t)], fill=(225, 225, 225))
        draw.text((xy(t, 0)[0] - 8, y1 + 6), f"{t:.1f}", fill="black")
        draw.text((x0 - 30, xy(0, t)[1] - 6), f"{t:.1f}", fill="black")
    draw.rectangle([x0, y0, x1, y1], outline="black")
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
    for i, (c, curve) in enumerate(sorted(report.curves.items())):
        r = np.concatenate([[0.0], curve.recall])
        p = np.concatenate([[1.0], np.maximum.accumulate(curve.precision[::-1])[::-1]])
        colour = colours[i % len(colours)]
        draw.line([xy(a, b) for a, b in zip(r, p, strict=True)], fill=colour, width=2)
        draw.text((x0 + 10, y1 - 20 - 14 * i),
                  f"class {c}: AP50 {report.ap50_per_class[c]:.3f}", fill=colour)
    draw.text((x0, 8), label, fill="black")
    draw.text(((x0 + x1) // 2 - 20, h - 24), "recall", fill="black")
    draw.text((4, y0), "precision", fill="black")
    with atomic_open(path, binary=True) as fh:
        img.save(fh, format="PNG")
