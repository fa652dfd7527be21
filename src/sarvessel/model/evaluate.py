"""Quick AP50 in torch/numpy for training-time validation (the official AP lives in the runtime).

All-point interpolated average precision (VOC 2010+) at one IoU threshold, detections matched
greedily by score to unmatched ground truth of the same class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sarvessel.model.boxes import box_iou_matrix, decode_raw
from sarvessel.model.data import ImageDataset, SceneChipDataset, collate

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
    scores, tps = [], []
    for (boxes, sc), gt in zip(detections, ground_truth, strict=True):
        if len(sc) == 0:
            continue
        order = np.argsort(-np.asarray(sc))
        boxes, sc = np.asarray(boxes)[order], np.asarray(sc)[order]
        tp = np.zeros(len(sc), bool)
        if len(gt):
            iou = box_iou_matrix(torch.as_tensor(boxes, dtype=torch.float32),
                                 torch.as_tensor(gt, dtype=torch.float32)).numpy()
            used = np.zeros(len(gt), bool)
            for i in range(len(sc)):
                cand = np.where(~used, iou[i], -1.0)
                j = int(cand.argmax())
                if cand[j] >= iou_threshold:
                    used[j] = True
                    tp[i] = True
        scores.append(sc)
        tps.append(tp)
    if not scores:
        return 0.0
    sc = np.concatenate(scores)
    tp = np.concatenate(tps)[np.argsort(-sc, kind="stable")]
    ctp = np.cumsum(tp)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, len(tp) + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


@torch.no_grad()
def predict_dataset(model: torch.nn.Module, dataset: ImageDataset | SceneChipDataset, *,
                    batch: int = 8,
                    conf_threshold: float = 0.001, iou_threshold: float = 0.5,
                    stride: int = 8, reg_max: int = 16
                    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image (boxes in original image px, scores, classes) from letterboxed tiles."""
    was = model.training
    model.eval()
    out = []
    try:
        for s in range(0, len(dataset), batch):
            idx = list(range(s, min(s + batch, len(dataset))))
            b = collate([dataset[i] for i in idx])
            raw = model(b.images)
            for i, (bx, sc, cl) in zip(idx, decode_raw(raw, stride=stride, reg_max=reg_max,
                                                       conf_threshold=conf_threshold,
                                                       iou_threshold=iou_threshold),
                                       strict=True):
                scale = dataset.letterbox_scale(i)
                out.append(((bx / scale).numpy(), sc.numpy(), cl.numpy()))
    finally:
        model.train(was)
    return out


def evaluate_ap(model: torch.nn.Module, dataset: ImageDataset | SceneChipDataset, *,
                iou_threshold: float = 0.5,
                batch: int = 8, stride: int = 8, reg_max: int = 16) -> float:
    """Class-agnostic AP at ``iou_threshold`` of ``model`` on ``dataset`` (eval tiles)."""
    preds = predict_dataset(model, dataset, batch=batch, stride=stride, reg_max=reg_max)
    return average_precision([(p[0], p[1]) for p in preds],
                             [dataset.ground_truth(i) for i in range(len(dataset))],
                             iou_threshold=iou_threshold)
