#!/usr/bin/env python
"""Bit-width trade-off of the scene model: accuracy vs FPGA resources vs scene time.

For each body width b (weights and activations, first/last layers stay 8-bit) it trains the
scene model on the generated training scenes for the same short budget, exports it, scores it
on held-out generated scenes and runs the FINN estimate. Writes a JSON and prints a table.

    python scripts/bitwidth_sweep.py --bits 3 4 6 8 --epochs 20 --json out/bitwidth_sweep.json

Rows already in ``--json`` for other bit widths are kept (a sweep can be extended run by run);
the table printed covers them all, sorted by width.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from sarvessel.runtime.io.outputs import write_json


def sh(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "sarvessel", *args], check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, nargs="+", default=[3, 4, 6, 8])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--data-dir", type=Path, default=Path("runs/scene_data"))
    ap.add_argument("--out", type=Path, default=Path("runs/bitwidth_sweep"))
    ap.add_argument("--eval-seeds", default="900-903")
    ap.add_argument("--json", type=Path, default=Path("out/bitwidth_sweep.json"))
    args = ap.parse_args()
    rows = json.loads(args.json.read_text()) if args.json.is_file() else []
    rows = [r for r in rows if r["bits"] not in args.bits]
    for b in args.bits:
        run = args.out / f"w{b}a{b}"
        name = f"xview3_w{b}a{b}"
        sh("-q", "train", "--data", "xview3", "--data-dir", str(args.data_dir),
           "--synth-scenes", "24", "--out", str(run), "--name", name, "--channels", "2",
           "--epochs", str(args.epochs), "--batch", "16", "--lr", "3e-3", "--eval-every", "5",
           "--bits", f"first_weight=8,weight={b},act={b},last_act=8,last_weight=8")
        sh("-q", "export", str(run / "best.pt"), "--out", str(run / "export"), "--qonnx",
           "--qcdq", "--conf", "0.4", "--name", name)
        subprocess.run([sys.executable, "scripts/eval_scenes.py", "--seeds", args.eval_seeds,
                        "--backend", f"onnx:{run / 'export' / (name + '.onnx')}",
                        "--json", str(run / "scenes.json")], check=True, capture_output=True)
        res = json.loads((run / "scenes.json").read_text())
        score = next(iter(res["results"].values()))["score"]
        sh("-q", "hw", "estimate", str(run / "export" / f"{name}_qonnx.onnx"), "--out",
           str(run / "hw"))
        est = json.loads((run / "hw" / "report" / "estimate.json").read_text())
        rows.append({"bits": b, "aggregate": score["aggregate"], "f1": score["loc_fscore"],
                     "lut_share": est["shares"]["LUT"], "bram_share": est["shares"]["BRAM_18K"],
                     "scene_seconds": est["scene_seconds"], "fits": est["fits_budget"]})
        rows.sort(key=lambda r: r["bits"])
        write_json(args.json, rows)
    print("| body bits | aggregate | detect F1 | LUT | BRAM18 | 700 MPx scene s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| W{r['bits']}A{r['bits']} | {r['aggregate']:.3f} | {r['f1']:.3f} | "
              f"{100 * r['lut_share']:.1f} % | {100 * r['bram_share']:.1f} % | "
              f"{r['scene_seconds']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
