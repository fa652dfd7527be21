"""Torch-free readers of labelled image datasets (SSDD in Pascal VOC form, YOLO-format folders).

Training (:mod:`sarvessel.model.data`) and the evaluation tools share these readers, so both see
the same boxes for the same image. Boxes are float32 ``[N, 4]`` as x1, y1, x2, y2 in pixels of the
image file (VOC ``bndbox`` values taken as they are, no 1-pixel shift); classes are int64 ``[N]``.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.preprocess import percentile_stretch

log = logging.getLogger(__name__)

#: Class names of SSDD (one class).
SSDD_CLASSES: tuple[str, ...] = ("ship",)

#: Low and high percentiles of :func:`~sarvessel.runtime.preprocess.percentile_stretch`.
Stretch = tuple[float, float]

#: PIL modes whose samples are 8-bit (read as they are, converted to grey).
_EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX",
                              "CMYK", "YCbCr", "LAB", "HSV"})

#: Image suffixes a YOLO folder may hold, in lookup order.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


class DatasetError(SarvesselError):
    """A dataset folder, annotation or label file cannot be used."""


class SsddSplit(str, Enum):
    """The official SSDD splits (``ImageSets/Main/<split>.txt``)."""

    TRAIN = "train"
    TEST = "test"
    TEST_INSHORE = "test_inshore"
    TEST_OFFSHORE = "test_offshore"


@dataclass
class LabeledImage:
    """One image and its boxes.

    path: the image file. width, height: image size in pixels. boxes: float32 ``[N, 4]`` x1, y1,
    x2, y2 in pixels. classes: int64 ``[N]`` class indices. difficult: bool ``[N]`` (VOC flag;
    all False for YOLO folders).
    """

    path: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    difficult: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.classes = np.asarray(self.classes, np.int64).reshape(-1)
        if self.difficult is None:
            self.difficult = np.zeros(len(self.boxes), bool)
        self.difficult = np.asarray(self.difficult, bool).reshape(-1)
        if not (len(self.classes) == len(self.boxes) == len(self.difficult)):
            raise DatasetError(f"{self.path}: {len(self.boxes)} boxes but "
                               f"{len(self.classes)} classes / {len(self.difficult)} flags")

    @property
    def stem(self) -> str:
        """The image id (file name without suffix)."""
        return self.path.stem


def read_voc_boxes(
    xml: Path | str, *, class_names: Sequence[str] = SSDD_CLASSES
) -> tuple[np.ndarray, np.ndarray]:
    """Read the boxes of one Pascal VOC annotation.

    Returns ``(boxes, classes)``: float32 ``[N, 4]`` x1, y1, x2, y2 in pixels and int64 ``[N]``
    indices into ``class_names`` (the default is SSDD's single class ``ship``).
    Raises :class:`DatasetError` naming the file for unparsable XML, unknown class names or
    boxes with x2 < x1 / y2 < y1.
    """
    ann = read_voc(xml, class_names=class_names)
    return ann.boxes, ann.classes


def read_voc(
    xml: Path | str, *, image_path: Path | str | None = None,
    class_names: Sequence[str] = SSDD_CLASSES,
) -> LabeledImage:
    """Read one VOC annotation (size, boxes, classes, difficult flags) as a :class:`LabeledImage`.

    ``image_path`` is recorded as the image file; the default is ``../JPEGImages/<filename>``
    relative to the XML (the VOC layout).
    """
    xml = Path(xml)
    try:
        root = ET.parse(xml).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DatasetError(f"{xml}: cannot read VOC annotation ({exc})") from exc
    try:
        size = root.find("size")
        width = int(float(size.findtext("width")))  # type: ignore[union-attr,arg-type]
        height = int(float(size.findtext("height")))  # type: ignore[union-attr,arg-type]
    except (AttributeError, TypeError, ValueError) as exc:
        raise DatasetError(f"{xml}: missing or bad <size> ({exc})") from exc
    boxes: list[list[float]] = []
    classes: list[int] = []
    difficult: list[bool] = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in class_names:
            raise DatasetError(f"{xml}: unknown class {name!r} (known: {list(class_names)})")
        bb = obj.find("bndbox")
        try:
            x1, y1, x2, y2 = (float(bb.findtext(k)) for k in  # type: ignore[union-attr,arg-type]
                              ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError) as exc:
            raise DatasetError(f"{xml}: bad <bndbox> ({exc})") from exc
        if not np.isfinite([x1, y1, x2, y2]).all():
            raise DatasetError(f"{xml}: box {x1, y1, x2, y2} has a non-finite coordinate")
        if x2 < x1 or y2 < y1:
            raise DatasetError(f"{xml}: box {x1, y1, x2, y2} has x2 < x1 or y2 < y1")
        boxes.append([x1, y1, x2, y2])
        classes.append(list(class_names).index(name))
        difficult.append((obj.findtext("difficult") or "0").strip() == "1")
    if image_path is None:
        fname = root.findtext("filename") or f"{xml.stem}.jpg"
        image_path = xml.parent.parent / "JPEGImages" / fname
    return LabeledImage(Path(image_path), width, height,
                        np.array(boxes, np.float32).reshape(-1, 4),
                        np.array(classes, np.int64), np.array(difficult, bool))


def load_ssdd(root: Path | str, split: SsddSplit | str) -> list[LabeledImage]:
    """Load one official SSDD split (``train``, ``test``, ``test_inshore``, ``test_offshore``).

    ``root`` holds ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/<split>.txt``.
    Returns the images in the order of the split file.
    """
    root = Path(root)
    try:
        split = SsddSplit(split)
    except ValueError as exc:
        raise DatasetError(f"unknown SSDD split {split!r} "
                           f"(choose from {[s.value for s in SsddSplit]})") from exc
    list_file = root / "ImageSets" / "Main" / f"{split.value}.txt"
    if not list_file.is_file():
        raise DatasetError(f"{list_file}: SSDD split file not found (is {root} the SSDD root?)")
    ids = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    items = []
    for image_id in ids:
        xml = root / "Annotations" / f"{image_id}.xml"
        items.append(read_voc(xml, image_path=root / "JPEGImages" / f"{image_id}.jpg"))
    log.debug("SSDD %s: %d images, %d boxes", split.value, len(items),
              sum(len(i.boxes) for i in items))
    return items


def read_yolo_labels(txt: Path | str, *, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one YOLO label file (``class cx cy w h`` per line, normalised to 0..1).

    Returns ``(boxes, classes)`` with boxes float32 ``[N, 4]`` x1, y1, x2, y2 in pixels of an
    image ``width`` × ``height``. A missing or empty file means no objects. Raises
    :class:`DatasetError` naming file and line for a malformed, non-finite or out-of-range
    value (ultralytics rejects such files too).
    """
    txt = Path(txt)
    if not txt.is_file():
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    rows = []
    for n, line in enumerate(txt.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise DatasetError(f"{txt}:{n}: expected 'class cx cy w h', got {line!r}")
        try:
            row = [float(p) for p in parts]
        except ValueError as exc:
            raise DatasetError(f"{txt}:{n}: not numbers: {line!r}") from exc
        if not all(np.isfinite(row)):
            raise DatasetError(f"{txt}:{n}: non-finite value in {line!r}")
        if not (all(0.0 <= v <= 1.0 for v in row[1:]) and row[3] > 0 and row[4] > 0):
            raise DatasetError(f"{txt}:{n}: cx cy w h must be normalised to 0..1 with w, h > 0, "
                               f"got {line!r}")
        rows.append(row)
    if not rows:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    a = np.array(rows, np.float64)
    if (a[:, 0] < 0).any() or (a[:, 0] != np.round(a[:, 0])).any():
        raise DatasetError(f"{txt}: class indices must be non-negative integers")
    cx, cy, w, h = a[:, 1] * width, a[:, 2] * height, a[:, 3] * width, a[:, 4] * height
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).astype(np.float32)
    return boxes, a[:, 0].astype(np.int64)


def load_yolo_folder(root: Path | str) -> list[LabeledImage]:
    """Load a YOLO-format folder: ``images/<name>.<ext>`` with ``labels/<name>.txt``.

    Images without a label file have no objects. Sizes come from the image headers.
    """
    root = Path(root)
    img_dir, lbl_dir = root / "images", root / "labels"
    if not img_dir.is_dir():
        raise DatasetError(f"{img_dir}: YOLO images folder not found")
    items = []
    for path in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        width, height = image_size(path)
        boxes, classes = read_yolo_labels(lbl_dir / f"{path.stem}.txt", width=width, height=height)
        items.append(LabeledImage(path, width, height, boxes, classes))
    return items


def write_yolo_labels(txt: Path | str, item: LabeledImage) -> None:
    """Write ``item``'s boxes as a YOLO label file (the inverse of :func:`read_yolo_labels`)."""
    b = item.boxes.astype(np.float64)
    w, h = float(item.width), float(item.height)
    lines = [
        f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
        f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
        for c, (x1, y1, x2, y2) in zip(item.classes.tolist(), b.tolist(), strict=True)
    ]
    Path(txt).write_text("".join(line + "\n" for line in lines))


def load_image_grey(path: Path | str, *, stretch: Stretch | None = None) -> np.ndarray:
    """Read an image file as uint8 ``[H, W]`` grey (SSDD JPEGs are grey stored as RGB).

    8-bit images (grey, RGB, palette) are read as they are. An image with deeper samples
    (16-bit, 32-bit, float; TIFFs through tifffile) needs ``stretch`` = (low, high)
    percentiles for :func:`~sarvessel.runtime.preprocess.percentile_stretch`; without it this
    raises, because SSDD-trained models expect 8-bit display images and clipping 16-bit or dB
    values into 0..255 would silently give them a white or black image. Images with several
    bands of deep samples are refused too (which band to use is the user's call).
    """
    path = Path(path)
    values = None
    try:
        with Image.open(path) as im:
            frames = getattr(im, "n_frames", 1)
            if im.mode in _EIGHT_BIT_MODES and frames == 1:
                return np.asarray(im.convert("L"), dtype=np.uint8)
            if not _is_tiff(path):  # TIFF pages (bands or overviews) are tifffile's to sort
                if frames > 1:
                    raise DatasetError(f"{path}: {frames} frames; one band (grey) is needed")
                values = np.asarray(im)
    except OSError as exc:  # PIL's UnidentifiedImageError is an OSError
        if not _is_tiff(path):
            raise DatasetError(f"{path}: cannot read image ({exc})") from exc
    if values is None:
        values = _read_tiff(path)
    return _deep_to_grey(values, path, stretch)


def image_size(path: Path | str) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header (PIL, or tifffile for TIFFs PIL
    cannot open, e.g. float ones with several samples per pixel)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            return im.size
    except OSError as exc:
        if not _is_tiff(path):
            raise DatasetError(f"{path}: cannot read image ({exc})") from exc
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            return int(page.imagewidth), int(page.imagelength)
    except (tifffile.TiffFileError, ValueError, OSError, IndexError) as exc:
        raise DatasetError(f"{path}: cannot read TIFF ({exc})") from exc


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in (".tif", ".tiff")


def _read_tiff(path: Path) -> np.ndarray:
    try:
        return np.asarray(tifffile.imread(path))
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError) as exc:
        raise DatasetError(f"{path}: cannot read TIFF ({exc})") from exc


def _deep_to_grey(values: np.ndarray, path: Path, stretch: Stretch | None) -> np.ndarray:
    """One band of any sample type to uint8 grey (see :func:`load_image_grey`)."""
    band = np.squeeze(values)
    if band.ndim != 2 or band.size == 0:
        raise DatasetError(
            f"{path}: samples of shape {values.shape}; one band (grey) is needed. Write the "
            "band to evaluate on to its own file")
    if band.dtype == np.uint8:
        return np.ascontiguousarray(band)
    if not (np.issubdtype(band.dtype, np.integer) or np.issubdtype(band.dtype, np.floating)
            or band.dtype == np.bool_):
        raise DatasetError(f"{path}: {band.dtype} samples cannot be read as grey levels")
    if stretch is None:
        raise DatasetError(
            f"{path}: {band.dtype} samples, not 8-bit. SSDD-style models take 8-bit grey "
            "images: pass --stretch LO,HI (sarvessel eval and train; e.g. --stretch 1,99.9) to "
            "map each image's LO..HI "
            "percentiles linearly onto 0..255, or convert the images to 8 bits the way the "
            "model's training images were")
    try:
        return percentile_stretch(band, *stretch)
    except ValueError as exc:
        raise DatasetError(f"{path}: {exc}") from exc
