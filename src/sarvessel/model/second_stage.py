"""Fit the second stage of an exported SSDD model: the box refiner
(:mod:`sarvessel.runtime.post.refine`) and the rescorer (:mod:`sarvessel.runtime.post.rescore`).

Runs the model over SSDD's training split exactly as ``sarvessel eval`` does (the same tiles,
decode at the rescorer's pre-threshold, the same merge). Then:

1. **Refiner.** Each box whose longest side is under ``refine_max_side`` gets the features of
   :func:`~sarvessel.runtime.post.refine.refine_features`; its target is the offset of each edge to
   the labelled ship it overlaps most (IoU > 0.2). Four gradient-boosted regressors (scikit-
   learn's HistGradientBoostingRegressor, absolute error) learn the offsets.
2. **Rescorer.** Every detection, with its small boxes refined, gets the features of
   :func:`~sarvessel.runtime.post.rescore.detection_features` and the label "ship" when it matches
   a labelled ship at IoU 0.5; HistGradientBoostingClassifier learns it.

Both are cross-fitted over five folds of images: each fold's boxes are refined and rescored
by models fitted on the other folds, and the rescorer of a fold learns on boxes refined by
refiners that did not see that fold either (nested), so the training-split AP50 it reports
(which decides shipping) comes from no model that saw the image's labels. The final rescorer
learns on cross-fitted refined boxes, as good as those of unseen images. Then both are fitted on
the whole split, exported to
ONNX-ML with skl2onnx, written beside the model as ``<name>_refiner.onnx`` and
``<name>_rescorer.onnx`` and named in the model's sidecar; ``sarvessel eval`` and ``detect``
then use them. Example (~2 min on 2 cores):

    sarvessel fit-second-stage models/ssdd_w4a4/ssdd_w4a4.onnx \
        --json models/ssdd_w4a4/rescorer_fit.json

``--no-refine`` fits the rescorer alone (session 25's stage); ``--dry-run`` reports the
cross-fitted figures and writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from sarvessel.evaluation.ap import ImageDetections, ImageTruth, evaluate_ap, match_image
from sarvessel.evaluation.datasets import load_image_grey
from sarvessel.evaluation.evaluate import image_tiles, load_dataset, merge_tiles
from sarvessel.runtime.backends.onnx import OnnxBackend
from sarvessel.runtime.contract import read_metadata, sidecar_path
from sarvessel.runtime.detections import Detections
from sarvessel.runtime.detector import Detector, compose
from sarvessel.runtime.io.outputs import write_json
from sarvessel.runtime.post.nms import box_iou
from sarvessel.runtime.post.refine import FEATURE_NAMES as REFINE_FEATURES
from sarvessel.runtime.post.refine import MAX_SIDE, apply_offsets, candidates, refine_features
from sarvessel.runtime.post.rescore import RescorerSpec, combine, detection_features, valid_extent

#: Classifier settings (chosen in session 25 on the training split, cross-fitted).
CLASSIFIER = {"max_iter": 200, "learning_rate": 0.05, "max_leaf_nodes": 15,
              "min_samples_leaf": 40, "l2_regularization": 1.0, "random_state": 0}
#: Regressor settings of the refiner (session 26, the classifier's, with absolute error).
REGRESSOR = {"max_iter": 200, "learning_rate": 0.05, "max_leaf_nodes": 15,
             "min_samples_leaf": 40, "loss": "absolute_error", "random_state": 0}
#: A box learns the edges of the labelled ship it overlaps most, if by more than this.
REFINE_MIN_IOU = 0.2


def collect(backend: Detector, data: str, split: str) -> list[dict[str, Any]]:
    """Per image: its tiles, windows, per-tile detections (as decoded) and labels."""
    images = []
    for item in load_dataset(data, split=split):
        grey = load_image_grey(item.path)
        windows, batch = image_tiles(grey, tile=backend.tile_size, channels=backend.channels)
        tiles = [t[0] for t in batch]
        images.append({"grey_shape": grey.shape, "windows": windows, "tiles": tiles,
                       "extents": [valid_extent(t) for t in tiles],
                       "per_tile": backend.detect(batch),
                       "truth": ImageTruth(item.boxes, item.classes, item.difficult)})
    return images


def fold_of_images(n: int, folds: int, seed: int | None = None) -> np.ndarray:
    """The fold of each of ``n`` images: image i in fold i % folds, or, with ``seed``, the
    images shuffled first (each fold still gets n // folds or one more)."""
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    return order % folds


def refine_rows(images: list[dict[str, Any]], max_side: float) -> dict[str, np.ndarray]:
    """Refiner features and targets of every small box: x, offsets y (top, left, bottom,
    right px), whether it has a target, and its image, tile and index in the tile."""
    x, y, ok, where = [], [], [], []
    for i, im in enumerate(images):
        gt = np.asarray(im["truth"].boxes, np.float64).reshape(-1, 4)[:, [1, 0, 3, 2]]
        for k, (d, win) in enumerate(zip(im["per_tile"], im["windows"], strict=True)):
            small = candidates(d, im["extents"][k], max_side=max_side)
            if not len(small):
                continue
            boxes = np.asarray(d.boxes, np.float64)[small]
            x.append(refine_features(im["tiles"][k], boxes, extent=im["extents"][k]))
            scene = boxes + [win.row0, win.col0, win.row0, win.col0]
            if len(gt):
                iou = box_iou(scene, gt)
                y.append(gt[iou.argmax(1)] - scene)
                ok.append(iou.max(1) > REFINE_MIN_IOU)
            else:
                y.append(np.zeros((len(small), 4)))
                ok.append(np.zeros(len(small), bool))
            where += [(i, k, s) for s in small]
    return {"x": np.concatenate(x) if x else np.zeros((0, len(REFINE_FEATURES)), np.float32),
            "y": np.concatenate(y) if y else np.zeros((0, 4)),
            "ok": np.concatenate(ok) if ok else np.zeros(0, bool),
            "where": np.asarray(where, np.intp).reshape(-1, 3)}


def fit_regressor(x: np.ndarray, y: np.ndarray):
    """The refiner: one gradient-boosted regressor per box edge."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.multioutput import MultiOutputRegressor

    return MultiOutputRegressor(HistGradientBoostingRegressor(**REGRESSOR)).fit(x, y)


def cross_offsets(rows: dict[str, np.ndarray], fold_of: np.ndarray, folds: int,
                  skip: int | None = None) -> np.ndarray:
    """Each row's offsets from a refiner fitted on the other folds' rows (and not on fold
    ``skip``, whose rows get none); zero where no row is left to fit on."""
    out = np.zeros_like(rows["y"])
    for f in range(folds):
        at = fold_of == f
        fit_on = (fold_of != f) & (fold_of != skip) & rows["ok"]
        if f != skip and at.any() and fit_on.any():
            out[at] = fit_regressor(rows["x"][fit_on], rows["y"][fit_on]).predict(rows["x"][at])
    return out


def refined(images: list[dict[str, Any]], rows: dict[str, np.ndarray],
            offsets: np.ndarray) -> list[list[Detections]]:
    """Per image and tile, the detections with ``offsets`` applied to the rows' boxes."""
    out = [list(im["per_tile"]) for im in images]
    for (i, k), idx in _group(rows["where"]).items():
        shape = images[i]["extents"][k]
        out[i][k] = apply_offsets(out[i][k], rows["where"][idx, 2], offsets[idx], shape)
    return out


def _group(where: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    groups: dict[tuple[int, int], list[int]] = {}
    for n, (i, k, _) in enumerate(where):
        groups.setdefault((int(i), int(k)), []).append(n)
    return {key: np.asarray(v, np.intp) for key, v in groups.items()}


def rescore_rows(images: list[dict[str, Any]], dets: list[list[Detections]]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Rescorer features and ship labels (IoU 0.5) of every detection, image by image."""
    x, y = [], []
    for im, per_tile in zip(images, dets, strict=True):
        truth = im["truth"]
        for k, (d, win) in enumerate(zip(per_tile, im["windows"], strict=True)):
            x.append(detection_features(im["tiles"][k], d, extent=im["extents"][k]))
            shifted = d.shifted(win.row0, win.col0)
            tp, _ = match_image(shifted.boxes[:, [1, 0, 3, 2]], shifted.scores, truth.boxes,
                                gt_ignore=truth.ignore)
            y.append(tp[:, 0])
    return np.concatenate(x), np.concatenate(y)


def ap50(images: list[dict[str, Any]], dets: list[list[Detections]], p: np.ndarray | None,
         alpha: float, iou_threshold: float) -> tuple[float, float]:
    """AP50 and the recall ceiling of ``dets``, each rescored by ``p`` (None: as decoded;
    ``p`` runs over the detections image by image, tile by tile)."""
    out, at = [], 0
    for im, per_tile in zip(images, dets, strict=True):
        tiles = []
        for d in per_tile:
            if p is not None and len(d):
                d = d.select(np.arange(len(d)))
                d.scores = combine(p[at:at + len(d)], d.scores, alpha)
            at += len(d)
            tiles.append(d)
        m = merge_tiles(tiles, im["windows"], im["grey_shape"], iou_threshold=iou_threshold)
        out.append(ImageDetections(m.boxes[:, [1, 0, 3, 2]], m.scores, m.classes))
    rep = evaluate_ap(out, [im["truth"] for im in images], nc=1)
    return rep.ap50, rep.max_recall


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of ``sarvessel fit-second-stage``."""
    ap.add_argument("model", type=Path, help="exported ONNX model with its sidecar")
    ap.add_argument("--data", default="ssdd", help="dataset (default ssdd)")
    ap.add_argument("--split", default="train", help="split to fit on (default train)")
    ap.add_argument("--alpha", type=float, default=0.75,
                    help="weight of the rescorer against the network's score (default 0.75)")
    ap.add_argument("--no-refine", dest="refine", action="store_false",
                    help="fit the rescorer alone, without the box refiner")
    ap.add_argument("--refine-max-side", type=float, default=MAX_SIDE, metavar="PX",
                    help=f"refine boxes whose longest side is under this (default {MAX_SIDE:g})")
    ap.add_argument("--folds", type=int, default=5,
                    help="cross-fitting folds of images (default 5)")
    ap.add_argument("--fold-seed", type=int, default=None, metavar="N",
                    help="shuffle which images fall in which fold with this seed (default: image "
                    "i in fold i %% folds); refits with other seeds measure the fit's noise")
    ap.add_argument("--dry-run", action="store_true", help="report only, write nothing")
    ap.add_argument("--json", type=Path, help="write the fit report here")


def run(args: argparse.Namespace) -> int:
    """Fit, report and (unless ``--dry-run``) write the second stage; the command's handler."""
    from skl2onnx import to_onnx
    from sklearn.ensemble import HistGradientBoostingClassifier

    stem = args.model.stem
    spec = RescorerSpec(file=f"{stem}_rescorer.onnx", alpha=args.alpha,
                        refiner=f"{stem}_refiner.onnx" if args.refine else None,
                        refine_max_side=args.refine_max_side)
    backend = compose(OnnxBackend(args.model), conf_threshold=spec.pre_conf, second_stage=False)
    iou = backend.post.iou_threshold
    images = collect(backend, args.data, args.split)
    folds = fold_of_images(len(images), args.folds, args.fold_seed)
    raw = [im["per_tile"] for im in images]
    report: dict[str, Any] = {"model": str(args.model), "data": args.data, "split": args.split,
                              "classifier": CLASSIFIER, "rescorer": spec.to_dict()}
    report["ap50"], report["recall_ceiling"] = ap50(images, raw, None, spec.alpha, iou)
    dets, refiner, rows = raw, None, None
    if args.refine:
        rows = refine_rows(images, spec.refine_max_side)
        if rows["ok"].sum() < args.folds:
            print("no small box overlaps a labelled ship: no refiner", file=sys.stderr)
            spec = RescorerSpec(file=spec.file, alpha=spec.alpha)
            report["rescorer"] = spec.to_dict()
            rows = None
    if rows is not None:
        fold_of = folds[rows["where"][:, 0]]
        dets = refined(images, rows, cross_offsets(rows, fold_of, args.folds))
        report["regressor"] = REGRESSOR
        report["refined_boxes"] = int(len(rows["ok"]))
        report["ap50_refined_crossfit"], report["recall_ceiling_refined"] = ap50(
            images, dets, None, spec.alpha, iou)
        refiner = fit_regressor(rows["x"][rows["ok"]], rows["y"][rows["ok"]])
    x, y = rescore_rows(images, dets)
    img = np.concatenate([np.full(sum(len(d) for d in per_tile), i)
                          for i, per_tile in enumerate(dets)])
    p = np.zeros(len(y))
    for f in range(args.folds):
        x_fit, y_fit = x, y
        if rows is not None:  # boxes refined without fold f's labels, as the held-out fold's
            x_fit, y_fit = rescore_rows(
                images, refined(images, rows, cross_offsets(rows, fold_of, args.folds, skip=f)))
        fit = HistGradientBoostingClassifier(**CLASSIFIER).fit(x_fit[folds[img] != f],
                                                              y_fit[folds[img] != f])
        p[folds[img] == f] = fit.predict_proba(x[folds[img] == f])[:, 1]
    report["detections"], report["ships"] = int(len(y)), int(y.sum())
    report["ap50_rescored_crossfit"], _ = ap50(images, dets, p, spec.alpha, iou)
    refined_note = (f", refined {report['ap50_refined_crossfit']:.4f} (ceiling "
                    f"{report['recall_ceiling_refined']:.4f})" if rows is not None else "")
    print(f"{args.model} on {args.data} {args.split}: {len(y)} detections ({int(y.sum())} "
          f"ships), AP50 {report['ap50']:.4f} (ceiling {report['recall_ceiling']:.4f})"
          f"{refined_note}, {'refined and ' if rows is not None else ''}rescored "
          f"{report['ap50_rescored_crossfit']:.4f} (cross-fitted over {args.folds} folds of "
          "images)")
    if not args.dry_run:
        written = []
        fit = HistGradientBoostingClassifier(**CLASSIFIER).fit(x, y)
        onx = to_onnx(fit, x[:1].astype(np.float32), options={id(fit): {"zipmap": False}},
                      target_opset={"": 17, "ai.onnx.ml": 3})
        written.append(args.model.parent / spec.file)
        written[-1].write_bytes(onx.SerializeToString())
        if refiner is not None and rows is not None and spec.refiner is not None:
            onx = to_onnx(refiner, rows["x"][:1].astype(np.float32),
                          target_opset={"": 17, "ai.onnx.ml": 3})
            written.append(args.model.parent / spec.refiner)
            written[-1].write_bytes(onx.SerializeToString())
        meta = read_metadata(args.model)
        meta.rescorer = spec.to_dict()
        meta.write_sidecar(args.model)
        print("wrote " + ", ".join(f"{w} ({w.stat().st_size / 1024:.0f} KB)" for w in written)
              + f" and named them in {sidecar_path(args.model)}")
    if args.json:
        write_json(args.json, report)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run as ``python -m sarvessel.model.second_stage`` (the same as the command)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
