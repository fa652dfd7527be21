"""Task-aligned assigner (TOOD / ultralytics ``TaskAlignedAssigner``): topk 10, alpha 0.5, beta 6.

A no-grad module built from small named steps. Shapes: B batch, N anchors, M max boxes per image,
C classes.
"""

from __future__ import annotations

import torch
from torch import nn

from sarvessel.model.boxes import bbox_iou

__all__ = ["TaskAlignedAssigner", "select_candidates_in_gts", "select_highest_overlaps"]


class TaskAlignedAssigner(nn.Module):
    """Assign ground-truth boxes to anchors by ``score**alpha * IoU**beta`` (top-k per box)."""

    def __init__(self, *, topk: int = 10, num_classes: int = 1, alpha: float = 0.5,
                 beta: float = 6.0, eps: float = 1e-9, min_size: float = 0.0,
                 iou_targets: bool = True) -> None:
        """``min_size`` (pixels): boxes narrower than this are widened about their centre for the
        candidate test only, so a box smaller than the stride still gets an anchor (SSDD has
        ~2 % of ships with no anchor centre inside at stride 8). The default 0 is ultralytics'
        behaviour. ``iou_targets``: each box's best anchor gets the class target of its best
        predicted IoU (ultralytics); False gives it 1, so a small ship whose boxes overlap
        poorly is not taught a low score (AP50 counts any overlap over 0.5 alike)."""
        super().__init__()
        self.min_size, self.iou_targets = min_size, iou_targets
        self.topk, self.num_classes = topk, num_classes
        self.alpha, self.beta, self.eps = alpha, beta, eps

    @torch.no_grad()
    def forward(self, pd_scores: torch.Tensor, pd_bboxes: torch.Tensor, anc_points: torch.Tensor,
                gt_labels: torch.Tensor, gt_bboxes: torch.Tensor, mask_gt: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Assign targets.

        pd_scores ``[B, N, C]`` (sigmoid), pd_bboxes ``[B, N, 4]`` x1y1x2y2 pixels, anc_points
        ``[N, 2]`` pixels, gt_labels ``[B, M, 1]``, gt_bboxes ``[B, M, 4]`` pixels, mask_gt
        ``[B, M, 1]`` (1 for real boxes, 0 for padding).
        Returns target_labels ``[B, N]``, target_bboxes ``[B, N, 4]``, target_scores
        ``[B, N, C]`` (IoU-aware soft labels), fg_mask ``[B, N]`` bool, target_gt_idx ``[B, N]``.
        """
        bs, n_max = gt_bboxes.shape[:2]
        na = pd_bboxes.shape[1]
        if n_max == 0:
            dev = gt_bboxes.device
            return (torch.full((bs, na), self.num_classes, device=dev, dtype=torch.long),
                    torch.zeros_like(pd_bboxes), torch.zeros_like(pd_scores),
                    torch.zeros(bs, na, dtype=torch.bool, device=dev),
                    torch.zeros(bs, na, dtype=torch.long, device=dev))
        mask_pos, align_metric, overlaps = self.get_pos_mask(
            pd_scores, pd_bboxes, gt_labels, gt_bboxes, anc_points, mask_gt)
        target_gt_idx, fg_mask, mask_pos = select_highest_overlaps(mask_pos, overlaps, n_max)
        target_labels, target_bboxes, target_scores = self.get_targets(
            gt_labels, gt_bboxes, target_gt_idx, fg_mask)
        align_metric *= mask_pos
        pos_align = align_metric.amax(-1, keepdim=True)
        pos_overlaps = ((overlaps * mask_pos).amax(-1, keepdim=True) if self.iou_targets
                        else 1.0)
        norm = (align_metric * pos_overlaps / (pos_align + self.eps)).amax(-2).unsqueeze(-1)
        target_scores = target_scores * norm
        return target_labels, target_bboxes, target_scores, fg_mask.bool(), target_gt_idx

    def get_pos_mask(self, pd_scores: torch.Tensor, pd_bboxes: torch.Tensor,
                     gt_labels: torch.Tensor, gt_bboxes: torch.Tensor, anc_points: torch.Tensor,
                     mask_gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Candidate anchors: centre inside the box and among the box's top-k by alignment."""
        mask_in_gts = select_candidates_in_gts(anc_points, _widen(gt_bboxes, self.min_size))
        align_metric, overlaps = self.get_box_metrics(pd_scores, pd_bboxes, gt_labels, gt_bboxes,
                                                      mask_in_gts * mask_gt)
        mask_topk = self.select_topk_candidates(
            align_metric, topk_mask=mask_gt.expand(-1, -1, self.topk).bool())
        return mask_topk * mask_in_gts * mask_gt, align_metric, overlaps

    def get_box_metrics(self, pd_scores: torch.Tensor, pd_bboxes: torch.Tensor,
                        gt_labels: torch.Tensor, gt_bboxes: torch.Tensor, mask_gt: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Alignment metric and CIoU ``[B, M, N]`` of every (box, anchor) pair in ``mask_gt``."""
        na = pd_bboxes.shape[-2]
        mask_gt = mask_gt.bool()
        bs, n_max = gt_bboxes.shape[:2]
        overlaps = torch.zeros(bs, n_max, na, dtype=pd_bboxes.dtype, device=pd_bboxes.device)
        bbox_scores = torch.zeros(bs, n_max, na, dtype=pd_scores.dtype, device=pd_scores.device)
        ind0 = torch.arange(bs, device=gt_labels.device).view(-1, 1).expand(-1, n_max)
        ind1 = gt_labels.squeeze(-1).long()
        bbox_scores[mask_gt] = pd_scores[ind0, :, ind1][mask_gt]
        pd_boxes = pd_bboxes.unsqueeze(1).expand(-1, n_max, -1, -1)[mask_gt]
        gt_boxes = gt_bboxes.unsqueeze(2).expand(-1, -1, na, -1)[mask_gt]
        overlaps[mask_gt] = bbox_iou(gt_boxes, pd_boxes, ciou=True).squeeze(-1).clamp_(0)
        align_metric = bbox_scores.pow(self.alpha) * overlaps.pow(self.beta)
        return align_metric, overlaps

    def select_topk_candidates(self, metrics: torch.Tensor, topk_mask: torch.Tensor
                               ) -> torch.Tensor:
        """One-hot ``[B, M, N]`` of each box's top-k anchors (duplicates dropped)."""
        k = min(self.topk, metrics.shape[-1])
        _, topk_idxs = torch.topk(metrics, k, dim=-1, largest=True)
        topk_idxs.masked_fill_(~topk_mask[..., :k], 0)
        count = torch.zeros(metrics.shape, dtype=torch.int8, device=metrics.device)
        ones = torch.ones_like(topk_idxs[:, :, :1], dtype=torch.int8)
        for j in range(k):
            count.scatter_add_(-1, topk_idxs[:, :, j:j + 1], ones)
        count.masked_fill_(count > 1, 0)
        return count.to(metrics.dtype)

    def get_targets(self, gt_labels: torch.Tensor, gt_bboxes: torch.Tensor,
                    target_gt_idx: torch.Tensor, fg_mask: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gather each anchor's assigned label, box and one-hot score."""
        bs, n_max = gt_bboxes.shape[:2]
        batch_ind = torch.arange(bs, dtype=torch.long, device=gt_labels.device)[..., None]
        idx = target_gt_idx + batch_ind * n_max
        target_labels = gt_labels.long().flatten()[idx].clamp_(0)
        target_bboxes = gt_bboxes.view(-1, gt_bboxes.shape[-1])[idx]
        target_scores = torch.zeros((*target_labels.shape, self.num_classes), dtype=torch.long,
                                    device=target_labels.device)
        target_scores.scatter_(2, target_labels.unsqueeze(-1), 1)
        fg = fg_mask[:, :, None].repeat(1, 1, self.num_classes)
        target_scores = torch.where(fg > 0, target_scores, 0)
        return target_labels, target_bboxes, target_scores


def _widen(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """Grow each side of x1y1x2y2 ``boxes`` shorter than ``min_size`` to it, about the centre."""
    if min_size <= 0:
        return boxes
    c = (boxes[..., :2] + boxes[..., 2:]) / 2
    half = ((boxes[..., 2:] - boxes[..., :2]).clamp(min=min_size)) / 2
    return torch.cat((c - half, c + half), -1)


def select_candidates_in_gts(xy_centers: torch.Tensor, gt_bboxes: torch.Tensor,
                             eps: float = 1e-9) -> torch.Tensor:
    """``[B, M, N]`` mask of anchor centres ``[N, 2]`` strictly inside boxes ``[B, M, 4]``."""
    n_anchors = xy_centers.shape[0]
    bs, n_boxes, _ = gt_bboxes.shape
    lt, rb = gt_bboxes.view(-1, 1, 4).chunk(2, 2)
    deltas = torch.cat((xy_centers[None] - lt, rb - xy_centers[None]), dim=2)
    return deltas.view(bs, n_boxes, n_anchors, -1).amin(3).gt_(eps)


def select_highest_overlaps(mask_pos: torch.Tensor, overlaps: torch.Tensor, n_max_boxes: int
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where an anchor is assigned to several boxes keep the one with the highest IoU.

    Returns target_gt_idx ``[B, N]``, fg_mask ``[B, N]`` and the cleaned mask_pos ``[B, M, N]``.
    """
    fg_mask = mask_pos.sum(-2)
    if fg_mask.max() > 1:
        multi = (fg_mask.unsqueeze(1) > 1).expand(-1, n_max_boxes, -1)
        max_idx = overlaps.argmax(1)
        is_max = torch.zeros(mask_pos.shape, dtype=mask_pos.dtype, device=mask_pos.device)
        is_max.scatter_(1, max_idx.unsqueeze(1), 1)
        mask_pos = torch.where(multi, is_max, mask_pos).float()
        fg_mask = mask_pos.sum(-2)
    return mask_pos.argmax(-2), fg_mask, mask_pos
