#!/usr/bin/env python
"""List the images a model gets wrong (a missed ship or a false alarm at the operating
threshold) for ``sarvessel train --oversample``. Runs the same evaluation as ``sarvessel eval``;
choose them on the training split, never on test. Example:

    python scripts/hard_images.py models/ssdd_float/ssdd_float.onnx --split train --out hard.txt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sarvessel.evaluation.ap import threshold_matches
from sarvessel.evaluation.evaluate import evaluate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", default="ssdd", help="ssdd or a dataset folder (default ssdd)")
    ap.add_argument("--split", default="train")
    ap.add_argument("--conf", type=float, default=0.25, help="operating threshold")
    ap.add_argument("--min-errors", type=int, default=1, help="misses + false alarms to list")
    ap.add_argument("--out", type=Path, required=True, help="text file of image ids")
    args = ap.parse_args()
    res = evaluate(args.model, args.data, split=args.split, threads=2)
    lines, misses, alarms = [], 0, 0
    for path, det, truth in zip(res.paths, res.detections, res.truths, strict=True):
        ok, found = threshold_matches(det, truth, conf_threshold=args.conf)
        fn, fp = int((~found).sum()), int((~ok).sum())
        misses, alarms = misses + fn, alarms + fp
        if fn + fp >= args.min_errors:
            lines.append(f"{path.stem}  # {fn} missed, {fp} false alarms")
    args.out.write_text(f"# {args.model} on {args.data}/{args.split} at conf {args.conf:g}\n"
                        + "\n".join(lines) + "\n")
    print(f"{len(lines)} of {len(res.paths)} images with >= {args.min_errors} errors "
          f"({misses} missed ships, {alarms} false alarms in all) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
