"""YOLOv8 detection loss: CIoU + DFL on assigned anchors, BCE on IoU-aware class targets
(or one of two focal variants of it, :data:`CLASS_LOSSES`).

The loss takes explicit numbers (stride, reg_max, nc, gains), never the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sarvessel.model.anchors import bbox2dist, dfl_decode, dist2bbox, make_anchors
from sarvessel.model.assigner import TaskAlignedAssigner
from sarvessel.model.boxes import bbox_iou

__all__ = ["CLASS_LOSSES", "DetectionLoss", "class_loss", "df_loss"]

#: Class losses: ``bce`` (ultralytics' YOLOv8), ``qfl`` (quality focal loss, GFL, the loss DFL
#: was introduced with) and ``vfl`` (varifocal loss, VarifocalNet).
CLASS_LOSSES = ("bce", "qfl", "vfl", "bce+qfl")


def class_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """Summed class loss of ``logits`` against soft (IoU-valued) ``targets`` of the same shape.

    ``qfl`` weights each term by ``|target - p|**2``; ``vfl`` weights positives by their target
    and negatives by ``0.75 * p**2``. Why the focal ones exist: at stride 8 a tile has ~4000
    anchors, nearly all easy sea; both shrink those terms so the loss is spent on the hard
    negatives (quays, land) that make the detector's false alarms.
    """
    if "+" in kind and kind in CLASS_LOSSES:  # the mean of the named losses
        parts = kind.split("+")
        return sum(class_loss(logits, targets, k) for k in parts) / len(parts)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if kind == "bce":
        return bce.sum()
    p = logits.sigmoid().detach()
    if kind == "qfl":
        return (bce * (targets - p).abs().pow(2.0)).sum()
    if kind == "vfl":
        pos = (targets > 0).to(logits.dtype)
        return (bce * (0.75 * p.pow(2.0) * (1 - pos) + targets * pos)).sum()
    raise ValueError(f"class loss {kind!r} is not one of {CLASS_LOSSES}")


def df_loss(pred_dist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution focal loss: ``pred_dist`` ``[K, 4, reg_max]`` logits, ``target`` ``[K, 4]``
    distances in bins; returns ``[K, 1]`` (mean over the 4 sides)."""
    tl = target.long()
    tr = tl + 1
    wl = tr - target
    wr = 1 - wl
    reg = pred_dist.shape[-1]
    pd = pred_dist.reshape(-1, reg)
    ce_l = F.cross_entropy(pd, tl.view(-1), reduction="none").view(tl.shape)
    ce_r = F.cross_entropy(pd, tr.view(-1), reduction="none").view(tl.shape)
    return (ce_l * wl + ce_r * wr).mean(-1, keepdim=True)


class DetectionLoss(nn.Module):
    """Loss of the anchor-grid map ``[B, 4*reg_max+nc, h, w]`` (``SarYolo.forward_grid``)
    against padded targets. With ``subgrid`` r the map has r anchors per ``stride`` cell and
    axis, at ``(x + 0.5) * stride / r``; box distances stay in units of ``stride``.

    Gains default to ultralytics': box 7.5, cls 0.5, dfl 1.5. ``min_candidate_size`` (pixels,
    default 1.5 x the anchor spacing ``stride / subgrid``) lets boxes smaller than the anchor
    spacing still claim an anchor (see :class:`TaskAlignedAssigner`); pass 0 for ultralytics'
    behaviour. ``topk``: positives per box, 10 also with a subgrid (40 at subgrid 2 left small
    ships too few of the positives; SSDD model card, session 20). ``forward`` returns
    ``(total, parts)`` where total is ``sum(parts) * B`` (as ultralytics) and parts is the
    detached ``[box, cls, dfl]``. ``cls_loss``: one of :data:`CLASS_LOSSES` (default ``bce``).
    """

    def __init__(self, *, stride: int, reg_max: int = 16, nc: int = 1, box_gain: float = 7.5,
                 cls_gain: float = 0.5, dfl_gain: float = 1.5, topk: int = 10,
                 alpha: float = 0.5, beta: float = 6.0, min_candidate_size: float | None = None,
                 subgrid: int = 1, iou_targets: bool = True, cls_loss: str = "bce") -> None:
        super().__init__()
        if cls_loss not in CLASS_LOSSES:
            raise ValueError(f"class loss {cls_loss!r} is not one of {CLASS_LOSSES}")
        self.cls_loss = cls_loss
        self.stride, self.reg_max, self.nc, self.subgrid = stride, reg_max, nc, subgrid
        self.gains = (box_gain, cls_gain, dfl_gain)
        min_size = 1.5 * stride / subgrid if min_candidate_size is None else min_candidate_size
        self.assigner = TaskAlignedAssigner(topk=topk, num_classes=nc, alpha=alpha, beta=beta,
                                            min_size=min_size, iou_targets=iou_targets)

    def forward(self, raw: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                gt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """raw: the anchor-grid map. gt_boxes ``[B, M, 4]`` x1y1x2y2 pixels; gt_labels ``[B, M]``
        int; gt_mask ``[B, M]`` bool (False rows are padding)."""
        b, _, h, w = raw.shape
        r, s = self.reg_max, self.stride
        x = raw.flatten(2).permute(0, 2, 1).float()  # B, N, C
        pred_distri, pred_scores = x[..., : 4 * r], x[..., 4 * r:]
        anchors = make_anchors(h, w, s, device=raw.device) / self.subgrid  # stride units
        pred_bboxes = dist2bbox(dfl_decode(pred_distri, r), anchors)  # grid units
        mask_gt = gt_mask.unsqueeze(-1).float()
        _, target_bboxes, target_scores, fg_mask, _ = self.assigner(
            pred_scores.detach().sigmoid(), pred_bboxes.detach() * s, anchors * s,
            gt_labels.unsqueeze(-1), gt_boxes, mask_gt)
        target_scores = target_scores.to(pred_scores.dtype)
        ts_sum = target_scores.sum().clamp(min=1.0)
        loss_cls = class_loss(pred_scores, target_scores, self.cls_loss) / ts_sum
        loss_box = raw.new_zeros(())
        loss_dfl = raw.new_zeros(())
        if fg_mask.any():
            tb = target_bboxes / s
            weight = target_scores.sum(-1)[fg_mask].unsqueeze(-1)
            iou = bbox_iou(pred_bboxes[fg_mask], tb[fg_mask], ciou=True)
            loss_box = ((1.0 - iou) * weight).sum() / ts_sum
            t_ltrb = bbox2dist(anchors, tb, r - 1)
            loss_dfl = (df_loss(pred_distri[fg_mask].view(-1, 4, r), t_ltrb[fg_mask])
                        * weight).sum() / ts_sum
        parts = torch.stack([loss_box * self.gains[0], loss_cls * self.gains[1],
                             loss_dfl * self.gains[2]])
        return parts.sum() * b, parts.detach()
