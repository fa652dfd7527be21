#!/usr/bin/env python
"""xView3 score of detectors on held-out generated scenes (the scene-model acceptance figure).

Generates (or reuses) synthetic xView3 scenes with seeds disjoint from any training seed, runs
each backend over all of them through the same streaming pipeline users run, writes one
submission CSV per backend and scores it with the official metric. Example:

    python scripts/eval_scenes.py --seeds 900-903 --size 4096 \\
        --backend cfar --backend onnx:src/sarvessel/runtime/models/xview3_w4a4.onnx \\
        --json out/eval_scenes.json

Training uses seeds < 900 (see sarvessel.model.data); keep evaluation seeds >= 900.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from sarvessel.evaluation.scoring import print_score, score_csv
from sarvessel.runtime.backends.tta import TTA_SETS
from sarvessel.runtime.detector import make_detector
from sarvessel.runtime.io.outputs import write_json, write_submissions_csv
from sarvessel.runtime.io.scene import open_scene
from sarvessel.runtime.pipeline import run_scene
from sarvessel.synth.generate import synthesize_scene

log = logging.getLogger("eval_scenes")


def parse_seeds(text: str) -> list[int]:
    """'900-903' or '900,905' → list of seeds."""
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="900-903")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--root", type=Path, default=Path("out/eval_scenes"))
    ap.add_argument("--backend", action="append", default=None,
                    help="cfar, noop, or onnx:MODEL.onnx (repeatable; default cfar)")
    ap.add_argument("--conf", type=float, help="score threshold for onnx backends "
                    "(default: the model's metadata)")
    ap.add_argument("--tta", type=int, default=1, choices=sorted(TTA_SETS),
                    help="dihedral views averaged per tile for onnx backends (default 1: none)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    scenes = []
    for seed in parse_seeds(args.seeds):
        sid = f"synth{seed:04d}{args.size}x{args.size}v"
        if not (args.root / sid / "VH_dB.tif").is_file():
            synthesize_scene(args.root, height=args.size, width=args.size, seed=seed)
        scenes.append(args.root / sid)
    labels = args.root / "labels.csv"

    results = {}
    for spec in args.backend or ["cfar"]:
        kind, _, model = spec.partition(":")
        tta = args.tta if kind == "onnx" else 1
        backend = make_detector(kind, model=Path(model) if model else None,
                                conf_threshold=args.conf, tta=tta)
        dets, mpx, secs = {}, 0.0, 0.0
        for folder in scenes:
            with open_scene(folder) as sc:
                res = run_scene(sc, backend)
            dets[res.scene_id] = res.detections
            mpx += res.megapixels
            secs += res.timings.total
        pred = args.root / (f"pred_{kind}{'_' + Path(model).stem if model else ''}"
                            f"{f'_tta{tta}' if tta > 1 else ''}.csv")
        write_submissions_csv(pred, dets)
        s = score_csv(pred, labels, shoreline_root=args.root / "shoreline")
        print_score(s, title=f"{spec} on {len(scenes)} held-out scenes ({mpx:.0f} MPx)")
        results[spec] = {"score": s.as_dict(scenes=False), "mpx": mpx, "tta": tta,
                         "mpx_per_s": mpx / secs if secs else None}
    out = {"seeds": args.seeds, "size": args.size, "results": results}
    if args.json:
        write_json(args.json, out)
    for spec, r in results.items():
        print(f"{spec}: aggregate {r['score']['aggregate']:.4f}  "
              f"F1 {r['score']['loc_fscore']:.4f}  {r['mpx_per_s']:.1f} MPx/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
