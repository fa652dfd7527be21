"""Task-aligned assigner on hand-built cases."""

from __future__ import annotations

import torch

from sarvessel.model.anchors import make_anchors
from sarvessel.model.assigner import TaskAlignedAssigner, select_candidates_in_gts


def _setup(pred_boxes: torch.Tensor, gt: list[list[float]], scores: float = 0.5):
    anchors = make_anchors(4, 4, 8) * 8  # 16 anchors at 4, 12, 20, 28 px
    n = anchors.shape[0]
    pd_scores = torch.full((1, n, 1), scores)
    gt_boxes = torch.tensor([gt])
    labels = torch.zeros(1, len(gt), 1, dtype=torch.long)
    mask = torch.ones(1, len(gt), 1)
    return pd_scores, pred_boxes.expand(1, n, 4).clone(), anchors, labels, gt_boxes, mask


def test_candidates_must_lie_inside_the_box() -> None:
    anchors = make_anchors(4, 4, 8) * 8
    m = select_candidates_in_gts(anchors, torch.tensor([[[0.0, 0.0, 16.0, 16.0]]]))
    assert m.shape == (1, 1, 16)
    assert torch.nonzero(m[0, 0]).flatten().tolist() == [0, 1, 4, 5]


def test_topk_limits_positives_and_scores_are_iou_aware() -> None:
    # a box covering the whole 32x32 grid: all 16 anchors are candidates, topk=3 keeps 3
    pd = torch.tensor([[0.0, 0.0, 32.0, 32.0]])
    args = _setup(pd, [[0.0, 0.0, 32.0, 32.0]])
    labels, boxes, scores, fg, gt_idx = TaskAlignedAssigner(topk=3)(*args)
    assert int(fg.sum()) == 3
    assert torch.allclose(boxes[fg], torch.tensor([0.0, 0.0, 32.0, 32.0]).expand(3, 4))
    # perfect predictions: the normalised target score equals the IoU (1)
    assert torch.allclose(scores[fg].squeeze(-1), torch.ones(3), atol=1e-4)
    assert float(scores[~fg].abs().sum()) == 0.0


def test_class_targets_follow_the_best_iou_unless_iou_targets_is_off() -> None:
    # predictions that overlap the box at IoU 0.5 (a 16x32 box in a 32x32 one; CIoU 0.4655)
    pd = torch.tensor([[0.0, 0.0, 16.0, 32.0]])
    args = _setup(pd, [[0.0, 0.0, 32.0, 32.0]])
    _, _, soft, fg, _ = TaskAlignedAssigner(topk=3)(*args)
    assert abs(float(soft[fg].amax()) - 0.4655) < 1e-3  # ultralytics: the CIoU (IoU 0.5)
    _, _, one, fg1, _ = TaskAlignedAssigner(topk=3, iou_targets=False)(*args)
    assert torch.equal(fg, fg1)  # same positives, only the targets change
    assert torch.allclose(one[fg], torch.ones(3, 1), atol=1e-4)  # equal IoUs: all at 1
    assert float(one[~fg].abs().sum()) == 0.0


def test_anchor_shared_by_two_boxes_goes_to_higher_iou() -> None:
    # predictions all equal box A; anchors inside both A and B go to A
    a, b = [0.0, 0.0, 20.0, 20.0], [8.0, 8.0, 32.0, 32.0]
    args = _setup(torch.tensor([a]), [a, b])
    _, _, _, fg, gt_idx = TaskAlignedAssigner(topk=10)(*args)
    anchor_12_12 = 5  # inside both boxes
    assert bool(fg[0, anchor_12_12]) and int(gt_idx[0, anchor_12_12]) == 0
    anchor_28_28 = 15  # only in B
    assert bool(fg[0, anchor_28_28]) and int(gt_idx[0, anchor_28_28]) == 1


def test_padding_rows_and_empty_batches_give_no_positives() -> None:
    pd_scores, pd_boxes, anchors, labels, gt, mask = _setup(
        torch.tensor([[0.0, 0.0, 32.0, 32.0]]), [[0.0, 0.0, 32.0, 32.0]])
    _, _, scores, fg, _ = TaskAlignedAssigner()(pd_scores, pd_boxes, anchors, labels, gt,
                                                torch.zeros_like(mask))
    assert not fg.any() and float(scores.sum()) == 0.0
    out = TaskAlignedAssigner(num_classes=1)(pd_scores, pd_boxes, anchors,
                                             labels[:, :0], gt[:, :0], mask[:, :0])
    assert out[0].tolist() == [[1] * 16] and not out[3].any()


def test_min_size_gives_small_boxes_an_anchor() -> None:
    # an 8 px wide box between anchor columns (x centres 4, 12, 20, 28): none strictly inside
    pd = torch.tensor([[20.0, 8.0, 28.0, 24.0]])
    args = _setup(pd, [[20.0, 8.0, 28.0, 24.0]])
    assert not TaskAlignedAssigner(min_size=0.0)(*args)[3].any()
    fg = TaskAlignedAssigner(min_size=12.0)(*args)[3]
    assert fg.any()
    cols = torch.nonzero(fg[0]).flatten() % 4
    assert set(cols.tolist()) <= {2, 3}  # anchors at x = 20 or 28
