"""Writers of a scene's detections: xView3 submission CSV, GeoJSON and a quicklook PNG.

Every file is written to a temporary sibling and moved into place with :func:`os.replace`, so a
crash never leaves a partial file under the final name (the CLI's resume logic relies on a file
that exists being complete).

Class mapping (``vessel_classes`` / ``fishing_classes``):

- xView3 3-class models (the default): class 0 non-vessel, 1 non-fishing vessel, 2 fishing
  vessel, so ``is_vessel = class >= 1`` and ``is_fishing = class == 2``.
- single-class models (e.g. trained on SSDD, class 0 = "ship"): pass
  ``vessel_classes=SINGLE_CLASS_VESSEL_CLASSES, fishing_classes=()`` and
  ``class_names=("ship",)``: every detection is a vessel and none is fishing.
- CFAR emits class 1 only (a vessel of unknown fishing status: is_fishing False).
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import logging
import math
import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np

from sarvessel.runtime.detections import CLASS_NAMES, Detections
from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.io.drawing import default_font

log = logging.getLogger(__name__)

__all__ = [
    "SINGLE_CLASS_VESSEL_CLASSES",
    "SUBMISSION_COLUMNS",
    "XVIEW3_FISHING_CLASSES",
    "XVIEW3_VESSEL_CLASSES",
    "atomic_open",
    "check_out_dir",
    "check_writable_file",
    "json_safe",
    "write_json",
    "write_geojson",
    "write_quicklook_png",
    "write_submission_csv",
    "write_submissions_csv",
]

#: Columns of an xView3 submission, in the official order.
SUBMISSION_COLUMNS: tuple[str, ...] = (
    "scene_id", "detect_scene_row", "detect_scene_column", "is_vessel", "is_fishing",
    "vessel_length_m", "score",
)
#: Classes that are vessels / fishing vessels for xView3 3-class models (label = is_vessel +
#: is_fishing).
XVIEW3_VESSEL_CLASSES: tuple[int, ...] = (1, 2)
XVIEW3_FISHING_CLASSES: tuple[int, ...] = (2,)
#: Vessel classes of a single-class ("ship") model: class 0 is a vessel, never fishing.
SINGLE_CLASS_VESSEL_CLASSES: tuple[int, ...] = (0,)

#: Type of a georeferencing function: (rows, cols) scene pixels → (lon, lat) degrees WGS84.
ToLonLat = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def write_submission_csv(
    path: Path | str,
    scene_id: str,
    dets: Detections,
    *,
    pixel_size_m: float = 10.0,
    vessel_classes: Collection[int] = XVIEW3_VESSEL_CLASSES,
    fishing_classes: Collection[int] = XVIEW3_FISHING_CLASSES,
    missing_length_m: float | None = None,
) -> Path:
    """Write one scene's detections (scene pixel coordinates) as an xView3 submission CSV.

    Columns :data:`SUBMISSION_COLUMNS`; rows and columns are rounded to integer pixels as in the
    official files; ``vessel_length_m = lengths_px * pixel_size_m`` (m per pixel; the default is
    10). is_vessel/is_fishing follow ``vessel_classes``/``fishing_classes`` (module docstring).
    missing_length_m: length written for detections without one; the default None writes an
    empty cell (NaN), which the official scorer turns into a NaN length accuracy, so a warning
    is logged. Returns the path written.
    """
    return write_submissions_csv(
        path, {scene_id: dets}, pixel_size_m=pixel_size_m, vessel_classes=vessel_classes,
        fishing_classes=fishing_classes, missing_length_m=missing_length_m,
    )


def write_submissions_csv(
    path: Path | str,
    scenes: Mapping[str, Detections],
    *,
    pixel_size_m: float = 10.0,
    vessel_classes: Collection[int] = XVIEW3_VESSEL_CLASSES,
    fishing_classes: Collection[int] = XVIEW3_FISHING_CLASSES,
    missing_length_m: float | None = None,
) -> Path:
    """Write several scenes' detections (``scene_id → Detections``) into one submission CSV.

    Same format and options as :func:`write_submission_csv`; an empty mapping writes the header.
    """
    path = Path(path)
    n_missing = 0
    with atomic_open(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(SUBMISSION_COLUMNS)
        for scene_id, dets in scenes.items():
            if not scene_id or not isinstance(scene_id, str):
                raise ValueError(f"scene_id must be a non-empty string, got {scene_id!r}")
            is_vessel, is_fishing = _class_flags(dets.classes, vessel_classes, fishing_classes)
            rows = np.rint(dets.rows).astype(np.int64)
            cols = np.rint(dets.cols).astype(np.int64)
            lengths = dets.lengths_px.astype(np.float64) * pixel_size_m
            for i in range(len(dets)):
                length = lengths[i]
                if not math.isfinite(length):
                    n_missing += 1
                    cell = "" if missing_length_m is None else _num(missing_length_m, 2)
                else:
                    cell = _num(length, 2)
                writer.writerow((scene_id, int(rows[i]), int(cols[i]), bool(is_vessel[i]),
                                 bool(is_fishing[i]), cell, _num(float(dets.scores[i]), 6)))
    if n_missing and missing_length_m is None:
        log.warning("%s: %d detections have no length (empty vessel_length_m); the official "
                    "scorer's length accuracy becomes NaN if one of them matches", path,
                    n_missing)
    log.info("wrote %s (%d detections)", path, sum(len(d) for d in scenes.values()))
    return path


def write_geojson(
    path: Path | str,
    scene_id: str,
    dets: Detections,
    *,
    to_lonlat: ToLonLat | None,
    pixel_size_m: float = 10.0,
    vessel_classes: Collection[int] = XVIEW3_VESSEL_CLASSES,
    fishing_classes: Collection[int] = XVIEW3_FISHING_CLASSES,
    class_names: Sequence[str] = CLASS_NAMES,
) -> Path:
    """Write detections as a GeoJSON FeatureCollection of Points (opens in QGIS).

    to_lonlat: maps scene pixel (rows, cols) to WGS84 (lon, lat) degrees, e.g.
    :meth:`Scene.to_lonlat`. None (a scene without georeferencing) is refused with a
    :class:`~sarvessel.runtime.errors.SarvesselError`: GeoJSON coordinates are WGS84 lon/lat
    by definition (RFC 7946 §4), so pixel positions in one would be drawn as places on Earth.
    Each feature's properties: scene_id, score, class (int), class_name, is_vessel, is_fishing,
    length_m (null if unknown), row, col (scene pixels). Returns the path written.
    """
    path = Path(path)
    rows = dets.rows.astype(np.float64)
    cols = dets.cols.astype(np.float64)
    if to_lonlat is None:
        raise SarvesselError(f"{path}: scene {scene_id} has no georeferencing; a GeoJSON holds "
                             "lon/lat (RFC 7946), so none is written")
    lon, lat = to_lonlat(rows, cols)
    xs, ys = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    if xs.shape != rows.shape or ys.shape != rows.shape:
        raise ValueError(f"to_lonlat returned shapes {xs.shape}, {ys.shape} for {rows.shape}")
    system = "EPSG:4326"
    is_vessel, is_fishing = _class_flags(dets.classes, vessel_classes, fishing_classes)
    lengths = dets.lengths_px.astype(np.float64) * pixel_size_m
    features = []
    for i in range(len(dets)):
        cls = int(dets.classes[i])
        name = class_names[cls] if 0 <= cls < len(class_names) else f"class_{cls}"
        features.append({
            "type": "Feature",
            "geometry": {"type": "Point",
                         "coordinates": [_round(xs[i], 7), _round(ys[i], 7)]},
            "properties": {
                "scene_id": scene_id,
                "score": _round(float(dets.scores[i]), 6),
                "class": cls,
                "class_name": name,
                "is_vessel": bool(is_vessel[i]),
                "is_fishing": bool(is_fishing[i]),
                "length_m": _round(lengths[i], 2),
                "row": _round(rows[i], 2),
                "col": _round(cols[i], 2),
            },
        })
    doc = {
        "type": "FeatureCollection",
        "name": scene_id,
        "coordinate_system": system,  # not "coordinates": RFC 7946 §7.1 forbids it here
        "note": "lon/lat degrees, WGS84",
        "features": features,
    }
    with atomic_open(path) as fh:
        json.dump(doc, fh, allow_nan=False)
        fh.write("\n")
    log.info("wrote %s (%d features, %s)", path, len(features), system)
    return path


def write_quicklook_png(
    path: Path | str,
    thumbnail: np.ndarray,
    *,
    scale: float,
    detections: Detections,
    labels: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    title: str | None = None,
    max_side: int = 2048,
    min_side: int = 768,
    pixel_size_m: float = 10.0,
    vessel_classes: Collection[int] = XVIEW3_VESSEL_CLASSES,
    fishing_classes: Collection[int] = XVIEW3_FISHING_CLASSES,
) -> Path:
    """Draw a quicklook: grey scene, detections as circles, ground truth as hollow squares.

    thumbnail: 2-D scene overview, uint8 (0 = nodata, e.g. preprocessed VV) or float dB
    (NaN/-32768 = nodata), already downsampled; it is contrast-stretched between its 1st and
    99.5th percentiles. scale: scene pixels per thumbnail pixel. detections: in scene pixels;
    circle colour by class (orange fishing, cyan other vessel, yellow non-vessel), opacity by
    score. labels: optional ground truth (rows, cols, is_vessel) in scene pixels, drawn as
    hollow squares (green vessel, magenta non-vessel, white unknown). title: text in the top
    bar; the default names the counts. The image is resized to fit ``max_side`` (the default is
    2048) and, if smaller, enlarged to ``min_side`` (the default is 768) so that markers and
    text stay readable. pixel_size_m: scene pixel spacing for the scale note (m); the default is
    10. Returns the path written.
    """
    from PIL import Image, ImageDraw

    path = Path(path)
    thumb = np.asarray(thumbnail)
    if thumb.ndim != 2:
        raise ValueError(f"thumbnail must be 2-D, got shape {thumb.shape}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if thumb.size == 0:
        log.warning("%s: empty thumbnail; drawing on a blank canvas", path)
        thumb = np.zeros((64, 64), np.uint8)
    grey = _stretch(thumb)
    h, w = grey.shape
    f = quicklook_zoom(h, w, max_side=max_side, min_side=min_side)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    resampling = getattr(Image, "Resampling", Image)  # Pillow < 9.1 has the bare constants
    img = Image.fromarray(grey).resize(
        size, resampling.BOX if f < 1 else resampling.NEAREST).convert("RGBA")
    font = default_font(max(12, round(max(img.size) / 70)))
    ox = oy = 0  # canvas columns left of / rows above the scene
    if min(img.size) < _MIN_CANVAS:  # a long thin scene: room for the title and legend
        if img.size[1] < _MIN_CANVAS:  # wide: the strip under the title, the legend below
            oy = _line_height(font) + 16
            size = (img.size[0], _MIN_CANVAS + oy)
        else:  # tall: the title and legend left of the strip
            ox = _MIN_CANVAS
            size = (img.size[0] + ox, img.size[1])
        canvas = Image.new("RGBA", size, (0, 0, 0, 255))
        canvas.paste(img, (ox, oy))
        img = canvas
    k = f / scale  # image px per scene px
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    long_side = max(img.size)  # unchanged by the padding (the long side is >= the minimum)
    marker = max(7.0, long_side / 100.0)
    line = max(2, round(long_side / 900))

    if labels is not None:
        lr, lc, lv = (np.asarray(a, np.float64).reshape(-1) for a in labels)
        half = 1.6 * marker
        for r, c, v in zip(lr * k + oy, lc * k + ox, lv, strict=True):
            colour = _GT_UNKNOWN if not math.isfinite(v) else _GT_VESSEL if v else _GT_OTHER
            draw.rectangle((c - half, r - half, c + half, r + half), outline=colour, width=line)

    is_vessel, is_fishing = _class_flags(detections.classes, vessel_classes, fishing_classes)
    order = np.argsort(detections.scores, kind="stable")  # best drawn last, on top
    for i in order:
        r, c = float(detections.rows[i]) * k + oy, float(detections.cols[i]) * k + ox
        box = detections.boxes[i].astype(np.float64) * k
        rad = max(marker, 0.5 * max(box[2] - box[0], box[3] - box[1]))
        base = _FISHING if is_fishing[i] else _VESSEL if is_vessel[i] else _OTHER
        alpha = int(round(90 + 165 * float(np.clip(detections.scores[i], 0, 1))))
        draw.ellipse((c - rad, r - rad, c + rad, r + rad), outline=(*base, alpha), width=line)
        draw.ellipse((c - 1.5, r - 1.5, c + 1.5, r + 1.5), fill=(*base, alpha))

    img = Image.alpha_composite(img, overlay)
    draw = ImageDraw.Draw(img)
    n_v = int(is_vessel.sum())
    n_f = int(is_fishing.sum())
    text = title or f"{len(detections)} detections"
    _text_box(draw, (8, 8), [(text, (255, 255, 255), None)], font, img.size)
    legend: list[tuple[str, tuple[int, int, int], str | None]] = [
        (f"fishing vessel ({n_f})", _FISHING, "circle"),
        (f"vessel ({n_v - n_f})", _VESSEL, "circle"),
        (f"non-vessel ({len(detections) - n_v})", _OTHER, "circle"),
        ("opacity = score", (220, 220, 220), None),
    ]
    if labels is not None:
        lv = np.asarray(labels[2], np.float64).reshape(-1)
        legend += [(f"truth: vessel ({int((lv == 1).sum())})", _GT_VESSEL, "square"),
                   (f"truth: non-vessel ({int((lv == 0).sum())})", _GT_OTHER, "square")]
        if np.isnan(lv).any():
            legend.append((f"truth: unknown ({int(np.isnan(lv).sum())})", _GT_UNKNOWN, "square"))
    legend.append((f"1 px = {scale / f:.3g} scene px ({scale / f * pixel_size_m:.3g} m)",
                   (220, 220, 220), None))
    lh = _line_height(font)
    _text_box(draw, (8, img.size[1] - 8 - lh * len(legend) - 8), legend, font, img.size)
    with atomic_open(path, binary=True) as fh:
        # Level 3: half the time of the default 6 and a smaller file on speckled scenes.
        img.convert("RGB").save(fh, format="PNG", compress_level=3)
    log.info("wrote %s (%d x %d px)", path, img.size[0], img.size[1])
    return path


def write_json(path: Path | str, data: object) -> Path:
    """Write ``data`` as indented JSON, atomically (a kill never leaves half a file).

    NaN and infinities become null (:func:`json_safe`): strict JSON has neither, and strict
    parsers (JavaScript's ``JSON.parse``, Go, jq) reject the ``NaN`` token Python would write.
    """
    path = Path(path)
    text = json.dumps(json_safe(data), indent=2, allow_nan=False)
    with atomic_open(path) as fh:
        fh.write(text + "\n")
    return path


def json_safe(obj: object) -> object:
    """``obj`` with every non-finite float as None, numpy scalars and arrays as Python values,
    tuples as lists: what ``json.dumps(..., allow_nan=False)`` accepts.

    >>> json_safe({"a": float("nan"), "b": [1.5, float("inf")], "c": np.float32(2)})
    {'a': None, 'b': [1.5, None], 'c': 2.0}
    """
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    elif isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k) if not isinstance(k, str) else k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def check_out_dir(out_dir: Path) -> None:
    """Create the output folder, or say in one line why it cannot be used."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SarvesselError(f"--out {out_dir}: exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SarvesselError(f"--out {out_dir}: cannot create the folder ({exc.strerror})") \
            from exc
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise SarvesselError(f"--out {out_dir}: folder is not writable")


def check_writable_file(path: Path, *, option: str | None = None) -> None:
    """Refuse, in one line, an output path that is a folder, lies under a file or in a folder
    that cannot be written; create missing parent folders. Call it before any work.

    option: the command-line option that named the path (e.g. ``"--json"``), for the message.
    """
    path = Path(path)
    name = f"{option} {path}" if option else str(path)
    if path.is_dir():
        raise SarvesselError(f"{name}: is a folder; an output file is written here")
    parent = path.parent
    for up in [parent, *parent.parents]:  # a file where a folder must be: say which
        if up.exists():
            if not up.is_dir():
                raise SarvesselError(f"{name}: {up} is a file, not a folder")
            break
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SarvesselError(f"{name}: cannot create the folder {parent} "
                                 f"({exc.strerror})") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SarvesselError(f"{name}: cannot write {path.name} in {parent}")


def remove_stale_temporaries(folder: Path, targets: Collection[Path], *,
                             owned: bool = False) -> None:
    """Delete temporaries that a killed writer of ``targets`` left in ``folder``.

    :func:`atomic_open` writes ``.<name>.<pid>.tmp`` beside each output and renames it; a
    SIGKILL between the two leaves it behind. Only names of ``targets`` are touched. owned:
    the caller holds the job lock of these targets (:mod:`sarvessel.runtime.journal`), so any
    temporary of theirs is a dead writer's and is removed; the default (False) removes only
    those whose pid is not alive.
    """
    for target in targets:
        for tmp in Path(folder).glob(f".{glob.escape(Path(target).name)}.*.tmp"):
            pid = tmp.name[len(Path(target).name) + 2 : -len(".tmp")]
            if pid.isdigit() and (owned or not _pid_alive(int(pid))):
                with contextlib.suppress(OSError):
                    tmp.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def quicklook_zoom(height: int, width: int, *, max_side: int = 2048, min_side: int = 768
                   ) -> float:
    """Zoom factor :func:`write_quicklook_png` applies to a ``height`` × ``width`` thumbnail.

    >>> quicklook_zoom(1000, 4096), quicklook_zoom(100, 200), quicklook_zoom(1000, 1500)
    (0.5, 3.84, 1.0)
    """
    long_side = max(height, width)
    if long_side > max_side:
        return max_side / long_side
    if long_side < min_side:
        return min(min_side, max_side) / long_side
    return 1.0


# ---------------------------------------------------------------------------------------------
# helpers

#: Smallest side of a quicklook canvas (px): the legend needs about this much.
_MIN_CANVAS = 320
_VESSEL = (0, 220, 255)
_FISHING = (255, 140, 0)
_OTHER = (255, 235, 0)
_GT_VESSEL = (60, 255, 60)
_GT_OTHER = (255, 60, 255)
_GT_UNKNOWN = (255, 255, 255)


@contextmanager
def atomic_open(path: Path, *, binary: bool = False) -> Iterator[IO]:
    """Open a temporary sibling of ``path``; on success fsync and move it onto ``path``.

    Every file the runtime must never leave half-written goes through here (outputs, the
    scene journal); :func:`remove_stale_temporaries` clears what a killed writer left.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"newline": "",
                                                                       "encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _class_flags(classes: np.ndarray, vessel: Collection[int], fishing: Collection[int]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """is_vessel, is_fishing of each class index (a fishing class is always a vessel)."""
    classes = np.asarray(classes, np.int64)
    is_fishing = np.isin(classes, np.asarray(list(fishing), np.int64))
    is_vessel = np.isin(classes, np.asarray(list(vessel), np.int64)) | is_fishing
    return is_vessel, is_fishing


def _num(x: float, digits: int) -> str:
    """Compact decimal text of a float (no exponent, trailing zeros trimmed)."""
    s = f"{x:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def _round(x: float, digits: int) -> float | None:
    """JSON-safe rounded float; None for NaN/inf (JSON has no NaN)."""
    x = float(x)
    return round(x, digits) if math.isfinite(x) else None


def _stretch(thumb: np.ndarray) -> np.ndarray:
    """Contrast-stretch a uint8 (0 = nodata) or float dB thumbnail to uint8 grey (nodata 0)."""
    if thumb.dtype == np.uint8:
        valid = thumb > 0
        values = thumb.astype(np.float32)
    else:
        values = thumb.astype(np.float32)
        valid = np.isfinite(values) & (values != -32768.0)
    out = np.zeros(thumb.shape, np.uint8)
    if not valid.any():
        return out
    lo, hi = np.percentile(values[valid], [1.0, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    grey = np.clip((values - lo) / (hi - lo), 0, 1) * 230 + 25  # nodata stays darker than sea
    out[valid] = np.rint(grey[valid]).astype(np.uint8)
    return out




def _line_height(font) -> int:
    top, bottom = font.getbbox("Ag[]")[1::2]
    return int(bottom - top) + 6


def _text_box(draw, xy: tuple[int, int],
              lines: list[tuple[str, tuple[int, int, int], str | None]], font,
              size: tuple[int, int]) -> None:
    """Lines of coloured text, each after an optional circle/square icon, on a dark box."""
    lh = _line_height(font)
    icon = lh - 8
    width = max(int(draw.textlength(t, font=font)) for t, _, _ in lines) + 24 + icon
    x, y = xy[0], max(0, xy[1])
    x1 = max(x, min(x + width, size[0] - 1))
    y1 = max(y, min(y + lh * len(lines) + 8, size[1] - 1))
    draw.rectangle((x, y, x1, y1), fill=(0, 0, 0))
    for j, (text, colour, kind) in enumerate(lines):
        ty = y + 4 + j * lh
        tx = x + 8
        if any(k for _, _, k in lines):
            box = (tx, ty + 3, tx + icon, ty + 3 + icon)
            if kind == "circle":
                draw.ellipse(box, outline=colour, width=2)
            elif kind == "square":
                draw.rectangle(box, outline=colour, width=2)
            tx += icon + 8
        draw.text((tx, ty), text, fill=colour, font=font)
