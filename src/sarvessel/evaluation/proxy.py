"""The off-domain proxy: how a detector holds up beyond the images it was tuned on.

Issue #41 asks for one figure, beside SSDD test, that decides which detector ships: how it does
on SAR from other sensors, resolutions and ports. The held-aside off-domain set stays aside, so
this proxy is built only from data available here, read in place and never copied:

* **SSDD under realistic sensor changes** (Zhang et al., Remote Sensing 13(18):3690, 2021), each a
  pure, seeded function of the image (:func:`apply_variant`):

  - ``scale0.5`` / ``scale2``: resampled to half resolution (area average, as a coarser sensor
    integrates; ships shrink into the < 16 px band) and to twice the resolution (bilinear);
  - ``gamma0.5`` / ``gamma2``: other 8-bit display curves (brighter / darker sea);
  - ``stretch2-98``: a linear 2-98 percentile stretch (ships clip, sea spreads);
  - ``db``: a logarithmic (dB) display, as many SAR products and quicklooks are, stretched over
    its 1-99.9 percentiles;
  - ``looks1`` / ``looks4``: speckle of 1 and 4 looks re-synthesised on the linearised image
    (grey taken as amplitude, intensity multiplied by Gamma(L, 1/L) noise);
  - ``dense``: crops (256 px) of the inshore images (``<split>_inshore``; every image of the
    split where there is no such list) where the most ship centres fall: ports and anchorages,
    side by side. Boxes cut below half their area by the crop are ignored.

* **OpenSARShip** (Huang et al., IEEE JSTARS 11(1), 2018): real Sentinel-1 chips, one AIS ship
  at the centre of each, with weak boxes (Head-Tail extent padded by the AIS beam). ``opensarship``
  is the 8-bit visualisation of every chip (``yolo_uint8``) for grey models; ``opensarship_dualpol``
  is the calibrated dual-pol chips of the GRD scenes (``Patch_Cal``: sigma0 linear, band 0 VH,
  band 1 VV) taken to dB and through the runtime's own preprocessing
  (:func:`~sarvessel.runtime.preprocess.preprocess`) for the VV/VH scene model. Weak boxes make
  AP50 a rough figure ("weak"); the recall of the AIS ship at the chip centre (a detection
  centre within 20 px, xView3's 200 m at 10 m pixels) is the sound one.

Every variant is scored like ``sarvessel eval`` (images tiled as scenes, AP from detections above
0.001, P/R at the model's threshold) and by the size bands of #41 (longest box side < 16, 16-32,
32-64, >= 64 px): recall at the threshold and AP50, COCO-style (boxes outside a band ignored,
unmatched detections outside it dropped). The summary ``proxy_ap50`` is the mean AP50 of the
off-domain variants that ran (all but ``clean``). A data set that is absent is skipped with the
reason in the report. SSDD has no validation split: by default the SSDD variants use its test
split as #41 describes; ``split="train"`` gives a version that touches no test image.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image

from sarvessel.evaluation.ap import (
    ImageDetections,
    ImageTruth,
    Interpolation,
    evaluate_ap,
    match_image,
    recall_by_size,
)
from sarvessel.evaluation.datasets import (
    DatasetError,
    LabeledImage,
    SsddSplit,
    load_image_grey,
    load_ssdd,
    load_yolo_folder,
    read_yolo_labels,
)
from sarvessel.evaluation.evaluate import detect_for_scoring, merge_tiles, ssdd_root
from sarvessel.runtime.backends.onnx import OnnxBackend
from sarvessel.runtime.contract import OVERLAP
from sarvessel.runtime.detector import Detector, compose
from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.io.outputs import check_writable_file, write_json
from sarvessel.runtime.preprocess import VH, VV, percentile_stretch, preprocess
from sarvessel.runtime.tiling import tile_grid

log = logging.getLogger(__name__)

__all__ = ["ProxyReport", "ProxyVariant", "VariantResult", "apply_variant", "ap50_by_size",
           "centre_recall", "centre_recall_by_size", "opensarship_root", "run_proxy",
           "register_cli"]

#: Upper edges of the size bands of #41 (px, longest box side).
SIZE_BANDS: tuple[float, ...] = (16.0, 32.0, 64.0, math.inf)
#: A detection whose centre is this close to the chip centre finds the AIS ship: 200 m, the
#: xView3 match distance, at Sentinel-1 GRD's 10 m pixels.
CENTRE_TOLERANCE_PX = 20.0
#: Side of a dense-anchorage crop (px), and the ship centres it must hold.
DENSE_CROP = 256
DENSE_MIN_SHIPS = 3
#: Step of the dense-crop search (px).
DENSE_STEP = 16
#: A box the crop leaves less than this share of is ignored (counts neither way).
DENSE_MIN_VISIBLE = 0.5
#: Score above which detections enter the AP (as ``sarvessel eval``).
EVAL_CONF = 0.001


class ProxyVariant(str, Enum):
    """One part of the proxy (see the module docstring)."""

    CLEAN = "clean"
    SCALE_HALF = "scale0.5"
    SCALE_DOUBLE = "scale2"
    GAMMA_HALF = "gamma0.5"
    GAMMA_TWO = "gamma2"
    STRETCH = "stretch2-98"
    DB = "db"
    LOOKS1 = "looks1"
    LOOKS4 = "looks4"
    DENSE = "dense"
    OPENSARSHIP = "opensarship"
    OPENSARSHIP_DUALPOL = "opensarship_dualpol"


#: SSDD-derived variants (grey models).
SSDD_VARIANTS: tuple[ProxyVariant, ...] = (
    ProxyVariant.CLEAN, ProxyVariant.SCALE_HALF, ProxyVariant.SCALE_DOUBLE,
    ProxyVariant.GAMMA_HALF, ProxyVariant.GAMMA_TWO, ProxyVariant.STRETCH, ProxyVariant.DB,
    ProxyVariant.LOOKS1, ProxyVariant.LOOKS4, ProxyVariant.DENSE)
#: What a one-band (grey) model is scored on by default.
GREY_VARIANTS: tuple[ProxyVariant, ...] = (*SSDD_VARIANTS, ProxyVariant.OPENSARSHIP)
#: What a VV/VH model is scored on by default.
DUALPOL_VARIANTS: tuple[ProxyVariant, ...] = (ProxyVariant.OPENSARSHIP_DUALPOL,)
#: Variants whose boxes are weak (AIS-derived): their AP50 is marked "weak".
WEAK_VARIANTS = frozenset({ProxyVariant.OPENSARSHIP, ProxyVariant.OPENSARSHIP_DUALPOL})


def run_proxy(
    model_path: Path | str,
    *,
    variants: Sequence[ProxyVariant | str] | None = None,
    ssdd: Path | str | None = None,
    opensarship: Path | str | None = None,
    split: str = "test",
    limit: int | None = None,
    second_stage: bool = True,
    threads: int | None = None,
    overlap: int = OVERLAP,
) -> ProxyReport:
    """Score the ONNX model ``model_path`` on the off-domain proxy.

    variants: which parts (:class:`ProxyVariant`); the default is every part that fits the
    model's bands (:data:`GREY_VARIANTS` for grey models, :data:`DUALPOL_VARIANTS` for VV/VH).
    ssdd, opensarship: data roots; the defaults are :func:`~sarvessel.evaluation.evaluate.ssdd_root`
    and :func:`opensarship_root`. split: the SSDD split the SSDD variants start from; the default
    is ``test``. limit: at most this many images per variant, evenly spread (for quick checks);
    the default is all. second_stage: run the box refiner and rescorer the sidecar names; the
    default is True. threads: onnxruntime threads. overlap: tile overlap (px) for images
    larger than a tile.
    """
    onnx = OnnxBackend(model_path, threads=threads)
    meta = onnx.metadata
    detector = compose(onnx, conf_threshold=EVAL_CONF, second_stage=second_stage)
    dualpol = list(meta.bands[:2]) == [VV.name, VH.name]
    wanted = [ProxyVariant(v) for v in (variants or (DUALPOL_VARIANTS if dualpol
                                                      else GREY_VARIANTS))]
    report = ProxyReport(model=str(model_path), name=meta.name, second_stage=second_stage
                         and meta.rescorer is not None, conf_threshold=meta.conf_threshold,
                         split=split, limit=limit)
    vessel = [k for k, n in enumerate(meta.class_names) if n != "non_vessel"] or None
    for variant in wanted:
        if (variant is ProxyVariant.OPENSARSHIP_DUALPOL) != dualpol:
            report.skipped[variant.value] = (
                f"needs a {'VV/VH' if variant is ProxyVariant.OPENSARSHIP_DUALPOL else 'grey'} "
                f"model; this one takes {meta.bands}")
            continue
        try:
            samples = _samples(variant, ssdd=ssdd, opensarship=opensarship, split=split,
                               limit=limit)
            result = score_variant(detector, samples, variant=variant,
                                   conf_threshold=meta.conf_threshold,
                                   iou_threshold=detector.post.iou_threshold, overlap=overlap,
                                   vessel_classes=vessel if meta.nc > 1 else None)
        except DatasetError as exc:
            log.warning("%s skipped: %s", variant.value, exc)
            report.skipped[variant.value] = str(exc)
            continue
        log.info("%s: %d images, AP50 %.3f, R %.3f", variant.value, result.images,
                 result.ap50, result.recall)
        report.results[variant.value] = result
    return report


def score_variant(
    detector: Detector, samples: Iterator[tuple[str, np.ndarray, ImageTruth]], *,
    variant: ProxyVariant, conf_threshold: float, iou_threshold: float,
    overlap: int = OVERLAP, vessel_classes: Sequence[int] | None = None,
) -> VariantResult:
    """Detect in every sample (``name``, uint8 image ``[H, W]`` grey or ``[C, H, W]`` bands,
    truth in x1, y1, x2, y2) and score it. Classes are pooled (truth is class 0); with
    ``vessel_classes`` the centre recall is also given for detections of those classes only."""
    dets, truths, typed = [], [], []
    t0 = time.perf_counter()
    tiles = 0
    for _name, image, truth in samples:
        d, n = detect_any(detector, image, overlap=overlap, iou_threshold=iou_threshold)
        tiles += n
        typed.append(d)
        dets.append(ImageDetections(d.boxes, d.scores, np.zeros(len(d.scores), np.int64)))
        truths.append(ImageTruth(truth.boxes, np.zeros(len(truth.boxes), np.int64),
                                 truth.ignore))
    if not truths:
        raise DatasetError(f"{variant.value}: no images")
    seconds = time.perf_counter() - t0
    rep = evaluate_ap(dets, truths, nc=1, conf_threshold=conf_threshold,
                      interpolation=Interpolation.COCO101)
    by_size = recall_by_size(dets, truths, conf_threshold=conf_threshold, edges=SIZE_BANDS)
    for band, ap in ap50_by_size(dets, truths, edges=SIZE_BANDS).items():
        by_size[band]["ap50"] = ap
    result = VariantResult(
        variant=variant.value, weak=variant in WEAK_VARIANTS, images=len(truths),
        objects=rep.n_gt, tiles=tiles, seconds=seconds, ap50=rep.ap50, ap50_95=rep.ap50_95,
        precision=rep.precision, recall=rep.recall, max_recall=rep.max_recall, fp=rep.fp,
        by_size=by_size)
    if variant in WEAK_VARIANTS:
        result.centre_recall = centre_recall(dets, truths, conf_threshold=conf_threshold)
        result.centre_by_size = centre_recall_by_size(dets, truths,
                                                      conf_threshold=conf_threshold)
        if vessel_classes is not None:
            result.centre_recall_vessel = centre_recall(
                typed, truths, conf_threshold=conf_threshold, classes=vessel_classes)
    return result


def detect_any(detector: Detector, image: np.ndarray, *, overlap: int = OVERLAP,
               iou_threshold: float = 0.5) -> tuple[ImageDetections, int]:
    """Detections of one uint8 image, grey ``[H, W]`` (into every channel, as ``sarvessel
    eval``) or bands ``[C, H, W]``, tiled as scenes; boxes x1, y1, x2, y2 in image pixels."""
    if image.ndim == 2:
        return detect_for_scoring(detector, image, overlap=overlap, iou_threshold=iou_threshold)
    c, h, w = image.shape
    if c != detector.channels:
        raise DatasetError(f"{c} bands for a {detector.channels}-channel model")
    tile = detector.tile_size
    windows = [win for row in tile_grid(h, w, tile=tile, overlap=min(overlap, tile - 1))
               for win in row]
    batch = np.zeros((len(windows), c, tile, tile), np.uint8)
    for k, win in enumerate(windows):
        batch[k, :, :win.height, :win.width] = image[:, win.row0:win.row1, win.col0:win.col1]
    d = merge_tiles(detector.detect(batch), windows, (h, w), iou_threshold=iou_threshold)
    return ImageDetections(d.boxes[:, [1, 0, 3, 2]], d.scores, d.classes), len(windows)


def ap50_by_size(detections: Sequence[ImageDetections], truths: Sequence[ImageTruth], *,
                 edges: Sequence[float] = SIZE_BANDS) -> dict[str, float]:
    """AP50 (COCO 101-point, classes pooled) per band of the longest box side, as COCO scores
    its area ranges: truth outside the band is ignored, and a detection outside it is dropped
    unless it matched truth of the band. Band names as :func:`recall_by_size`; NaN for an
    empty band."""
    lows = [0.0, *edges[:-1]]
    out: dict[str, float] = {}
    for lo, hi in zip(lows, edges, strict=True):
        name = (f"<{hi:g}" if lo == 0 else (f">={lo:g}" if math.isinf(hi) else f"{lo:g}-{hi:g}"))
        kept_d, kept_t = [], []
        for det, gt in zip(detections, truths, strict=True):
            gside = _longest(gt.boxes)
            ignore = gt.ignore | (gside < lo) | (gside >= hi)
            tp, valid = match_image(det.boxes, det.scores, gt.boxes, gt_ignore=ignore)
            dside = _longest(det.boxes)
            keep = tp[:, 0] | ((dside >= lo) & (dside < hi)) | ~valid[:, 0]
            kept_d.append(ImageDetections(det.boxes[keep], det.scores[keep],
                                          np.zeros(int(keep.sum()), np.int64)))
            kept_t.append(ImageTruth(gt.boxes, np.zeros(len(gt.boxes), np.int64), ignore))
        out[name] = evaluate_ap(kept_d, kept_t, nc=1, iou_thresholds=(0.5,)).ap50
    return out


def centre_recall(detections: Sequence[ImageDetections], truths: Sequence[ImageTruth], *,
                  conf_threshold: float, tolerance: float = CENTRE_TOLERANCE_PX,
                  classes: Sequence[int] | None = None) -> float:
    """Share of (not ignored) truth boxes with a detection scoring ``conf_threshold`` or more
    (of ``classes``, default any) whose centre lies within ``tolerance`` px of the box centre:
    the weak-box-free test of "the AIS ship was found"."""
    found, _ = _centre_found(detections, truths, conf_threshold=conf_threshold,
                             tolerance=tolerance, classes=classes)
    return float(found.mean()) if len(found) else float("nan")


def centre_recall_by_size(detections: Sequence[ImageDetections], truths: Sequence[ImageTruth],
                          *, conf_threshold: float, tolerance: float = CENTRE_TOLERANCE_PX,
                          edges: Sequence[float] = SIZE_BANDS) -> dict[str, dict[str, float]]:
    """:func:`centre_recall` per band of the truth box's longest side (names as
    :func:`recall_by_size`)."""
    found, side = _centre_found(detections, truths, conf_threshold=conf_threshold,
                                tolerance=tolerance)
    lows = [0.0, *edges[:-1]]
    out = {}
    for lo, hi in zip(lows, edges, strict=True):
        name = (f"<{hi:g}" if lo == 0 else (f">={lo:g}" if math.isinf(hi) else f"{lo:g}-{hi:g}"))
        m = (side >= lo) & (side < hi)
        out[name] = {"n": int(m.sum()),
                     "recall": float(found[m].mean()) if m.any() else float("nan")}
    return out


def _centre_found(detections: Sequence[ImageDetections], truths: Sequence[ImageTruth], *,
                  conf_threshold: float, tolerance: float,
                  classes: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per (not ignored) truth box: found by a detection centre within ``tolerance``, and its
    longest side."""
    found, sides = [], []
    for det, gt in zip(detections, truths, strict=True):
        keep = det.scores >= conf_threshold
        if classes is not None:
            keep &= np.isin(det.classes, np.asarray(classes))
        dc = _centres(det.boxes[keep])
        real = ~gt.ignore
        gc = _centres(gt.boxes[real])
        sides.append(_longest(gt.boxes[real]))
        hit = np.zeros(len(gc), bool)
        if len(gc) and len(dc):
            dist = np.hypot(*(gc[:, None, :] - dc[None, :, :]).transpose(2, 0, 1))
            hit = dist.min(axis=1) <= tolerance
        found.append(hit)
    return (np.concatenate(found) if found else np.zeros(0, bool),
            np.concatenate(sides) if sides else np.zeros(0))


