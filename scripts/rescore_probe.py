#!/usr/bin/env python
"""Would a second-stage rescorer on the CPU lift a model's SSDD AP50? A probe, not a runtime part.

For every detection the model makes (``sarvessel eval``'s path: onnxruntime, score 0.001 or
more), it measures the image around the box: box size and shape, the mean, spread and peak
inside the box, the ring around it and windows of 32, 96 and 192 px, how many confident
detections are near, and its overlap with a higher-scoring one. A gradient-boosted classifier
(scikit-learn's HistGradientBoostingClassifier) learns from those and the model's own score
which detections are ships (a true positive at IoU 0.5), and the detections are ranked by
``p**alpha * score**(1 - alpha)``. The training split is scored by cross-fitting (each fold of
images rescored by a classifier fitted on the other folds, so no image scores itself); the test
split by a classifier fitted on the whole training split. Example:

    python scripts/rescore_probe.py models/ssdd_w4a4/ssdd_w4a4.onnx --json out/rescore.json

``--local-only`` leaves out the features of the whole image (its mean and spread, size, the
detection's rank and distance to the border), which a per-tile runtime stage could not see.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from sarvessel.runtime.ap import ImageDetections, evaluate_ap, match_image
from sarvessel.runtime.datasets import load_image_grey
from sarvessel.runtime.evaluate import EvalResult, evaluate
from sarvessel.runtime.nms import box_iou

#: Half-sides (px) of the context windows around each detection's centre.
WINDOWS = (16, 48, 96)
#: Feature columns that describe the whole image rather than the detection's surroundings.
GLOBAL = ("image_mean", "image_std", "rank", "border_px", "image_w", "image_h")


def detection_features(grey: np.ndarray, det: ImageDetections) -> tuple[np.ndarray, list[str]]:
    """Features ``[N, F]`` of the detections ``det`` (x1, y1, x2, y2 boxes) of one image."""
    g = grey.astype(np.float32)
    h_img, w_img = g.shape
    iou = box_iou(det.boxes, det.boxes)
    order = np.argsort(-det.scores, kind="stable")
    rank = np.empty(len(order))
    rank[order] = np.arange(len(order))
    centres = (det.boxes[:, :2] + det.boxes[:, 2:]) / 2
    rows, names = [], []
    for k, ((x1, y1, x2, y2), s) in enumerate(zip(det.boxes, det.scores, strict=True)):
        w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
        inside = g[max(int(y1), 0):max(int(np.ceil(y2)), int(y1) + 1),
                   max(int(x1), 0):max(int(np.ceil(x2)), int(x1) + 1)]
        if inside.size == 0:
            inside = np.zeros(1, np.float32)
        outer = g[max(int(y1 - h), 0):min(int(y2 + h) + 1, h_img),
                  max(int(x1 - w), 0):min(int(x2 + w) + 1, w_img)]
        n_ring = max(outer.size - inside.size, 1)
        ring_mean = (outer.sum() - inside.sum()) / n_ring
        sq = float((outer.astype(np.float64) ** 2).sum() - (inside.astype(np.float64) ** 2).sum())
        ring_std = np.sqrt(max(sq / n_ring - ring_mean**2, 0.0))
        cx, cy = centres[k]
        f = {"logit": np.log(s / (1 - s + 1e-9) + 1e-9), "log_w": np.log(w), "log_h": np.log(h),
             "log_aspect": np.log(w / h), "in_mean": inside.mean(), "in_std": inside.std(),
             "in_max": inside.max(), "ring_mean": ring_mean, "ring_std": ring_std,
             "contrast": inside.mean() - ring_mean}
        for r in WINDOWS:
            win = g[max(int(cy) - r, 0):int(cy) + r, max(int(cx) - r, 0):int(cx) + r]
            f |= {f"w{r}_mean": win.mean(), f"w{r}_std": win.std(),
                  f"w{r}_p90": np.percentile(win, 90), f"w{r}_bright": (win > 60).mean()}
        higher = iou[k][det.scores > s]
        f |= {"near_confident": int(((np.hypot(*(centres - [cx, cy]).T) < 40)
                                     & (det.scores > 0.1)).sum()),
              "iou_with_higher": higher.max() if higher.size else 0.0,
              "image_mean": g.mean(), "image_std": g.std(), "rank": rank[k],
              "border_px": min(cx, w_img - cx, cy, h_img - cy), "image_w": w_img,
              "image_h": h_img}
        rows.append(list(f.values()))
        names = list(f)
    return np.asarray(rows, np.float64).reshape(len(rows), -1), names


def table(res: EvalResult) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Features, true-positive flags and image index of every detection of ``res``."""
    xs, ys, img, names = [], [], [], []
    for i, (det, truth, path) in enumerate(zip(res.detections, res.truths, res.paths,
                                               strict=True)):
        if not len(det.scores):
            continue
        x, names = detection_features(load_image_grey(path), det)
        tp, _ = match_image(det.boxes, det.scores, truth.boxes, gt_ignore=truth.ignore)
        xs.append(x)
        ys.append(tp[:, 0])
        img.append(np.full(len(x), i))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(img), names


