"""Training datasets: SSDD images and xView3-style scene chips, as uint8 tiles with boxes.

Samples are ``(image uint8 [C, S, S], boxes float32 [N, 4] x1y1x2y2 px, classes int64 [N])``;
:func:`collate` pads boxes to ``[B, M, 4]`` with a mask. Randomness is drawn from
``np.random.default_rng([seed, epoch, index])`` so a run is reproducible and resumable.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sarvessel.evaluation.datasets import LabeledImage, load_image_grey
from sarvessel.model.augment import (
    AugmentConfig,
    augment,
    augment_mosaic,
    cut_patch,
    flip,
    letterbox,
    paste_patches,
    resize,
    rot90,
)
from sarvessel.runtime.contract import TILE_SIZE
from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.preprocess import DEFAULT_BANDS, BandRange, preprocess

log = logging.getLogger(__name__)

__all__ = ["Batch", "ChipLabel", "ImageDataset", "SceneChipDataset", "collate", "load_scene",
           "read_xview3_labels"]


@dataclass
class Batch:
    """A collated batch: images float ``[B, C, S, S]`` (0..255), boxes ``[B, M, 4]`` px,
    labels int64 ``[B, M]``, mask bool ``[B, M]``."""

    images: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor

    def to(self, device: torch.device, *, non_blocking: bool = False) -> Batch:
        """The batch on ``device``, its images as float32 (uint8 ones are converted there)."""
        images = self.images.to(device, non_blocking=non_blocking).float()
        return Batch(images, *(t.to(device, non_blocking=non_blocking)
                               for t in (self.boxes, self.labels, self.mask)))

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory (torch's ``DataLoader(pin_memory=True)`` calls this),
        so that copies to a GPU overlap with compute."""
        return Batch(*(t.pin_memory() for t in (self.images, self.boxes, self.labels, self.mask)))


def collate(samples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], *,
            dtype: torch.dtype = torch.float32) -> Batch:
    """Stack samples and pad their boxes to the largest count in the batch. dtype: of the
    images; ``torch.uint8`` keeps them 4x smaller between processes (:meth:`Batch.to` then
    gives float ones)."""
    images = torch.from_numpy(np.stack([s[0] for s in samples])).to(dtype)
    m = max(1, max(len(s[1]) for s in samples))
    b = len(samples)
    boxes = torch.zeros(b, m, 4)
    labels = torch.zeros(b, m, dtype=torch.long)
    mask = torch.zeros(b, m, dtype=torch.bool)
    for i, (_, bx, cl) in enumerate(samples):
        n = len(bx)
        if n:
            boxes[i, :n] = torch.from_numpy(np.asarray(bx, np.float32))
            labels[i, :n] = torch.from_numpy(np.asarray(cl, np.int64))
            mask[i, :n] = True
    return Batch(images, boxes, labels, mask)


