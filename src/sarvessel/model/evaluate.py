"""Quick AP50 for training-time validation: torch inference on the letterboxed tiles, decoded by
the runtime's :func:`~sarvessel.runtime.post.decode.decode` (as every backend) and scored by the
runtime's COCO matching (:func:`sarvessel.evaluation.ap.match_image`) with all-point
interpolation (VOC 2010+), at one IoU threshold and class-agnostic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from sarvessel.evaluation.ap import Interpolation, match_image
from sarvessel.evaluation.ap import average_precision as runtime_ap
from sarvessel.model.data import ImageDataset, SceneChipDataset, collate
from sarvessel.runtime.post.decode import decode

if TYPE_CHECKING:
    from sarvessel.model.network import SarYolo

__all__ = ["average_precision", "evaluate_ap", "predict_dataset"]


def average_precision(detections: Sequence[tuple[np.ndarray, np.ndarray]],
                      ground_truth: Sequence[np.ndarray], *, iou_threshold: float = 0.5) -> float:
    """AP of one class. ``detections[i]`` = (boxes ``[K, 4]``, scores ``[K]``) of image i;
    ``ground_truth[i]`` = boxes ``[G, 4]`` (x1y1x2y2, same units).

    >>> gt = [np.array([[0, 0, 10, 10]], np.float32)]
    >>> average_precision([(np.array([[0, 0, 10, 10]], np.float32), np.array([0.9]))], gt)
    1.0
    """
    n_gt = sum(len(g) for g in ground_truth)
    if n_gt == 0:
        return 0.0
    tps, scores = [], []
    for (boxes, sc), gt in zip(detections, ground_truth, strict=True):
        tp, _ = match_image(boxes, sc, gt, iou_thresholds=(iou_threshold,))
        tps.append(tp[:, 0])
        scores.append(np.asarray(sc, np.float64).reshape(-1))
    ap, _ = runtime_ap(np.concatenate(tps), np.concatenate(scores), n_gt,
                       interpolation=Interpolation.ALL_POINT)
    return ap


@torch.no_grad()
def predict_dataset(model: SarYolo, dataset: ImageDataset | SceneChipDataset, *,
                    batch: int = 8, conf_threshold: float = 0.001, iou_threshold: float = 0.5
                    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image (boxes in original image px, scores, classes) from letterboxed tiles; the
    anchor-grid map (``model.forward_grid``, what the loss reads) decoded with the model's own
    stride, ``reg_max`` and ``subgrid``."""
    cfg = model.cfg
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for s in range(0, len(dataset), batch):
            idx = list(range(s, min(s + batch, len(dataset))))
            b = collate([dataset[i] for i in idx])
            raw = model.forward_grid(b.images.to(device)).cpu().numpy()
            dets = decode(raw, stride=cfg.stride, reg_max=cfg.reg_max, subgrid=cfg.subgrid,
                          conf_threshold=conf_threshold, iou_threshold=iou_threshold)
            for i, d in zip(idx, dets, strict=True):
                xyxy = d.boxes[:, [1, 0, 3, 2]] / dataset.letterbox_scale(i)  # tlbr -> x1y1x2y2
                out.append((xyxy, d.scores, d.classes))
    finally:
        model.train(was)
    return out


def evaluate_ap(model: SarYolo, dataset: ImageDataset | SceneChipDataset, *,
                iou_threshold: float = 0.5, batch: int = 8) -> float:
    """Class-agnostic AP at ``iou_threshold`` of ``model`` on ``dataset`` (eval tiles)."""
    preds = predict_dataset(model, dataset, batch=batch)
    return average_precision([(p[0], p[1]) for p in preds],
                             [dataset.ground_truth(i) for i in range(len(dataset))],
                             iou_threshold=iou_threshold)
