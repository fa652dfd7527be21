"""Detections: a struct of arrays that flows from backends through merging to the writers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: xView3 class convention: label = is_vessel + is_fishing.
CLASS_NAMES: tuple[str, ...] = ("non_vessel", "vessel", "fishing")


@dataclass
class Detections:
    """N detections, one row each, in pixel coordinates of a tile or of the scene.

    rows, cols: centre (float pixels). scores: confidence in [0, 1]. classes: int class index
    (for scene models 0 non-vessel, 1 non-fishing vessel, 2 fishing; for single-class models 0).
    boxes: ``[N, 4]`` as top, left, bottom, right (pixels). lengths_px: object length in pixels
    (NaN when unknown); the scene's pixel spacing turns it into metres.
    """

    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    cols: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    lengths_px: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def __post_init__(self) -> None:
        self.rows = np.asarray(self.rows, np.float32).reshape(-1)
        self.cols = np.asarray(self.cols, np.float32).reshape(-1)
        self.scores = np.asarray(self.scores, np.float32).reshape(-1)
        self.classes = np.asarray(self.classes, np.int64).reshape(-1)
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.lengths_px = np.asarray(self.lengths_px, np.float32).reshape(-1)
        n = len(self.rows)
        for name in ("cols", "scores", "classes", "boxes", "lengths_px"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Detections.{name} has {len(getattr(self, name))} rows, not {n}")

    def __len__(self) -> int:
        return len(self.rows)

    def shifted(self, row0: float, col0: float) -> Detections:
        """Return a copy moved by (row0, col0): tile coordinates to scene coordinates."""
        off = np.array([row0, col0, row0, col0], np.float32)
        return Detections(self.rows + row0, self.cols + col0, self.scores, self.classes,
                          self.boxes + off, self.lengths_px)

    def scaled(self, factor: float) -> Detections:
        """Return a copy with positions, boxes and lengths multiplied by ``factor`` (back to the
        pixels of an image that was resampled before detection)."""
        f = np.float32(factor)
        return Detections(self.rows * f, self.cols * f, self.scores, self.classes,
                          self.boxes * f, self.lengths_px * f)

    def select(self, index: np.ndarray) -> Detections:
        """Return the detections picked by a boolean mask or integer index."""
        return Detections(self.rows[index], self.cols[index], self.scores[index],
                          self.classes[index], self.boxes[index], self.lengths_px[index])

    @staticmethod
    def concat(items: list[Detections]) -> Detections:
        """Concatenate several detection sets (an empty list gives an empty set)."""
        if not items:
            return Detections()
        return Detections(
            np.concatenate([d.rows for d in items]),
            np.concatenate([d.cols for d in items]),
            np.concatenate([d.scores for d in items]),
            np.concatenate([d.classes for d in items]),
            np.concatenate([d.boxes for d in items]),
            np.concatenate([d.lengths_px for d in items]),
        )
