#!/usr/bin/env python
"""Where a model's SSDD AP50 is lost: recall ceiling, misses near and far from any detection,
and false alarms by score. Runs the same evaluation as ``sarvessel eval``. Example:

    python scripts/miss_analysis.py models/ssdd_w4a4/ssdd_w4a4.onnx --split test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from sarvessel.runtime.evaluate import evaluate


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x1y1x2y2 box with many."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    return inter / (area + np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) - inter)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--conf", type=float, default=0.25, help="operating threshold")
    args = ap.parse_args()
    res = evaluate(args.model, "ssdd", split=args.split, threads=1)
    best_score, best_iou, alarms = [], [], []
    for det, truth in zip(res.detections, res.truths, strict=True):
        for gt in truth.boxes:
            o = _iou(gt, det.boxes) if len(det.boxes) else np.zeros(0)
            hit = o >= 0.5
            best_score.append(det.scores[hit].max() if hit.any() else 0.0)
            sure = det.scores >= args.conf
            best_iou.append(o[sure].max() if sure.any() else 0.0)
        for score, box in zip(det.scores, det.boxes, strict=True):
            o = _iou(box, truth.boxes) if len(truth.boxes) else np.zeros(1)
            alarms.append((score, o.max()))
    s, b, a = np.array(best_score), np.array(best_iou), np.array(alarms).reshape(-1, 2)
    print(f"{len(s)} ships; recall at IoU 0.5 with a detection scoring >= ...")
    for th in (0.001, 0.01, 0.1, args.conf, 0.5):
        print(f"  {th:g}: {(s >= th).mean():.3f}")
    miss = s < args.conf
    print(f"misses at {args.conf:g}: {miss.sum()}; nearest detection scoring >= {args.conf:g} at "
          f"IoU 0.3-0.5: {(miss & (b >= 0.3)).sum()}, IoU < 0.1: {(miss & (b < 0.1)).sum()}")
    fp = a[a[:, 1] < 0.5]
    for th in (0.9, 0.7, 0.5, args.conf):
        print(f"detections >= {th:g}: {(a[:, 0] >= th).sum()}, false alarms (IoU < 0.5 to every "
              f"ship): {(fp[:, 0] >= th).sum()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
