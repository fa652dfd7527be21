#!/usr/bin/env python
"""How a model does on the SSDD images larger than its tile: tiled at native pixels (what
``sarvessel eval`` and the runtime do) against shrunk to fit one tile (what training showed
them as until ``sarvessel train --oversize native``). Prints AP50 over the whole split with each
treatment of the large images, and AP50, precision, recall and false alarms at the model's
threshold over the large images alone. Example:

    python scripts/oversize_probe.py models/ssdd_float/ssdd_float.onnx --split test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sarvessel.evaluation.ap import ImageDetections, ImageTruth, evaluate_ap
from sarvessel.evaluation.evaluate import detect_for_scoring, load_dataset, load_image_grey
from sarvessel.runtime.backends.onnx import OnnxBackend
from sarvessel.runtime.detector import compose


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="QCDQ ONNX model with its JSON sidecar")
    p.add_argument("--split", default="test", help="SSDD split (default test)")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime threads (default 2)")
    args = p.parse_args(argv)
    items = load_dataset("ssdd", split=args.split)
    backend = compose(OnnxBackend(args.model, threads=args.threads), conf_threshold=0.001)
    tile, iou = backend.metadata.tile_size, backend.post.iou_threshold
    large = [k for k, it in enumerate(items) if max(it.height, it.width) > tile]
    runs: dict[str, list[ImageDetections]] = {"tiled at native pixels": [], "shrunk to fit": []}
    truths = []
    for it in items:
        grey = load_image_grey(it.path)
        truths.append(ImageTruth(it.boxes, it.classes, it.difficult))
        native, _ = detect_for_scoring(backend, grey, iou_threshold=iou)
        runs["tiled at native pixels"].append(native)
        fit = tile / max(it.height, it.width)
        runs["shrunk to fit"].append(
            detect_for_scoring(backend, grey, iou_threshold=iou, scale=fit)[0] if fit < 1
            else native)
    conf = backend.metadata.conf_threshold
    ships = sum(len(truths[k].boxes) for k in large)
    print(f"{args.split}: {len(large)} of {len(items)} images larger than {tile} px "
          f"({ships} ships)")
    for name, dets in runs.items():
        whole = evaluate_ap(dets, truths, nc=backend.metadata.nc)
        part = evaluate_ap([dets[k] for k in large], [truths[k] for k in large],
                           nc=backend.metadata.nc, conf_threshold=conf)
        print(f"  large images {name}: split AP50 {whole.ap50:.4f}; large images alone AP50 "
              f"{part.ap50:.4f}, P {part.precision:.3f} R {part.recall:.3f} at {conf:g}, "
              f"{part.fp} false alarms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
