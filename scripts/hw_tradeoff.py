"""Scene time against expected LUT share: the shipped scene model folded for a few scene targets.

Each point runs the estimate flow (``sarvessel hw estimate``'s steps) with the folding aimed at
``target * (1 - cycle margin)`` and no resource budget (so nothing is relaxed), and prints one
row: the scene time the folding reaches, its cycle margin against the 10 s target, and the
expected totals (layers + DWCs + FIFOs + shell allowance; see sarvessel.hw.estimate).

    python scripts/hw_tradeoff.py --scene-s 8 10 12 14 16 20 --out build/tradeoff
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sarvessel.hw.config import HWConfig
from sarvessel.hw.estimate import estimate_model
from sarvessel.hw.flow import run_flow
from sarvessel.runtime.io.outputs import write_json

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "xview3_w4a4" / "xview3_w4a4_qonnx.onnx"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=MODEL)
    p.add_argument("--scene-s", type=float, nargs="+", default=[8, 10, 12, 14, 16, 20],
                   help="scene targets (s) the folding aims at (before the margin)")
    p.add_argument("--clock-mhz", type=float, default=150.0)
    p.add_argument("--cycle-margin", type=float, default=0.20)
    p.add_argument("--target-s", type=float, default=10.0, help="the scene target margins are "
                   "quoted against (s)")
    p.add_argument("--out", type=Path, default=Path("build/tradeoff"))
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    ref = HWConfig(clock_mhz=args.clock_mhz, target_scene_seconds=args.target_s)
    print(f"clock {args.clock_mhz:g} MHz, margin {args.cycle_margin:.0%} against a "
          f"{args.target_s:g} s scene ({ref.target_cycles_per_tile():,} cycles/tile)")
    print("| folded for (s) | bottleneck cycles | scene (s) | margin vs target | "
          "pre-FIFO LUT | expected LUT | expected BRAM18 | expected DSP |")
    print("|---|---|---|---|---|---|---|---|")
    for s in args.scene_s:
        cfg = HWConfig(clock_mhz=args.clock_mhz, cycle_margin=args.cycle_margin,
                       target_scene_seconds=s, lut_budget=1.0, bram_budget=1.0, dsp_budget=1.0,
                       max_folding_attempts=1, output_dir=args.out / f"scene_{s:g}s")
        rep = estimate_model(run_flow(args.model, cfg).model, cfg)
        margin = 1 - rep.bottleneck_cycles / ref.target_cycles_per_tile()
        e, sh = rep.expected_totals, rep.expected_shares
        rows.append({"folded_for_s": s, "bottleneck_cycles": rep.bottleneck_cycles,
                     "scene_s": rep.scene_seconds, "margin_vs_target": margin,
                     "pre_fifo_lut": rep.totals["LUT"], "expected": e, "expected_shares": sh})
        print(f"| {s:g} | {rep.bottleneck_cycles:,} | {rep.scene_seconds:.2f} | {margin:+.0%} | "
              f"{rep.totals['LUT']:,.0f} ({rep.shares['LUT']:.1%}) | "
              f"{e['LUT']:,.0f} ({sh['LUT']:.1%}) | {e['BRAM_18K']:,.0f} ({sh['BRAM_18K']:.1%}) "
              f"| {e['DSP']:,.0f} ({sh['DSP']:.1%}) |", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "tradeoff.json", rows)


if __name__ == "__main__":
    main()
