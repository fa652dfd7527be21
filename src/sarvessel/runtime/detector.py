"""A detector: a backend composed once with the post-processing stage its output needs.

The pipeline calls :meth:`Detector.infer` and :meth:`Detector.post` as two stages (timed apart,
and overlapped on the board: the accelerator runs one batch while the CPU post-processes the
last); :meth:`Detector.detect` runs both for callers that want detections of a batch at once.
:func:`make_detector` builds one by name so the CLI commands, the evaluation and benchmarks
agree on what ``--backend`` means.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarvessel.runtime.backends import BackendKind, make_backend
from sarvessel.runtime.backends.base import Backend, RawOutput
from sarvessel.runtime.contract import ModelMetadata
from sarvessel.runtime.detections import Detections
from sarvessel.runtime.post.stage import MAX_DET, HeadMapPost, PassThrough, PostStage


@dataclass
class Detector:
    """``backend`` followed by ``post``."""

    backend: Backend
    post: PostStage

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def channels(self) -> int:
        return self.backend.channels

    @property
    def tile_size(self) -> int:
        return self.backend.tile_size

    @property
    def metadata(self) -> ModelMetadata | None:
        """The model contract of a network backend (None for CFAR and noop)."""
        return getattr(self.backend, "metadata", None)

    @property
    def fingerprint(self) -> str:
        """What decides the detections: the backend's and the post stage's fingerprints."""
        backend = getattr(self.backend, "fingerprint", self.backend.name)
        return f"{backend}|{self.post.fingerprint}"

    def infer(self, batch: np.ndarray) -> RawOutput:
        return self.backend.infer(batch)

    def detect(self, batch: np.ndarray) -> list[Detections]:
        """Detections of each tile of ``batch`` (``uint8 [B, C, T, T]``), tile pixels."""
        return self.post(self.backend.infer(batch), batch)


def compose(backend: Backend, *, conf_threshold: float | None = None,
            iou_threshold: float | None = None, max_det: int = MAX_DET,
            second_stage: bool = True) -> Detector:
    """``backend`` with the post stage its output needs: the model contract's for a network
    backend (files it names relative to the backend's ``model_dir``), none otherwise."""
    meta = getattr(backend, "metadata", None)
    if meta is None:
        return Detector(backend, PassThrough())
    model_dir = getattr(backend, "model_dir", Path("."))
    return Detector(backend, HeadMapPost(meta, model_dir, conf_threshold=conf_threshold,
                                         iou_threshold=iou_threshold, max_det=max_det,
                                         second_stage=second_stage))


def make_detector(
    kind: BackendKind | str,
    *,
    model: Path | None = None,
    threads: int | None = None,
    tile_size: int | None = None,
    channels: int = 2,
    conf_threshold: float | None = None,
    iou_threshold: float | None = None,
    tta: int = 1,
    second_stage: bool = True,
    package: Path | None = None,
    paced: bool = False,
    batch_size: int = 1,
) -> Detector:
    """Build a backend by name (:func:`~sarvessel.runtime.backends.make_backend`) and compose
    it with its post stage. ``conf_threshold``/``iou_threshold`` override the model's own;
    ``second_stage=False`` leaves out the refiner and rescorer the sidecar names."""
    backend = make_backend(kind, model=model, threads=threads, tile_size=tile_size,
                           channels=channels, tta=tta, package=package, paced=paced,
                           batch_size=batch_size)
    return compose(backend, conf_threshold=conf_threshold, iou_threshold=iou_threshold,
                   second_stage=second_stage)
