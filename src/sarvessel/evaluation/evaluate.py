"""Evaluate an exported model on a labelled image set (SSDD, a VOC or YOLO folder): AP50,
AP50-95 and precision/recall/F1, as the ``sarvessel eval`` command.

Each image is read as grey uint8 (repeated to the model's channels, as in training), then cut
into model tiles exactly as the runtime cuts scenes (:func:`~sarvessel.runtime.tiling.tile_grid`,
edge tiles shifted inward); an image smaller than a tile sits at the top-left of a zero tile
(the training letterbox at scale 1). Tile detections are shifted to image coordinates, clipped
to the image and merged across overlapping tiles with box NMS.

AP is computed from all detections above a low score (``eval_conf``, default 0.001, as
ultralytics validates); precision/recall/F1 use the model's own ``conf_threshold``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sarvessel.evaluation.ap import (
    APReport,
    ImageDetections,
    ImageTruth,
    Interpolation,
    evaluate_ap,
    recall_by_size,
    save_pr_curve,
)
from sarvessel.evaluation.datasets import (
    DatasetError,
    LabeledImage,
    SsddSplit,
    Stretch,
    load_image_grey,
    load_ssdd,
    load_yolo_folder,
    read_voc,
)
from sarvessel.runtime.backends.onnx import OnnxBackend
from sarvessel.runtime.backends.tta import TTA_SETS, with_tta
from sarvessel.runtime.contract import INPUT_SCALE_RANGE, OVERLAP
from sarvessel.runtime.detections import Detections
from sarvessel.runtime.detector import Detector, compose
from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.io.outputs import check_writable_file, write_json
from sarvessel.runtime.post.nms import box_nms
from sarvessel.runtime.preprocess import stretch_percentiles
from sarvessel.runtime.tiling import Window, tile_grid

log = logging.getLogger(__name__)

__all__ = ["EvalResult", "evaluate", "evaluate_backend", "load_dataset", "register_cli",
           "ssdd_root"]

#: Name that selects the SSDD dataset in ``--data``.
SSDD_NAME = "ssdd"
#: Split value meaning every image of the dataset.
ALL_SPLITS = "all"


def evaluate(
    model_path: Path | str,
    data: Path | str,
    *,
    split: str = "test",
    eval_conf: float = 0.001,
    conf_threshold: float | None = None,
    iou_threshold: float | None = None,
    overlap: int = OVERLAP,
    threads: int | None = None,
    interpolation: Interpolation | str = Interpolation.COCO101,
    tta: int = 1,
    input_scale: float | None = None,
    rescore: bool = True,
    stretch: Stretch | None = None,
    limit: int | None = None,
) -> EvalResult:
    """Evaluate the ONNX model ``model_path`` on ``data`` (``"ssdd"`` or a dataset folder).

    split: ``test``, ``test_inshore``, ``test_offshore``, ``train`` or ``all`` (SSDD and VOC
    folders with ``ImageSets/Main``; ignored for YOLO folders). eval_conf: score above which
    detections enter the AP; the default is 0.001. conf_threshold: score for precision/recall/F1;
    the default is the model's. iou_threshold: NMS overlap (within and across tiles); the
    default is the model's. overlap: tile overlap in pixels for images larger than a tile;
    the default is 64. threads: onnxruntime intra-op threads. interpolation: AP interpolation;
    the default is COCO's 101 points. tta: dihedral views averaged per tile (1, 2, 4 or 8;
    :mod:`sarvessel.runtime.backends.tta`); the default 1 is none. input_scale: factor each image is
    resampled by before tiling (boxes are scaled back); the default is the model's. stretch:
    (low, high) percentiles that bring 16-bit or float images to 8 bits
    (:func:`~sarvessel.evaluation.datasets.load_image_grey`); the default is the model's own
    (``stretch`` in its sidecar, set by ``sarvessel train --stretch``), else such images are
    refused. rescore: apply the model's second stage (box refiner and rescorer) when its sidecar
    names one (:mod:`sarvessel.runtime.post.rescore`); the default is True. limit: the first
    ``limit`` images of the split only (a quick check, e.g. a CI benchmark); the default (None)
    is every image. Options are checked before anything loads (:func:`check_options`).
    """
    check_options(eval_conf=eval_conf, conf_threshold=conf_threshold,
                  iou_threshold=iou_threshold, overlap=overlap, threads=threads,
                  input_scale=input_scale)
    items = load_dataset(data, split=split)[:limit]
    onnx = OnnxBackend(model_path, threads=threads)
    meta = onnx.metadata
    detector = compose(with_tta(onnx, tta), conf_threshold=eval_conf,
                       iou_threshold=iou_threshold, second_stage=rescore)
    if stretch is None and meta.stretch is not None:
        stretch = (meta.stretch[0], meta.stretch[1])
    result = evaluate_backend(
        detector, items, nc=meta.nc, iou_threshold=detector.post.iou_threshold,
        conf_threshold=meta.conf_threshold if conf_threshold is None else conf_threshold,
        overlap=overlap, interpolation=interpolation,
        input_scale=meta.input_scale if input_scale is None else input_scale,
        stretch=stretch)
    result.model = str(model_path)
    result.data = str(data)
    result.split = split
    if meta.rescorer is not None:
        rescorer = detector.post.rescorer
        result.extra["rescorer"] = rescorer.spec.file if rescorer else None
        result.extra["refiner"] = rescorer.spec.refiner if rescorer else None
    return result


def check_options(*, eval_conf: float = 0.001, conf_threshold: float | None = None,
                  iou_threshold: float | None = None, overlap: int = OVERLAP,
                  threads: int | None = None, input_scale: float | None = None) -> None:
    """Refuse options that mean nothing, in one line naming the option, before any work."""
    def prob(name: str, v: float | None, *, closed: bool) -> None:
        if v is None:
            return
        ok = (0.0 <= v <= 1.0) if closed else (0.0 < v < 1.0)  # NaN fails both
        if not ok:
            rng = "[0, 1]" if closed else "(0, 1)"
            raise SarvesselError(f"{name} must be in {rng}, got {v}")

    prob("--eval-conf", eval_conf, closed=False)
    prob("--conf", conf_threshold, closed=False)
    prob("--iou", iou_threshold, closed=True)
    if overlap < 0:
        raise SarvesselError(f"--overlap must be >= 0, got {overlap}")
    if threads is not None and threads < 1:
        raise SarvesselError(f"--threads must be >= 1, got {threads}")
    lo, hi = INPUT_SCALE_RANGE
    if input_scale is not None and not (math.isfinite(input_scale) and lo <= input_scale <= hi):
        raise SarvesselError(f"--input-scale must be in [{lo:g}, {hi:g}], got {input_scale}")


def evaluate_backend(
    backend: Detector,
    items: list[LabeledImage],
    *,
    nc: int,
    iou_threshold: float = 0.5,
    conf_threshold: float = 0.25,
    overlap: int = OVERLAP,
    interpolation: Interpolation | str = Interpolation.COCO101,
    input_scale: float = 1.0,
    stretch: Stretch | None = None,
) -> EvalResult:
    """Run ``backend`` over labelled images and score it (see :func:`evaluate`).

    iou_threshold: box NMS across overlapping tiles of one image. conf_threshold: for
    precision/recall/F1. input_scale: bilinear resampling of each image before tiling.
    stretch: percentiles for images deeper than 8 bits (:func:`load_image_grey`).
    """
    lo, hi = INPUT_SCALE_RANGE
    if not lo <= input_scale <= hi:
        raise SarvesselError(f"input_scale must be in [{lo:g}, {hi:g}], got {input_scale}")
    if not items:
        raise DatasetError("no images to evaluate")
    for item in items:
        if len(item.classes) and int(item.classes.max()) >= nc:
            raise DatasetError(f"{item.path}: its labels use class {int(item.classes.max())}, "
                               f"but the model has {nc} class(es) (0..{nc - 1})")
    dets, truths = [], []
    t0 = time.perf_counter()
    tiles = 0
    for item in items:
        grey = load_image_grey(item.path, stretch=stretch)
        if grey.shape != (item.height, item.width):
            log.warning("%s: image is %dx%d, annotation says %dx%d", item.path, grey.shape[1],
                        grey.shape[0], item.width, item.height)
        d, n = detect_for_scoring(backend, grey, overlap=overlap, iou_threshold=iou_threshold,
                                  scale=input_scale)
        tiles += n
        dets.append(d)
        truths.append(ImageTruth(item.boxes, item.classes, item.difficult))
    seconds = time.perf_counter() - t0
    report = evaluate_ap(dets, truths, nc=nc, conf_threshold=conf_threshold,
                         interpolation=interpolation)
    by_size = recall_by_size(dets, truths, conf_threshold=conf_threshold)
    log.info("%d images, %d tiles in %.1f s: AP50 %.4f, AP50-95 %.4f", len(items), tiles,
             seconds, report.ap50, report.ap50_95)
    return EvalResult(report=report, images=len(items), tiles=tiles, seconds=seconds,
                      backend=getattr(backend, "name", type(backend).__name__),
                      recall_by_size=by_size, paths=[it.path for it in items],
                      detections=dets, truths=truths, stretch=stretch)


def detect_for_scoring(
    backend: Detector, grey: np.ndarray, *, overlap: int = OVERLAP, iou_threshold: float = 0.5,
    scale: float = 1.0,
) -> tuple[ImageDetections, int]:
    """:func:`detect_image` on ``grey`` resampled by ``scale``, as the AP scores it: boxes
    back in ``grey``'s pixels and in the labels' x1, y1, x2, y2 order (detections are top,
    left, bottom, right). Returns the detections and the number of tiles run."""
    if scale != 1.0:
        grey = resample_grey(grey, scale)
    d, n = detect_image(backend, grey, overlap=overlap, iou_threshold=iou_threshold)
    if scale != 1.0:
        d = d.scaled(1.0 / scale)
    return ImageDetections(d.boxes[:, [1, 0, 3, 2]], d.scores, d.classes), n


def detect_image(
    backend: Detector, grey: np.ndarray, *, overlap: int = OVERLAP, iou_threshold: float = 0.5
) -> tuple[Detections, int]:
    """Detect in one grey uint8 image ``[H, W]`` tiled like a scene; boxes in image pixels.

    Returns the merged detections and the number of tiles run.
    """
    windows, batch = image_tiles(grey, tile=backend.tile_size, channels=backend.channels,
                                 overlap=overlap)
    merged = merge_tiles(backend.detect(batch), windows, grey.shape, iou_threshold=iou_threshold)
    return merged, len(windows)


def image_tiles(grey: np.ndarray, *, tile: int, channels: int, overlap: int = OVERLAP
                ) -> tuple[list[Window], np.ndarray]:
    """The tile windows of a grey image ``[H, W]`` and the uint8 batch ``[N, C, T, T]`` they
    make (the image in every channel, zero-padded past its edges), as scenes are tiled."""
    h, w = grey.shape
    windows = [win for row in tile_grid(h, w, tile=tile, overlap=min(overlap, tile - 1))
               for win in row]
    batch = np.zeros((len(windows), channels, tile, tile), np.uint8)
    for k, win in enumerate(windows):
        batch[k, :, :win.height, :win.width] = grey[win.row0:win.row1, win.col0:win.col1]
    return windows, batch


def merge_tiles(per_tile: list[Detections], windows: list[Window], shape: tuple[int, int], *,
                iou_threshold: float = 0.5) -> Detections:
    """One image's detections from its tiles': shifted, box NMS across tiles, clipped."""
    shifted = [d.shifted(win.row0, win.col0) for d, win in zip(per_tile, windows, strict=True)]
    merged = Detections.concat(shifted)
    if len(windows) > 1 and len(merged):
        merged = box_nms(merged, iou_threshold=iou_threshold)
    if len(merged):
        h, w = shape
        merged.boxes = np.clip(merged.boxes, 0, np.array([h, w, h, w], np.float32))
    return merged


def resample_grey(grey: np.ndarray, scale: float) -> np.ndarray:
    """``grey`` ``[H, W]`` uint8 resized by ``scale`` (bilinear, as training resizes)."""
    h, w = grey.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(grey).resize(size, Image.BILINEAR))


def load_dataset(data: Path | str, *, split: str = "test") -> list[LabeledImage]:
    """Labelled images of ``data``: ``"ssdd"`` (see :func:`ssdd_root`), an SSDD/VOC folder
    (``Annotations/`` + ``JPEGImages/``, optional ``ImageSets/Main/<split>.txt``) or a YOLO
    folder (``images/`` + ``labels/``). ``split="all"`` takes every image."""
    root = ssdd_root() if str(data).lower() == SSDD_NAME else Path(data)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    if (root / "images").is_dir():
        return load_yolo_folder(root)
    if (root / "Annotations").is_dir():
        sets = root / "ImageSets" / "Main"
        if split == ALL_SPLITS or not sets.is_dir():
            if split != ALL_SPLITS:
                log.warning("%s has no ImageSets/Main: evaluating every annotated image", root)
            return [read_voc(x) for x in sorted((root / "Annotations").glob("*.xml"))]
        try:
            SsddSplit(split)
        except ValueError as exc:
            raise DatasetError(f"unknown split {split!r} (choose from "
                               f"{[s.value for s in SsddSplit] + [ALL_SPLITS]})") from exc
        return load_ssdd(root, split)
    raise DatasetError(f"{root}: neither a YOLO folder (images/, labels/) nor a VOC/SSDD folder "
                       "(Annotations/, JPEGImages/)")


def ssdd_root() -> Path:
    """Where SSDD lives: ``$SARVESSEL_SSDD``, else ``../shared/data/ssdd`` relative to the
    repository (the current directory's or this checkout's)."""
    env = os.environ.get("SARVESSEL_SSDD")
    if env:
        return Path(env)
    candidates = [Path.cwd().parent / "shared" / "data" / "ssdd",
                  Path(__file__).resolve().parents[3].parent / "shared" / "data" / "ssdd"]
    for cand in candidates:
        if cand.is_dir():
            return cand
    where = " or ".join(dict.fromkeys(str(c) for c in candidates))  # once when they agree
    raise DatasetError(f"SSDD not found at {where} (set SARVESSEL_SSDD to its folder)")


@dataclass
class EvalResult:
    """The scores and the cost of one evaluation. seconds: detection wall time, reading and
    tiling included. recall_by_size: recall at the report's threshold per bin of the objects'
    longest side (:func:`~sarvessel.evaluation.ap.recall_by_size`)."""

    report: APReport
    images: int
    tiles: int
    seconds: float
    backend: str = ""
    model: str = ""
    data: str = ""
    split: str = ""
    recall_by_size: dict[str, dict[str, float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    #: Percentiles the images deeper than 8 bits were stretched with (None: none).
    stretch: Stretch | None = None
    #: Per image: file, detections and ground truth (for pictures; not in the JSON).
    paths: list[Path] = field(default_factory=list, repr=False)
    detections: list[ImageDetections] = field(default_factory=list, repr=False)
    truths: list[ImageTruth] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {"model": self.model, "data": self.data, "split": self.split,
                "backend": self.backend, "images": self.images, "tiles": self.tiles,
                "seconds": self.seconds,
                "ms_per_image": 1e3 * self.seconds / max(self.images, 1),
                **self.report.to_dict(), "recall_by_size": self.recall_by_size,
                **({} if self.stretch is None else
                   {"stretch_percentiles": list(self.stretch)}),
                **self.extra}


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add ``sarvessel eval`` to the command line."""
    p = sub.add_parser(
        "eval", help="AP50 / AP50-95 / P-R-F1 of an ONNX model on SSDD or a labelled folder",
        description="Run an exported ONNX model over a labelled image set (SSDD, a VOC folder "
        "or a YOLO images/+labels/ folder), tiling images larger than the model tile, and "
        "report COCO-style AP50, AP50-95 and precision/recall/F1 at the model's threshold.",
    )
    p.add_argument("model", type=Path, help="the .onnx model (with its .json sidecar)")
    p.add_argument("--data", required=True,
                   help="'ssdd' (../shared/data/ssdd or $SARVESSEL_SSDD) or a dataset folder")
    p.add_argument("--split", default="test",
                   choices=[s.value for s in SsddSplit] + [ALL_SPLITS],
                   help="split of an SSDD/VOC folder (default: test)")
    p.add_argument("--conf", type=float, help="score threshold for P/R/F1 (default: model's)")
    p.add_argument("--iou", type=float, help="NMS IoU threshold (default: model's)")
    p.add_argument("--eval-conf", type=float, default=0.001,
                   help="lowest score entering the AP (default 0.001)")
    p.add_argument("--overlap", type=int, default=OVERLAP,
                   help=f"tile overlap in px (default {OVERLAP})")
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: all cores)")
    p.add_argument("--interpolation", default=Interpolation.COCO101.value,
                   choices=[i.value for i in Interpolation],
                   help="AP interpolation (default coco101; all_point: VOC 2010+; ultralytics: "
                        "the trapezoid rule YOLOv8-based papers quote)")
    p.add_argument("--tta", type=int, default=1, choices=sorted(TTA_SETS),
                   help="dihedral views averaged per tile (default 1: none); n times the cost")
    p.add_argument("--no-rescore", action="store_true",
                   help="leave out the model's second stage, box refiner and rescorer (its "
                   "sidecar's 'rescorer'; on the split it was fitted on, its figure is "
                   "in-sample)")
    p.add_argument("--input-scale", type=float,
                   help="resample images by this factor before tiling (default: the model's "
                   "input_scale, 1 for most models)")
    p.add_argument("--stretch", type=parse_stretch, metavar="LO,HI",
                   help="map each 16-bit or float image's LO..HI percentiles linearly onto "
                   "0..255 (e.g. 1,99.9); without it such images are refused, 8-bit images "
                   "are always read as they are")
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    p.add_argument("--pr-png", type=Path, help="write the IoU-0.5 PR curve PNG here")
    p.add_argument("--gallery", type=Path,
                   help="write a PNG of the images with the most errors (TP green, missed "
                   "yellow, false alarm red) here")
    p.set_defaults(func=cmd_eval)


