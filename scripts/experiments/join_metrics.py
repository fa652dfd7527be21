#!/usr/bin/env python
"""Join the metrics of consecutive training stages into one CSV and one training curve.

A shipped model is often trained in stages (a float run, warm restarts that ``--init`` from it,
then QAT), each run numbering its epochs from 0. This writes the stages as one history, in the
order given, and re-plots the curve, e.g. the float twin's:

    python scripts/join_metrics.py runs/ssdd_float_v5/metrics.csv runs/ssdd_float_v7a/metrics.csv \
        runs/ssdd_float_v8/metrics.csv --out models/ssdd_float/metrics.csv \
        --png models/ssdd_float/training_curve.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sarvessel.model.curves import join_metrics, plot_curves
from sarvessel.runtime.errors import SarvesselError


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stages", type=Path, nargs="+", help="metrics.csv of each stage, in order")
    ap.add_argument("--out", type=Path, required=True, help="joined CSV")
    ap.add_argument("--png", type=Path, default=None, help="training curve of the joined CSV")
    args = ap.parse_args()
    for s in args.stages:
        if not s.is_file():
            ap.error(f"{s}: metrics CSV not found")
    try:
        n = join_metrics(args.stages, args.out)
    except SarvesselError as e:
        ap.error(str(e))
    if args.png is not None:
        plot_curves(args.out, args.png)
    print(f"{args.out}: {n} epochs from {len(args.stages)} stages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
