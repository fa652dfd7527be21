#!/usr/bin/env python
"""The power governor through the real scene pipeline on a host without a power sensor: a
scripted sensor on the system clock (idle W, plus busy W while the backend runs a batch), the
scene run once without and once with a budget; prints both energy reports (the ``power`` entry
of each ``_summary.json``) and leaves the power-trace PNGs.

    python scripts/power_demo.py SCENE --out out/power_demo --budget 6 --window 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sarvessel.runtime.detect import detect_scene
from sarvessel.runtime.detector import make_detector
from sarvessel.runtime.power import Activity, PowerGovernor, ScriptedSensor, SystemClock


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scene", type=Path, help="xView3 scene folder or GeoTIFF")
    ap.add_argument("--out", type=Path, default=Path("out/power_demo"), help="output folder")
    ap.add_argument("--idle", type=float, default=4.8, help="idle draw, W (default 4.8)")
    ap.add_argument("--busy", type=float, default=3.0, help="extra draw while busy, W "
                    "(default 3)")
    ap.add_argument("--budget", type=float, default=6.0, help="budget, W (default 6)")
    ap.add_argument("--window", type=float, default=2.0, help="window, s (default 2)")
    args = ap.parse_args(argv)
    clock = SystemClock()
    act = Activity(clock)
    sensor = ScriptedSensor(args.idle, args.busy, activity=act, clock=clock)
    for budget in (None, args.budget):
        gov = PowerGovernor(sensor, budget, args.window, activity=act, sampler_thread=True)
        with gov:
            res, paths = detect_scene(args.scene, make_detector("auto"),
                                      out_dir=args.out / ("budget" if budget else "free"),
                                      governor=gov)
        print(f"{'budget' if budget else 'free'}: {res.power.summary_line()}")
        print(json.dumps(json.loads(paths["json"].read_text())["power"], indent=1,
                         allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
