#!/usr/bin/env python
"""Export an untrained scene-model body as QONNX, to price it in FINN before training it.

FINN's resource and throughput estimates depend on the layer shapes, bit widths and folding,
not on the trained weight values, so a body can be priced in seconds instead of after hours of
training. The activation scales are calibrated on random uint8 tiles (30 batches, as Brevitas
collects them) so the export carries real thresholds.

    python scripts/export_untrained.py runs/sep_a6.onnx \\
        --widths 16,32,112,112,112,112,112,112,112,112 --separable-from 1 \\
        --dilations 1,1,1,1,2,4,8,2,1,1 --bits act=6,dw_act=4
    sarvessel hw estimate runs/sep_a6.onnx --swg-ram-style auto
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="QONNX file to write")
    ap.add_argument("--widths", type=_ints, default=None)
    ap.add_argument("--dilations", type=_ints, default=())
    ap.add_argument("--separable-from", type=int, default=0)
    ap.add_argument("--bits", default="", help="as `sarvessel train --bits`")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--channels", type=int, default=2, help="2: VV/VH scene model, 1: SSDD")
    args = ap.parse_args()

    import torch

    from sarvessel.model.config import BitWidths, scene_config, ssdd_config
    from sarvessel.model.network import build_model
    from sarvessel.model.sensitivity import calibrate
    from sarvessel.quantize.export import export_qonnx
    from sarvessel.runtime.errors import SarvesselError

    try:
        kw = {"tile_size": args.tile, "dilations": args.dilations,
              "separable_from": args.separable_from, "bits": BitWidths.parse(args.bits)}
        if args.widths:
            kw["widths"] = args.widths
        cfg = (scene_config if args.channels == 2 else ssdd_config)(**kw)
    except SarvesselError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    net = build_model(cfg)
    calibrate(net, (torch.randint(0, 256, (1, args.channels, 128, 128)).float()
                    for _ in range(30)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    export_qonnx(net, args.out, tile=args.tile, channels=args.channels)
    print(f"wrote {args.out} ({sum(p.numel() for p in net.parameters())} params)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