# --- the variants: pure functions of one image ----------------------------------------------


def apply_variant(
    variant: ProxyVariant | str, grey: np.ndarray, boxes: np.ndarray,
    ignore: np.ndarray | None = None, *, name: str = "",
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """One SSDD image ``grey`` (uint8 ``[H, W]``) with its ``boxes`` (x1, y1, x2, y2) as
    ``variant`` sees it: ``(grey, boxes, ignore)``, or None when the variant leaves the image
    out (a dense crop needs :data:`DENSE_MIN_SHIPS` ships). Random variants are seeded from
    ``name`` and the variant, so an image gives the same pixels on every run and in any
    order or subset."""
    variant = ProxyVariant(variant)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    ignore = np.zeros(len(boxes), bool) if ignore is None else np.asarray(ignore, bool)
    if variant is ProxyVariant.CLEAN:
        return grey, boxes, ignore
    if variant in (ProxyVariant.SCALE_HALF, ProxyVariant.SCALE_DOUBLE):
        out, sx, sy = resample(grey, 0.5 if variant is ProxyVariant.SCALE_HALF else 2.0)
        return out, boxes * np.array([sx, sy, sx, sy], np.float32), ignore
    if variant in (ProxyVariant.GAMMA_HALF, ProxyVariant.GAMMA_TWO):
        return gamma(grey, 0.5 if variant is ProxyVariant.GAMMA_HALF else 2.0), boxes, ignore
    if variant is ProxyVariant.STRETCH:
        return percentile_stretch(grey.astype(np.float32), 2.0, 98.0), boxes, ignore
    if variant is ProxyVariant.DB:
        return db_display(grey), boxes, ignore
    if variant in (ProxyVariant.LOOKS1, ProxyVariant.LOOKS4):
        looks = 1 if variant is ProxyVariant.LOOKS1 else 4
        rng = np.random.default_rng(zlib.crc32(f"{variant.value}:{name}".encode()))
        return respeckle(grey, looks, rng), boxes, ignore
    if variant is ProxyVariant.DENSE:
        return dense_crop(grey, boxes, ignore)
    raise ValueError(f"{variant.value} is not an SSDD variant")


def resample(grey: np.ndarray, factor: float) -> tuple[np.ndarray, float, float]:
    """``grey`` resized by ``factor``: area average when shrinking (a coarser sensor integrates
    its pixels), bilinear when enlarging. Returns the image and the exact x and y factors."""
    h, w = grey.shape
    nw, nh = max(1, round(w * factor)), max(1, round(h * factor))
    how = Image.BOX if factor < 1 else Image.BILINEAR
    out = np.asarray(Image.fromarray(grey).resize((nw, nh), how))
    return out, nw / w, nh / h


def gamma(grey: np.ndarray, g: float) -> np.ndarray:
    """The 8-bit display curve ``255 * (v / 255) ** g`` (g < 1 brightens the sea)."""
    lut = np.floor(255.0 * (np.arange(256) / 255.0) ** g + 0.5).astype(np.uint8)
    return lut[grey]


def db_display(grey: np.ndarray, *, lo_pct: float = 1.0, hi_pct: float = 99.9) -> np.ndarray:
    """A logarithmic display: grey read as amplitude, taken to dB (20 log10, zero floored at
    one grey level) and stretched over its ``lo_pct``..``hi_pct`` percentiles."""
    db = 20.0 * np.log10(np.maximum(grey.astype(np.float32), 1.0) / 255.0)
    return percentile_stretch(db, lo_pct, hi_pct)


def respeckle(grey: np.ndarray, looks: int, rng: np.random.Generator) -> np.ndarray:
    """Speckle of ``looks`` looks on the linearised image: grey read as amplitude, intensity
    ``(v / 255)**2`` multiplied by Gamma(L, 1/L) noise (mean 1), back to amplitude, 8 bits
    (clipped)."""
    intensity = (grey.astype(np.float32) / 255.0) ** 2
    noise = rng.gamma(looks, 1.0 / looks, size=grey.shape).astype(np.float32)
    amp = np.sqrt(intensity * noise) * 255.0
    return np.clip(np.floor(amp + 0.5), 0, 255).astype(np.uint8)


def dense_crop(
    grey: np.ndarray, boxes: np.ndarray, ignore: np.ndarray, *, size: int = DENSE_CROP,
    min_ships: int = DENSE_MIN_SHIPS, step: int = DENSE_STEP,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The ``size`` px window (clipped to the image) holding the most ship centres, searched
    every ``step`` px in raster order (the first of equals wins); None below ``min_ships``.
    Boxes are clipped to the window; one left with less than :data:`DENSE_MIN_VISIBLE` of its
    area is ignored, one wholly outside dropped."""
    h, w = grey.shape
    ch, cw = min(size, h), min(size, w)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    real = ~ignore
    best, best_n = (0, 0), -1
    rows = sorted({*range(0, h - ch + 1, step), h - ch})
    cols = sorted({*range(0, w - cw + 1, step), w - cw})
    for r in rows:
        for c in cols:
            n = int((real & (cx >= c) & (cx < c + cw) & (cy >= r) & (cy < r + ch)).sum())
            if n > best_n:
                best, best_n = (r, c), n
    if best_n < min_ships:
        return None
    r, c = best
    clipped = np.clip(boxes - np.array([c, r, c, r], np.float32), 0,
                      np.array([cw, ch, cw, ch], np.float32))
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    seen = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    inside = seen > 0
    share = np.where(area > 0, seen / np.maximum(area, 1e-6), 1.0)
    new_ignore = ignore | (share < DENSE_MIN_VISIBLE)
    return (np.ascontiguousarray(grey[r:r + ch, c:c + cw]), clipped[inside],
            new_ignore[inside])


# --- the data --------------------------------------------------------------------------------


def opensarship_root() -> Path:
    """Where OpenSARShip lives: ``$SARVESSEL_OPENSARSHIP``, else ``../shared/data/opensarship``
    relative to the current directory or this checkout."""
    env = os.environ.get("SARVESSEL_OPENSARSHIP")
    if env:
        return Path(env)
    candidates = [Path.cwd().parent / "shared" / "data" / "opensarship",
                  Path(__file__).resolve().parents[3].parent / "shared" / "data" / "opensarship"]
    for cand in candidates:
        if cand.is_dir():
            return cand
    raise DatasetError(f"OpenSARShip not found at {candidates[0]} "
                       "(set SARVESSEL_OPENSARSHIP to its folder)")


def _samples(variant: ProxyVariant, *, ssdd: Path | str | None, opensarship: Path | str | None,
             split: str, limit: int | None) -> Iterator[tuple[str, np.ndarray, ImageTruth]]:
    """The images of one variant, lazily (the data roots are checked before the first)."""
    if variant is ProxyVariant.OPENSARSHIP:
        root = Path(opensarship) if opensarship else opensarship_root()
        folder = root / "yolo_uint8"
        if not (folder / "images").is_dir():
            raise DatasetError(f"{folder}: OpenSARShip YOLO folder not found")
        items = _spread(load_yolo_folder(folder), limit)
        return ((it.stem, load_image_grey(it.path), ImageTruth(it.boxes, it.classes))
                for it in items)
    if variant is ProxyVariant.OPENSARSHIP_DUALPOL:
        root = Path(opensarship) if opensarship else opensarship_root()
        return iter(_spread(list(dualpol_chips(root)), limit))
    root = Path(ssdd) if ssdd else ssdd_root()
    if not (root / "ImageSets" / "Main" / f"{split}.txt").is_file():
        raise DatasetError(f"{root}: SSDD split {split!r} not found")
    if variant is ProxyVariant.DENSE:
        inshore = f"{split}_inshore"
        use = inshore if inshore in {s.value for s in SsddSplit} and \
            (root / "ImageSets" / "Main" / f"{inshore}.txt").is_file() else split
        return iter(_spread(list(_ssdd_variant(load_ssdd(root, use), variant)), limit))
    return _ssdd_variant(_spread(load_ssdd(root, split), limit), variant)


def _ssdd_variant(items: Sequence[LabeledImage], variant: ProxyVariant
                  ) -> Iterator[tuple[str, np.ndarray, ImageTruth]]:
    for it in items:
        got = apply_variant(variant, load_image_grey(it.path), it.boxes, it.difficult,
                            name=it.stem)
        if got is not None:
            grey, boxes, ignore = got
            yield it.stem, grey, ImageTruth(boxes, np.zeros(len(boxes), np.int64), ignore)


def dualpol_chips(root: Path) -> Iterator[tuple[str, np.ndarray, ImageTruth]]:
    """OpenSARShip's dual-pol GRD chips as the scene model sees them: ``Patch_Cal`` sigma0
    (linear; band 0 VH, band 1 VV) to dB, stacked VV, VH and mapped to uint8 by the runtime's
    preprocessing; the weak box from ``yolo_uint8/labels``. SLC and single-pol scenes are left
    out (other pixel geometry, or no VH)."""
    scenes = root / "scenes"
    if not scenes.is_dir():
        raise DatasetError(f"{scenes}: OpenSARShip scenes not found")
    labels = root / "yolo_uint8" / "labels"
    for scene in sorted(p for p in scenes.iterdir() if "_GRDH_1SDV_" in p.name):
        chips = sorted((scene / "Patch_Cal").glob("*.tif"))
        sea = []
        for chip in chips:
            cal = np.asarray(tifffile.imread(chip), np.float32)
            if cal.ndim != 3 or cal.shape[-1] != 2:
                log.debug("%s: shape %s, not two bands", chip, cal.shape)
                continue
            sea.append(np.median(cal.reshape(-1, 2), axis=0))
            txt = labels / f"{scene.name}_{chip.stem.replace(' ', '')}_vv.txt"
            if not txt.is_file():
                log.debug("%s: no weak box (%s)", chip, txt.name)
                continue
            h, w = cal.shape[:2]
            boxes, _ = read_yolo_labels(txt, width=w, height=h)
            db = 10.0 * np.log10(np.maximum(cal, 1e-10))
            u8 = preprocess(np.stack([db[..., 1], db[..., 0]]), (VV, VH))
            yield (f"{scene.name}/{chip.stem}", u8,
                   ImageTruth(boxes, np.zeros(len(boxes), np.int64)))
        if sea and not (np.median(sea, axis=0)[0] < np.median(sea, axis=0)[1]):
            log.warning("%s: band 0 is not darker than band 1 over the sea; the VH, VV band "
                        "order may not hold here", scene.name)


def _spread(items: list, limit: int | None) -> list:
    """At most ``limit`` items, evenly spread over the list (all when None)."""
    if limit is None or limit >= len(items):
        return list(items)
    idx = np.unique(np.linspace(0, len(items) - 1, max(limit, 1)).round().astype(int))
    return [items[i] for i in idx]


def _longest(boxes: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(boxes[:, 2] - boxes[:, 0]), np.abs(boxes[:, 3] - boxes[:, 1]))


def _centres(boxes: np.ndarray) -> np.ndarray:
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)


# --- results ---------------------------------------------------------------------------------


@dataclass
class VariantResult:
    """The scores of one variant. by_size: per band of the longest box side, ``n``, ``recall``
    at the threshold and ``ap50``. centre_recall: weak variants only (see
    :func:`centre_recall`); centre_recall_vessel: the same, vessel classes only (scene model);
    centre_by_size: the centre recall by size band."""

    variant: str
    weak: bool
    images: int
    objects: int
    tiles: int
    seconds: float
    ap50: float
    ap50_95: float
    precision: float
    recall: float
    max_recall: float
    fp: int
    by_size: dict[str, dict[str, float]] = field(default_factory=dict)
    centre_recall: float | None = None
    centre_recall_vessel: float | None = None
    centre_by_size: dict[str, dict[str, float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class ProxyReport:
    """All variants of one model. proxy_ap50: mean AP50 of the off-domain variants that ran."""

    model: str
    name: str
    second_stage: bool
    conf_threshold: float
    split: str
    limit: int | None = None
    results: dict[str, VariantResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def proxy_ap50(self) -> float:
        aps = [r.ap50 for k, r in self.results.items() if k != ProxyVariant.CLEAN.value]
        return float(np.mean(aps)) if aps else float("nan")

    def pooled_recall(self, band: str) -> float:
        """Recall at the threshold in size ``band`` pooled over the off-domain variants."""
        n = hits = 0.0
        for k, r in self.results.items():
            b = r.by_size.get(band)
            if k != ProxyVariant.CLEAN.value and b and b["n"]:
                n += b["n"]
                hits += b["n"] * b["recall"]
        return hits / n if n else float("nan")

    def to_dict(self) -> dict[str, Any]:
        bands = next(iter(self.results.values())).by_size if self.results else {}
        return {"model": self.model, "name": self.name, "second_stage": self.second_stage,
                "conf_threshold": self.conf_threshold, "ssdd_split": self.split,
                "limit": self.limit, "proxy_ap50": self.proxy_ap50,
                "offdomain_recall_by_size": {b: self.pooled_recall(b) for b in bands},
                "variants": {k: r.to_dict() for k, r in self.results.items()},
                "skipped": self.skipped}

    def table(self) -> str:
        """A markdown table: one row per variant (empty when none ran)."""
        if not self.results:
            return ""
        bands = list(next(iter(self.results.values())).by_size)
        head = ("| variant | images | ships | AP50 | P / R at threshold | centre R | "
                + " | ".join(f"R / AP50 {b}" for b in bands) + " |")
        lines = [head, "|" + "---|" * (6 + len(bands))]
        for k, r in self.results.items():
            centre = "" if r.centre_recall is None else f"{r.centre_recall:.3f}"
            if r.centre_recall_vessel is not None:
                centre += f" ({r.centre_recall_vessel:.3f} as vessel)"
            cells = [f"{b['recall']:.2f} / {b['ap50']:.2f} (n {b['n']})" if b["n"] else "–"
                     for b in r.by_size.values()]
            ap = f"{r.ap50:.3f}" + (" weak" if r.weak else "")
            lines.append(f"| {k} | {r.images} | {r.objects} | {ap} | {r.precision:.3f} / "
                         f"{r.recall:.3f} | {centre} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


# --- command line ----------------------------------------------------------------------------


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add ``sarvessel eval-proxy``."""
    p = sub.add_parser(
        "eval-proxy", help="score an ONNX model on the off-domain proxy (issue #41)",
        description="Score an exported model on the off-domain proxy: SSDD under sensor "
        "changes (resampling, display curves, speckle, dense port crops) and the real "
        "Sentinel-1 OpenSARShip chips (weak boxes; dual-pol for VV/VH models), by size band "
        "(<16, 16-32, 32-64, >=64 px). Absent data sets are skipped with the reason.")
    p.add_argument("model", type=Path, help="the .onnx model (with its .json sidecar)")
    p.add_argument("--variants", type=_parse_variants, metavar="V1,V2",
                   help="comma-separated parts (default: all that fit the model's bands): "
                   + ", ".join(v.value for v in ProxyVariant))
    p.add_argument("--ssdd", type=Path, help="SSDD root (default: $SARVESSEL_SSDD or "
                   "../shared/data/ssdd)")
    p.add_argument("--opensarship", type=Path, help="OpenSARShip root (default: "
                   "$SARVESSEL_OPENSARSHIP or ../shared/data/opensarship)")
    p.add_argument("--split", default="test", help="SSDD split the SSDD variants start "
                   "from (default test; train touches no test image)")
    p.add_argument("--limit", type=int, help="at most N images per variant, evenly spread")
    p.add_argument("--no-second-stage", action="store_true",
                   help="leave out the sidecar's box refiner and rescorer")
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: all cores)")
    p.add_argument("--json", type=Path, help="write the report as JSON here")
    p.set_defaults(func=cmd_eval_proxy)


def _parse_variants(text: str) -> list[ProxyVariant]:
    try:
        return [ProxyVariant(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{exc}; choose from {[v.value for v in ProxyVariant]}") from None


def cmd_eval_proxy(args: argparse.Namespace) -> int:
    """Handler of ``sarvessel eval-proxy``: options and the output path checked first."""
    if args.threads is not None and args.threads < 1:
        raise SarvesselError(f"--threads must be >= 1, got {args.threads}")
    if args.limit is not None and args.limit < 1:
        raise SarvesselError(f"--limit must be >= 1, got {args.limit}")
    if args.json:
        check_writable_file(args.json, option="--json")
    report = run_proxy(args.model, variants=args.variants, ssdd=args.ssdd,
                       opensarship=args.opensarship, split=args.split, limit=args.limit,
                       second_stage=not args.no_second_stage, threads=args.threads)
    print(f"{report.name}: second stage {'on' if report.second_stage else 'off'}, "
          f"threshold {report.conf_threshold:g}, SSDD split {report.split}")
    print(report.table())
    print(f"proxy AP50 (mean of off-domain variants): {report.proxy_ap50:.3f}")
    for k, why in report.skipped.items():
        print(f"skipped {k}: {why}")
    if args.json:
        write_json(args.json, report.to_dict())
    return 0 if report.results else 2
