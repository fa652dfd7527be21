#!/usr/bin/env python
"""Post-training quantization sensitivity of a float SSDD checkpoint, one bit-width choice a row.

Each choice is ``label=spec`` with spec as ``sarvessel train --bits`` takes it ('' is the default
W4A4 set). The float model's own AP50 comes first; every quantised twin is calibrated on 30
augmented training batches (no training) and scored on the SSDD test split, as the training
loop's quick validation does. See ``sarvessel.model.sensitivity``.

    python scripts/quant_sensitivity.py models/candidates/ssdd_sep_float/checkpoint.pt \\
        --choice "w4a4=" --choice "dw_weight8=dw_weight=8" --choice "dw_act8=dw_act=8" \\
        --json out/quant_sensitivity_sep.json
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from sarvessel.runtime.io.outputs import write_json

DEFAULT_CHOICES = ("w4a4=", "w4a4_pc=dw_in_per_channel=1", "dw_weight8=dw_weight=8",
                   "dw_act8=dw_act=8", "dense_weight8=weight=8,dw_weight=4", "act8=act=8",
                   "w8a8=weight=8,act=8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, help="float (or QAT) sarvessel checkpoint")
    ap.add_argument("--choice", action="append", default=None,
                    help=f"label=bit-width spec, repeatable (default: {' '.join(DEFAULT_CHOICES)})")
    ap.add_argument("--data", default="ssdd", help="'ssdd' or an SSDD-layout folder")
    ap.add_argument("--split", default="test", help="split scored (default test, as quick val)")
    ap.add_argument("--train-size", type=int, default=384, help="calibration crop side (px)")
    ap.add_argument("--calib-batches", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from sarvessel.evaluation.datasets import load_ssdd
    from sarvessel.evaluation.evaluate import ssdd_root
    from sarvessel.model.augment import AugmentConfig
    from sarvessel.model.checkpoint import load_checkpoint
    from sarvessel.model.config import BitWidths
    from sarvessel.model.data import ImageDataset
    from sarvessel.model.sensitivity import sensitivity
    from sarvessel.runtime.errors import SarvesselError

    torch.set_num_threads(args.threads)
    try:
        choices = {}
        for c in args.choice or DEFAULT_CHOICES:
            label, sep, spec = c.partition("=")
            if not sep or not label:
                raise SarvesselError(f"--choice {c!r}: want label=spec")
            choices[label] = BitWidths.parse(spec)
        root = ssdd_root() if args.data == "ssdd" else Path(args.data)
        model, _ = load_checkpoint(args.checkpoint, quantized=False)
        tile, ch = model.cfg.tile_size, model.cfg.in_channels
        train_ds = ImageDataset(load_ssdd(root, "train"), tile_size=tile,
                                train_size=args.train_size, augment=AugmentConfig(), channels=ch)
        val_ds = ImageDataset(load_ssdd(root, args.split), tile_size=tile, channels=ch)
        rows = sensitivity(model, choices, train_ds, val_ds, calib_batches=args.calib_batches)
    except SarvesselError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ref = rows[0].ap50
    print(f"{'choice':<16} {'AP50':>7} {'vs float':>9}  bits")
    for r in rows:
        spec = "" if r.bits is None else ",".join(f"{k}={v}" for k, v in asdict(r.bits).items())
        print(f"{r.label:<16} {r.ap50:7.4f} {r.ap50 - ref:+9.4f}  {spec}")
    if args.json:
        write_json(args.json, {
            "checkpoint": str(args.checkpoint), "split": args.split,
            "calib_batches": args.calib_batches,
            "rows": [{"label": r.label, "ap50": r.ap50,
                      "bits": None if r.bits is None else asdict(r.bits)} for r in rows]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