def rescored_ap50(res: EvalResult, img: np.ndarray, scores: np.ndarray) -> float:
    dets = [ImageDetections(d.boxes, scores[img == i], d.classes) if len(d.scores) else d
            for i, d in enumerate(res.detections)]
    return evaluate_ap(dets, res.truths, nc=1).ap50


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="exported ONNX model (with its sidecar)")
    ap.add_argument("--folds", type=int, default=5, help="cross-fitting folds on train")
    ap.add_argument("--alpha", type=float, nargs="+", default=[1.0, 0.75, 0.5])
    ap.add_argument("--local-only", action="store_true", help="leave out " + ", ".join(GLOBAL))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    from sklearn.ensemble import HistGradientBoostingClassifier

    def classifier() -> HistGradientBoostingClassifier:
        return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05,
                                              max_leaf_nodes=15, min_samples_leaf=40,
                                              l2_regularization=1.0, random_state=0)

    runs = {s: evaluate(args.model, "ssdd", split=s, threads=args.threads)
            for s in ("train", "test")}
    (x_tr, y_tr, i_tr, names), (x_te, _, i_te, _) = table(runs["train"]), table(runs["test"])
    keep = [k for k, n in enumerate(names) if not (args.local_only and n in GLOBAL)]
    x_tr, x_te = x_tr[:, keep], x_te[:, keep]
    folds = i_tr % args.folds
    p_tr = np.zeros(len(y_tr))
    for f in range(args.folds):
        fit = classifier().fit(x_tr[folds != f], y_tr[folds != f])
        p_tr[folds == f] = fit.predict_proba(x_tr[folds == f])[:, 1]
    p_te = classifier().fit(x_tr, y_tr).predict_proba(x_te)[:, 1]
    s_tr, s_te = 1 / (1 + np.exp(-x_tr[:, 0])), 1 / (1 + np.exp(-x_te[:, 0]))
    out = {"model": str(args.model), "features": [names[k] for k in keep],
           "detections": {"train": len(y_tr), "test": len(x_te)},
           "base": {"train": runs["train"].report.ap50, "test": runs["test"].report.ap50},
           "rescored": {}}
    print(f"{args.model}: AP50 train {out['base']['train']:.4f}, test {out['base']['test']:.4f}")
    for a in args.alpha:
        r = {"train_crossfit": rescored_ap50(runs["train"], i_tr, p_tr**a * s_tr ** (1 - a)),
             "test": rescored_ap50(runs["test"], i_te, p_te**a * s_te ** (1 - a))}
        out["rescored"][str(a)] = r
        print(f"  rescored, alpha {a}: train (cross-fitted) {r['train_crossfit']:.4f}, "
              f"test {r['test']:.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