def parse_stretch(text: str) -> Stretch:
    """``"LO,HI"`` percentiles for ``--stretch`` (0 <= LO < HI <= 100)."""
    try:
        return stretch_percentiles(text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected two percentiles LO,HI such as 1,99.9, got {text!r} ({exc})") from None


def cmd_eval(args: argparse.Namespace) -> int:
    """Handler of ``sarvessel eval``: options and output paths are checked before any work."""
    check_options(eval_conf=args.eval_conf, conf_threshold=args.conf, iou_threshold=args.iou,
                  overlap=args.overlap, threads=args.threads, input_scale=args.input_scale)
    for option in ("json", "pr_png", "gallery"):
        path = getattr(args, option)
        if path is not None:
            check_writable_file(path, option="--" + option.replace("_", "-"))
    result = evaluate(args.model, args.data, split=args.split, eval_conf=args.eval_conf,
                      conf_threshold=args.conf, iou_threshold=args.iou, overlap=args.overlap,
                      threads=args.threads, interpolation=args.interpolation, tta=args.tta,
                      input_scale=args.input_scale, stretch=args.stretch,
                      rescore=not args.no_rescore)
    r = result.report
    print(f"{result.images} images ({result.tiles} tiles), {r.n_gt} objects, "
          f"{1e3 * result.seconds / result.images:.1f} ms/image")
    print(f"AP50 {r.ap50:.4f}  AP50-95 {r.ap50_95:.4f}  ({r.interpolation}); recall of all "
          f"detections {r.max_recall:.4f} (the ceiling of AP50)")
    print(f"at conf {r.conf_threshold:g}: P {r.precision:.4f}  R {r.recall:.4f}  F1 {r.f1:.4f}  "
          f"(TP {r.tp}, FP {r.fp}, FN {r.fn})")
    if result.recall_by_size:
        print("recall by longest side (px): " + "  ".join(
            f"{k} {v['recall']:.2f} (n {v['n']})" for k, v in result.recall_by_size.items()))
    if args.json:
        write_json(args.json, result.to_dict())
    if args.pr_png:
        save_pr_curve(r, args.pr_png)
    if args.gallery:
        from sarvessel.evaluation.gallery import save_gallery

        save_gallery(result.paths, result.detections, result.truths, args.gallery,
                     conf_threshold=r.conf_threshold, stretch=result.stretch)
    return 0
