#!/usr/bin/env python
"""Write the integer-exact float graph (intfloat) of a shipped W4A4 model beside it.

    python scripts/export_intfloat.py models/xview3_w4a4/xview3_w4a4_qonnx.onnx \
        --out src/sarvessel/runtime/models/xview3_w4a4_intfloat.onnx
    python scripts/export_intfloat.py models/ssdd_w4a4/ssdd_w4a4_qonnx.onnx

Reads the cleaned QONNX model (what FINN compiles), builds its hardware graph with the FINN
flow's own streamlining steps and writes ``<name>_intfloat.onnx`` (default: beside the QCDQ
runtime model ``<name>.onnx``) with a sidecar copied from the runtime model's sidecar (so the
second stage, stretch and thresholds carry over) plus ``"graph": "intfloat"``. See
:mod:`sarvessel.quantize.intfloat` and docs/cpu_fallback.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from sarvessel.quantize.intfloat import export_intfloat
from sarvessel.runtime.contract import read_metadata, sidecar_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("qonnx", type=Path, help="cleaned QONNX model (<name>_qonnx.onnx)")
    p.add_argument("--out", type=Path, help="output ONNX (default <dir>/<name>_intfloat.onnx)")
    p.add_argument("--metadata-from", type=Path,
                   help="model whose sidecar to copy (default <dir>/<name>.onnx)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.qonnx.is_file():
        p.error(f"{args.qonnx} is not a file")
    stem = args.qonnx.stem.removesuffix("_qonnx")
    out = args.out or args.qonnx.with_name(f"{stem}_intfloat.onnx")
    source = args.metadata_from or args.qonnx.with_name(f"{stem}.onnx")
    meta = read_metadata(source if sidecar_path(source).is_file() else args.qonnx)
    report = export_intfloat(args.qonnx, out, metadata=meta)
    margins = [f"{lay['margin']:.3f}" for lay in report.layers if lay["levels"]]
    print(f"{out}: {report.file_bytes / 1e3:.0f} kB, ops {report.op_counts}, requantisation "
          f"margins {' '.join(margins)} (accumulator units), {report.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
