"""Training data from xView3-format scenes: real ones a user has, or generated ones.

A scene data folder has ``train/`` and ``val/`` sub-folders, each holding scene folders and a
``labels.csv`` in the xView3 columns (the layout :func:`sarvessel.synth.generate.synthesize_scene`
writes). :func:`ensure_synthetic_scenes` fills such a folder with generated scenes. Seeds are kept
apart so evaluation never sees a training scene: training uses seeds ``0..n-1``, validation
:data:`VAL_SEEDS`, and held-out evaluation (``scripts/eval_scenes.py``) seeds >= 900.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarvessel.model.augment import AugmentConfig
from sarvessel.model.data import SceneChipDataset, load_scene, read_xview3_labels
from sarvessel.runtime.errors import SarvesselError

log = logging.getLogger(__name__)

#: Seeds of the generated validation scenes (training uses 0..n-1; evaluation >= 900).
VAL_SEEDS = (800, 801)


def ensure_synthetic_scenes(root: Path, *, n_train: int, size: int = 4096) -> None:
    """Generate the missing training (seeds 0..n_train-1) and validation scenes under ``root``."""
    from sarvessel.synth.generate import synthesize_scene

    for split, seeds in (("train", range(n_train)), ("val", VAL_SEEDS)):
        for seed in seeds:
            sid = f"synth{seed:04d}{size}x{size}v"
            if not (root / split / sid / "VH_dB.tif").is_file():
                log.info("generating %s scene %s", split, sid)
                synthesize_scene(root / split, height=size, width=size, seed=seed)


def scene_datasets(
    root: Path, *, train_size: int, tile_size: int, augment: AugmentConfig, seed: int,
    negatives: int = 4,
) -> tuple[SceneChipDataset, SceneChipDataset]:
    """Chip datasets of ``root/train`` (augmented) and ``root/val`` (fixed chips, tile size)."""
    return (
        SceneChipDataset(_load_split(root / "train"), chip=train_size, negatives=negatives,
                         augment=augment, seed=seed),
        SceneValDataset(_load_split(root / "val"), chip=tile_size, negatives=1, seed=seed),
    )


@dataclass(frozen=True)
class _Truth:
    boxes: np.ndarray


class SceneValDataset(SceneChipDataset):
    """Fixed validation chips (no augmentation), with the ``items`` / ``letterbox_scale`` view
    that :func:`sarvessel.model.evaluate.evaluate_ap` reads ground truth through."""

    def __init__(self, scenes: list, *, chip: int, negatives: int, seed: int) -> None:
        super().__init__(scenes, chip=chip, negatives=negatives, augment=None, seed=seed)
        self._samples = [super(SceneValDataset, self).__getitem__(i) for i in range(len(self))]
        self.items = [_Truth(np.asarray(s[1], np.float32)) for s in self._samples]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._samples[index]

    def letterbox_scale(self, index: int) -> float:
        return 1.0


def _load_split(folder: Path) -> list:
    labels_csv = folder / "labels.csv"
    if not labels_csv.is_file():
        raise SarvesselError(f"{folder}: no labels.csv (expected xView3 scene folders and "
                             "labels.csv; use --synth-scenes N to generate them)")
    scenes = []
    for scene_dir in sorted(p for p in folder.iterdir() if (p / "VV_dB.tif").is_file()):
        labels = read_xview3_labels(labels_csv, scene_dir.name)
        scenes.append((load_scene(scene_dir), labels))
    if not scenes:
        raise SarvesselError(f"{folder}: no scene folders with VV_dB.tif")
    log.info("%s: %d scenes, %d labels", folder, len(scenes), sum(len(s[1]) for s in scenes))
    return scenes
