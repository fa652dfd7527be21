#!/usr/bin/env python
"""Fit the second-stage rescorer (:mod:`sarvessel.runtime.rescore`) of an exported SSDD model.

Runs the model over SSDD's training split exactly as ``sarvessel eval`` does (the same tiles,
decode at the rescorer's pre-threshold, the same merge), measures the features of every
detection of every tile, labels it a ship when it matches a labelled ship at IoU 0.5, and fits
scikit-learn's HistGradientBoostingClassifier. It reports AP50 on the training split with and
without rescoring, cross-fitted over images (each fold rescored by a classifier fitted on the
other folds, so the figure that decides shipping is not scored by a classifier that saw it), then
fits on the whole split, exports the classifier to ONNX-ML with skl2onnx, writes it beside the
model as ``<name>_rescorer.onnx`` and names it in the model's sidecar. ``sarvessel eval`` and
``detect`` then rescore. Example (~2 min on 2 cores):

    python scripts/fit_rescorer.py models/ssdd_w4a4/ssdd_w4a4.onnx \
        --json models/ssdd_w4a4/rescorer_fit.json

``--dry-run`` reports the cross-fitted figures and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from sarvessel.runtime.ap import ImageDetections, ImageTruth, evaluate_ap, match_image
from sarvessel.runtime.backends.onnx_backend import OnnxBackend, read_metadata, sidecar_path
from sarvessel.runtime.datasets import load_image_grey
from sarvessel.runtime.evaluate import image_tiles, load_dataset, merge_tiles
from sarvessel.runtime.rescore import RescorerSpec, combine, detection_features

#: Classifier settings (chosen in session 25 on the training split, cross-fitted).
CLASSIFIER = {"max_iter": 200, "learning_rate": 0.05, "max_leaf_nodes": 15,
              "min_samples_leaf": 40, "l2_regularization": 1.0, "random_state": 0}


def collect(backend: OnnxBackend, data: str, split: str):
    """Per image: its windows, per-tile detections, features, tile index and ship labels."""
    images = []
    for item in load_dataset(data, split=split):
        grey = load_image_grey(item.path)
        windows, batch = image_tiles(grey, tile=backend.tile_size, channels=backend.channels)
        per_tile = backend.detect(batch)
        feats, labels, tile_of = [], [], []
        for k, (win, d) in enumerate(zip(windows, per_tile, strict=True)):
            feats.append(detection_features(batch[k, 0], d))
            shifted = d.shifted(win.row0, win.col0)
            tp, _ = match_image(shifted.boxes[:, [1, 0, 3, 2]], shifted.scores, item.boxes,
                                gt_ignore=item.difficult)
            labels.append(tp[:, 0])
            tile_of.append(np.full(len(d), k))
        images.append({"grey_shape": grey.shape, "windows": windows, "per_tile": per_tile,
                       "x": np.concatenate(feats), "y": np.concatenate(labels),
                       "tile": np.concatenate(tile_of),
                       "truth": ImageTruth(item.boxes, item.classes, item.difficult)})
    return images


def ap50(images, backend: OnnxBackend, probs: list[np.ndarray] | None, alpha: float) -> float:
    """AP50 of the images with each detection rescored by ``probs`` (None: as decoded)."""
    dets = []
    for i, im in enumerate(images):
        tiles = []
        for k, d in enumerate(im["per_tile"]):
            if probs is not None and len(d):
                p = probs[i][im["tile"] == k]
                d = d.select(np.arange(len(d)))
                d.scores = combine(p, im["per_tile"][k].scores, alpha)
            tiles.append(d)
        m = merge_tiles(tiles, im["windows"], im["grey_shape"],
                        iou_threshold=backend.iou_threshold)
        dets.append(ImageDetections(m.boxes[:, [1, 0, 3, 2]], m.scores, m.classes))
    return evaluate_ap(dets, [im["truth"] for im in images], nc=1).ap50


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="exported ONNX model with its sidecar")
    ap.add_argument("--data", default="ssdd", help="dataset (default ssdd)")
    ap.add_argument("--split", default="train", help="split to fit on (default train)")
    ap.add_argument("--alpha", type=float, default=0.75,
                    help="weight of the rescorer against the network's score (default 0.75)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--dry-run", action="store_true", help="report only, write nothing")
    ap.add_argument("--json", type=Path, help="write the fit report here")
    args = ap.parse_args(argv)
    from skl2onnx import to_onnx
    from sklearn.ensemble import HistGradientBoostingClassifier

    spec = RescorerSpec(file=f"{args.model.stem}_rescorer.onnx", alpha=args.alpha)
    backend = OnnxBackend(args.model, conf_threshold=spec.pre_conf, rescore=False)
    images = collect(backend, args.data, args.split)
    x = np.concatenate([im["x"] for im in images])
    y = np.concatenate([im["y"] for im in images])
    img = np.concatenate([np.full(len(im["x"]), i) for i, im in enumerate(images)])
    folds = img % args.folds
    p = np.zeros(len(y))
    for f in range(args.folds):
        fit = HistGradientBoostingClassifier(**CLASSIFIER).fit(x[folds != f], y[folds != f])
        p[folds == f] = fit.predict_proba(x[folds == f])[:, 1]
    probs = [p[img == i] for i in range(len(images))]
    report = {"model": str(args.model), "data": args.data, "split": args.split,
              "detections": int(len(y)), "ships": int(y.sum()), "classifier": CLASSIFIER,
              "rescorer": spec.to_dict(),
              "ap50": ap50(images, backend, None, spec.alpha),
              "ap50_rescored_crossfit": ap50(images, backend, probs, spec.alpha)}
    print(f"{args.model} on {args.data} {args.split}: {len(y)} detections ({int(y.sum())} "
          f"ships), AP50 {report['ap50']:.4f}, rescored (cross-fitted over {args.folds} folds "
          f"of images) {report['ap50_rescored_crossfit']:.4f}")
    if not args.dry_run:
        fit = HistGradientBoostingClassifier(**CLASSIFIER).fit(x, y)
        onx = to_onnx(fit, x[:1].astype(np.float32), options={id(fit): {"zipmap": False}},
                      target_opset={"": 17, "ai.onnx.ml": 3})
        out = args.model.parent / spec.file
        out.write_bytes(onx.SerializeToString())
        meta = read_metadata(args.model)
        meta.rescorer = spec.to_dict()
        meta.write_sidecar(args.model)
        print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB) and named it in "
              f"{sidecar_path(args.model)}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
