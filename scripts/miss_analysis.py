#!/usr/bin/env python
"""Where a model's SSDD AP50 is lost: recall ceiling, misses near and far from any detection,
the ships never found by their short side and by the distance to the nearest other ship,
false alarms by score, and the AP50 budget: what AP50 would be with no false alarm next to a
ship (a duplicate of a found ship, or a ship boxed badly at IoU 0.1-0.5), none on clutter
(IoU < 0.1), or none at all (the recall ceiling's AP50). Runs the same evaluation as
``sarvessel eval``. Example:

    python scripts/miss_analysis.py models/ssdd_w4a4/ssdd_w4a4.onnx --split test

``--versus OTHER.onnx`` also counts the never-found ships the two models share (are the misses
this model's, or the data's?), and ``--crops PNG`` draws a crop around each never-found ship
(the shared ones with ``--versus``): labels in green, the model's detections scoring 0.05 or
more in red.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from sarvessel.evaluation.ap import ImageDetections, evaluate_ap, match_image
from sarvessel.evaluation.evaluate import evaluate
from sarvessel.runtime.post.nms import box_iou

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


#: A ship with no detection at IoU 0.5 scoring this much is "never found" (below the ceiling).
NEVER_SCORE = 1e-3


def _hit_scores(iou: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per ship (row of ``iou``), the highest score of a detection at IoU >= 0.5 (0: none)."""
    return np.where(iou >= 0.5, scores[None], 0.0).max(1, initial=0.0)


def never_found(res) -> list[tuple[int, int]]:
    """(image, ship) of each ship with no detection at IoU 0.5 scoring ``NEVER_SCORE``."""
    return [(i, j) for i, (det, truth) in enumerate(zip(res.detections, res.truths, strict=True))
            for j in np.flatnonzero(_hit_scores(box_iou(truth.boxes, det.boxes), det.scores)
                                    < NEVER_SCORE).tolist()]


#: False-alarm kinds of the AP50 budget, by the IoU of the alarm's box with its nearest ship.
#: A duplicate overlaps a ship that a higher-scoring detection already matched.
ALARM_KINDS = {"duplicates (IoU >= 0.5)": (0.5, np.inf),
               "next to a ship (IoU 0.1-0.5)": (0.1, 0.5), "on clutter (IoU < 0.1)": (0.0, 0.1),
               "of any kind": (0.0, np.inf)}


def ap50_without(res, marks: list[tuple[np.ndarray, np.ndarray]], lo: float, hi: float
                 ) -> float:
    """AP50 of ``res`` with every false alarm whose IoU with its nearest ship is in [lo, hi)
    removed: an oracle that says how much AP50 such alarms cost. ``marks``: per image, whether
    each detection matches a ship at IoU 0.5 (AP50's own matching) and its IoU with the nearest
    ship."""
    kept = []
    for det, (tp, near) in zip(res.detections, marks, strict=True):
        k = tp | (near < lo) | (near >= hi)
        kept.append(ImageDetections(det.boxes[k], det.scores[k], det.classes[k]))
    return evaluate_ap(kept, res.truths, nc=1, iou_thresholds=(0.5,)).ap50


