#!/usr/bin/env python
"""Where a model's SSDD AP50 is lost: recall ceiling, misses near and far from any detection,
the ships never found by their short side and by the distance to the nearest other ship, and
false alarms by score. Runs the same evaluation as ``sarvessel eval``. Example:

    python scripts/miss_analysis.py models/ssdd_w4a4/ssdd_w4a4.onnx --split test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from sarvessel.runtime.evaluate import evaluate
from sarvessel.runtime.nms import box_iou

#: Bin edges of the breakdowns (px): short box side, and distance between ship centres (at
#: stride 8, two ships closer than 2 cells compete for the same anchors).
SHORT_BINS = (8, 12, 16, 24)
GAP_BINS = (16, 24, 40)


def _short_sides(boxes: np.ndarray) -> np.ndarray:
    """Shorter side of each x1y1x2y2 box."""
    return np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def _neighbour_gaps(boxes: np.ndarray) -> np.ndarray:
    """Distance from each box centre to the nearest other box centre of the image (inf: alone)."""
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    d = np.hypot(*(c[:, None] - c[None]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    return d.min(1, initial=np.inf)


def _breakdown(title: str, values: np.ndarray, missed: np.ndarray, edges: tuple) -> None:
    """Print ships and misses per bin of ``values`` (the last bin is open: it holds inf)."""
    names = [f"<{edges[0]}", *(f"{lo}-{hi}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)),
             f">={edges[-1]}"]
    bins = np.searchsorted(edges, values, side="right")
    cells = [f"{name}: {missed[bins == k].sum()}/{(bins == k).sum()}"
             for k, name in enumerate(names)]
    print(f"{title}: " + ", ".join(cells))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--conf", type=float, default=0.25, help="operating threshold")
    args = ap.parse_args()
    res = evaluate(args.model, "ssdd", split=args.split, threads=1)
    best_score, best_iou, alarms, short, gap = [], [], [], [], []
    for det, truth in zip(res.detections, res.truths, strict=True):
        short += list(_short_sides(truth.boxes))
        gap += list(_neighbour_gaps(truth.boxes))
        iou = box_iou(truth.boxes, det.boxes)  # [ships, detections]
        sure = det.scores >= args.conf
        for o in iou:
            hit = o >= 0.5
            best_score.append(det.scores[hit].max() if hit.any() else 0.0)
            best_iou.append(o[sure].max() if sure.any() else 0.0)
        nearest = iou.max(0) if len(truth.boxes) else np.zeros(len(det.scores))
        alarms += zip(det.scores, nearest, strict=True)
    s, b, a = np.array(best_score), np.array(best_iou), np.array(alarms).reshape(-1, 2)
    print(f"{len(s)} ships; recall at IoU 0.5 with a detection scoring >= ...")
    for th in (0.001, 0.01, 0.1, args.conf, 0.5):
        print(f"  {th:g}: {(s >= th).mean():.3f}")
    miss = s < args.conf
    print(f"misses at {args.conf:g}: {miss.sum()}; nearest detection scoring >= {args.conf:g} at "
          f"IoU 0.3-0.5: {(miss & (b >= 0.3)).sum()}, IoU < 0.1: {(miss & (b < 0.1)).sum()}")
    never = s < 1e-3  # no detection at IoU 0.5 scoring 0.001 or more
    _breakdown("never found, by short side (px)", np.array(short), never, SHORT_BINS)
    _breakdown("never found, by centre distance to the nearest other ship (px)", np.array(gap),
               never, GAP_BINS)
    fp = a[a[:, 1] < 0.5]
    for th in (0.9, 0.7, 0.5, args.conf):
        print(f"detections >= {th:g}: {(a[:, 0] >= th).sum()}, false alarms (IoU < 0.5 to every "
              f"ship): {(fp[:, 0] >= th).sum()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