class ImageDataset(Dataset):
    """Labelled images (SSDD, YOLO folders) as fixed-size uint8 tiles.

    Images are read once and kept in memory (SSDD: ~200 MB grey). Training samples
    (``augment`` set) are letterbox-scaled to ``tile_size`` then augmented and cropped/padded to
    ``train_size``; evaluation samples are letterboxed to ``tile_size`` at the top-left.
    """

    def __init__(self, items: Sequence[LabeledImage], *, tile_size: int = TILE_SIZE,
                 train_size: int | None = None, augment: AugmentConfig | None = None,
                 seed: int = 0, channels: int = 1, input_scale: float = 1.0,
                 stretch: tuple[float, float] | None = None) -> None:
        self.items = list(items)
        #: Percentiles for images deeper than 8 bits (see ``load_image_grey``); None refuses them.
        self.stretch = stretch
        #: The model's ``input_scale``: every image is resampled by it first.
        self.input_scale = input_scale
        self.tile_size = tile_size
        self.train_size = train_size or tile_size
        self.augment = augment
        self.seed, self.epoch = seed, 0
        self.channels = channels
        #: Draw mosaics (``augment.mosaic``); the training loop turns it off for the last
        #: ``close_mosaic`` epochs so the model ends on whole, unstitched images.
        self.use_mosaic = True
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of ``epoch``."""
        self.epoch = epoch

    def image(self, index: int) -> np.ndarray:
        """The stored image ``[C, H, W]`` uint8 (grey repeated to ``channels``)."""
        if index not in self._cache:
            g = load_image_grey(self.items[index].path, stretch=self.stretch)
            self._cache[index] = np.repeat(g[None], self.channels, 0)
        return self._cache[index]

    def ground_truth(self, index: int) -> np.ndarray:
        """Boxes ``[N, 4]`` of image ``index`` in original image pixels."""
        return self.items[index].boxes

    def letterbox_scale(self, index: int) -> float:
        """Scale applied to image ``index``: ``input_scale``, shrunk to fit the tile.

        Training shrinks oversized images to the tile (unless ``augment.shrink_oversize`` is
        off), then applies ``input_scale`` (its crops need not hold the whole image); evaluation
        fits the resampled image into one tile, so large images are seen coarser than the
        runtime, which tiles them, sees them: the per-epoch validation AP is an approximation.
        """
        it = self.items[index]
        fit = self.tile_size / max(it.width, it.height)
        if self.augment is None:
            return min(self.input_scale, fit)
        if not self.augment.shrink_oversize:
            return self.input_scale
        return min(1.0, fit) * self.input_scale

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        it = self.items[index]
        img = self.image(index)
        if self.augment is None:
            boxes = it.boxes
            if self.input_scale != 1.0:
                img, boxes = resize(img, boxes, self.letterbox_scale(index))
            tile, boxes, _ = letterbox(img, boxes, self.tile_size)
            return tile, boxes, it.classes.copy()
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.use_mosaic and self.augment.mosaic > 0 and rng.random() < self.augment.mosaic:
            picks = [index, *(int(i) for i in rng.integers(len(self.items), size=3))]
            return augment_mosaic([(self.image(i), self.items[i].boxes, self.items[i].classes,
                                    self.letterbox_scale(i)) for i in picks],
                                  self.train_size, rng, self.augment)
        sample = augment(img, it.boxes, it.classes, self.train_size, rng, self.augment,
                         base_scale=self.letterbox_scale(index))
        if self.augment.copy_paste > 0 and rng.random() < self.augment.copy_paste:
            sample = paste_patches(*sample, self._draw_patches(rng), rng)
        return sample

    def _draw_patches(self, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """Ships cut from random training images for :func:`paste_patches`, each at its image's
        letterbox scale times a random scale, randomly flipped and rotated."""
        cfg = self.augment
        assert cfg is not None
        out = []
        for _ in range(int(rng.integers(cfg.paste_n[0], cfg.paste_n[1] + 1))):
            j = int(rng.integers(len(self.items)))
            item = self.items[j]
            if not len(item.boxes):
                continue
            k = int(rng.integers(len(item.boxes)))
            patch, rel = cut_patch(self.image(j), item.boxes[k])
            patch, rel = resize(patch, rel[None], self.letterbox_scale(j) * rng.uniform(*cfg.scale))
            patch, rel = rot90(patch, rel, int(rng.integers(4)))
            if rng.random() < 0.5:
                patch, rel = flip(patch, rel, horizontal=True)
            out.append((patch, rel[0], int(item.classes[k])))
        return out


# ----------------------------------------------------------------------------------------------
# xView3-style scenes


@dataclass(frozen=True)
class ChipLabel:
    """One point label of a scene: row, col (px), class (0 non-vessel, 1 vessel, 2 fishing) and
    a box half-size in pixels."""

    row: float
    col: float
    cls: int
    half: float


def read_xview3_labels(csv_path: Path | str, scene_id: str | None = None, *,
                       pixel_m: float = 10.0, min_box: float = 16.0) -> list[ChipLabel]:
    """Read an xView3 labels CSV (optionally one scene) into :class:`ChipLabel` points.

    Box size: from top/left/bottom/right when present, else from ``vessel_length_m`` /
    ``pixel_m``, never smaller than ``min_box`` pixels. Class = is_vessel + is_fishing (NaN as
    False). Raises :class:`SarvesselError` when columns are missing.
    """
    path = Path(csv_path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise SarvesselError(f"{path}: cannot read labels ({exc})") from exc
    need = {"detect_scene_row", "detect_scene_column", "is_vessel"}
    if rows and not need <= set(rows[0]):
        raise SarvesselError(f"{path}: missing columns {sorted(need - set(rows[0]))}")
    out = []
    for r in rows:
        if scene_id is not None and r.get("scene_id") != scene_id:
            continue
        row, col = float(r["detect_scene_row"]), float(r["detect_scene_column"])
        size = float("nan")
        t, lft, b, rt = (_num(r.get(k)) for k in ("top", "left", "bottom", "right"))
        if all(math.isfinite(v) for v in (t, lft, b, rt)):
            size = max(abs(b - t), abs(rt - lft))
        if not math.isfinite(size):
            length = _num(r.get("vessel_length_m"))
            size = length / pixel_m if math.isfinite(length) else float("nan")
        size = max(size if math.isfinite(size) else 0.0, min_box)
        cls = int(_flag(r.get("is_vessel"))) + int(_flag(r.get("is_fishing")))
        out.append(ChipLabel(row, col, cls, size / 2))
    return out


def load_scene(scene_dir: Path | str, ranges: Sequence[BandRange] = DEFAULT_BANDS
               ) -> np.ndarray:
    """Read a (small, e.g. synthetic) xView3 scene folder's bands as uint8 ``[C, H, W]`` with the
    shared :func:`~sarvessel.runtime.preprocess.preprocess` mapping."""
    import tifffile

    scene_dir = Path(scene_dir)
    bands = []
    for rng in ranges:
        p = scene_dir / f"{rng.name}.tif"
        if not p.is_file():
            raise SarvesselError(f"{p}: band file missing")
        bands.append(tifffile.imread(p).astype(np.float32))
    shapes = {b.shape for b in bands}
    if len(shapes) != 1:
        raise SarvesselError(f"{scene_dir}: band sizes differ {sorted(shapes)}")
    return preprocess(np.stack(bands), ranges)


class SceneChipDataset(Dataset):
    """Chips of xView3-style scenes: one around each label (random offset) plus hard negatives
    (random windows, ``negatives`` per scene per epoch), augmented, ``chip`` x ``chip`` px."""

    def __init__(self, scenes: Sequence[tuple[np.ndarray, list[ChipLabel]]], *,
                 chip: int = TILE_SIZE, negatives: int = 4,
                 augment: AugmentConfig | None = None, seed: int = 0) -> None:
        self.scenes = list(scenes)
        self.chip, self.augment, self.seed, self.epoch = chip, augment, seed, 0
        self.index: list[tuple[int, int]] = []
        for s, (_, labels) in enumerate(self.scenes):
            self.index += [(s, i) for i in range(len(labels))]
            self.index += [(s, -1)] * negatives

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of ``epoch``."""
        self.epoch = epoch

    def letterbox_scale(self, index: int) -> float:
        """Chips are taken at full resolution: 1."""
        return 1.0

    def ground_truth(self, index: int) -> np.ndarray:
        """Boxes ``[N, 4]`` of chip ``index`` in chip pixels (the un-augmented chip)."""
        aug, self.augment = self.augment, None
        try:
            return self[index][1]
        finally:
            self.augment = aug

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s, li = self.index[index]
        img, labels = self.scenes[s]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        _, h, w = img.shape
        c = self.chip
        if li >= 0:
            lab = labels[li]
            y0 = int(np.clip(lab.row - rng.uniform(0.15, 0.85) * c, 0, max(h - c, 0)))
            x0 = int(np.clip(lab.col - rng.uniform(0.15, 0.85) * c, 0, max(w - c, 0)))
        else:
            y0 = int(rng.integers(0, max(h - c, 0) + 1))
            x0 = int(rng.integers(0, max(w - c, 0) + 1))
        win = img[:, y0:y0 + c, x0:x0 + c]
        boxes, classes = [], []
        for lab in labels:
            r, cc = lab.row - y0, lab.col - x0
            if -lab.half < r < c + lab.half and -lab.half < cc < c + lab.half:
                boxes.append([cc - lab.half, r - lab.half, cc + lab.half, r + lab.half])
                classes.append(lab.cls)
        b = np.array(boxes, np.float32).reshape(-1, 4)
        k = np.array(classes, np.int64)
        if self.augment is None:
            from sarvessel.model.augment import crop_or_pad
            return crop_or_pad(np.ascontiguousarray(win), b, k, c, x0=0, y0=0)
        return augment(np.ascontiguousarray(win), b, k, c, rng, self.augment)


def _num(v: str | None) -> float:
    try:
        return float(v) if v not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def _flag(v: str | None) -> bool:
    s = (v or "").strip().lower()
    return s in ("true", "1", "1.0")