def save_crops(res, ships: list[tuple[int, int]], out: Path, *, panel: int = 160,
               columns: int = 6) -> Path:
    """A PNG grid of square crops, each centred on one ship of ``ships`` (1.5x its longest
    side, at least 96 px), with every label (green) and detection >= 0.05 (red) drawn."""
    from PIL import Image, ImageDraw

    from sarvessel.evaluation.datasets import load_image_grey

    rows = max(1, -(-len(ships) // columns))
    sheet = Image.new("RGB", (columns * panel, rows * (panel + 16)), (24, 24, 24))
    images: dict[int, Image.Image] = {}  # several never-found ships may share an image
    for k, (i, j) in enumerate(ships):
        box = res.truths[i].boxes[j]
        c = (box[:2] + box[2:]) / 2
        half = max(48.0, 0.75 * float((box[2:] - box[:2]).max()))
        x0, y0 = c - half
        scale = panel / (2 * half)
        if i not in images:
            images[i] = Image.fromarray(load_image_grey(res.paths[i]))
        img = images[i].crop((int(x0), int(y0), int(x0 + 2 * half),
                              int(y0 + 2 * half))).resize((panel, panel)).convert("RGB")
        draw = ImageDraw.Draw(img)
        det, shift = res.detections[i], np.array([x0, y0, x0, y0])
        for b in (det.boxes[det.scores >= 0.05] - shift) * scale:
            draw.rectangle(tuple(b.tolist()), outline=(255, 60, 60))
        for m, b in enumerate((res.truths[i].boxes - shift) * scale):
            draw.rectangle(tuple(b.tolist()), outline=(60, 220, 90), width=2 if m == j else 1)
        x, y = (k % columns) * panel, (k // columns) * (panel + 16)
        sheet.paste(img, (x, y + 16))
        w, h = box[2:] - box[:2]
        ImageDraw.Draw(sheet).text((x + 3, y + 2), f"{Path(res.paths[i]).stem} {w:.0f}x{h:.0f}",
                                   fill=(230, 230, 230))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


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
    ap.add_argument("--versus", type=Path, default=None, metavar="ONNX",
                    help="another model: count the never-found ships both share")
    ap.add_argument("--crops", type=Path, default=None, metavar="PNG",
                    help="draw the never-found ships (the shared ones with --versus)")
    args = ap.parse_args()
    res = evaluate(args.model, "ssdd", split=args.split, threads=1)
    keys, best_score, best_iou, alarms, short, gap, marks = [], [], [], [], [], [], []
    for i, (det, truth) in enumerate(zip(res.detections, res.truths, strict=True)):
        keys += [(i, j) for j in range(len(truth.boxes))]
        short += list(_short_sides(truth.boxes))
        gap += list(_neighbour_gaps(truth.boxes))
        iou = box_iou(truth.boxes, det.boxes)  # [ships, detections]
        best_score += list(_hit_scores(iou, det.scores))
        sure = det.scores >= args.conf
        best_iou += [o[sure].max() if sure.any() else 0.0 for o in iou]
        nearest = iou.max(0) if len(truth.boxes) else np.zeros(len(det.scores))
        alarms += zip(det.scores, nearest, strict=True)
        tp, _ = match_image(det.boxes, det.scores, truth.boxes, gt_ignore=truth.ignore,
                            iou_thresholds=(0.5,))
        marks.append((tp[:, 0], nearest))
    s, b, a = np.array(best_score), np.array(best_iou), np.array(alarms).reshape(-1, 2)
    print(f"{len(s)} ships; recall at IoU 0.5 with a detection scoring >= ...")
    for th in (0.001, 0.01, 0.1, args.conf, 0.5):
        print(f"  {th:g}: {(s >= th).mean():.3f}")
    miss = s < args.conf
    print(f"misses at {args.conf:g}: {miss.sum()}; nearest detection scoring >= {args.conf:g} at "
          f"IoU 0.3-0.5: {(miss & (b >= 0.3)).sum()}, IoU < 0.1: {(miss & (b < 0.1)).sum()}")
    never = s < NEVER_SCORE
    _breakdown("never found, by short side (px)", np.array(short), never, SHORT_BINS)
    _breakdown("never found, by centre distance to the nearest other ship (px)", np.array(gap),
               never, GAP_BINS)
    fp = a[a[:, 1] < 0.5]
    for th in (0.9, 0.7, 0.5, args.conf):
        print(f"detections >= {th:g}: {(a[:, 0] >= th).sum()}, false alarms (IoU < 0.5 to every "
              f"ship): {(fp[:, 0] >= th).sum()}")
    budget = [f"{kind}: {ap50_without(res, marks, lo, hi):.4f}"
              for kind, (lo, hi) in ALARM_KINDS.items()]
    print(f"AP50 {res.report.ap50:.4f}; with no false alarm " + ", ".join(budget))
    ships = [k for k, n in zip(keys, never, strict=True) if n]
    if args.versus is not None:
        other = set(never_found(evaluate(args.versus, "ssdd", split=args.split, threads=1)))
        ships = [s for s in ships if s in other]
        print(f"never found by both: {len(ships)} (this model {int(never.sum())}, "
              f"{args.versus} {len(other)})")
    if args.crops is not None:
        print(f"crops of {len(ships)} ships: {save_crops(res, ships, args.crops)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
