"""Anchor-point maths of the single-stride head (ultralytics conventions), pure torch functions."""

from __future__ import annotations

import torch

__all__ = ["bbox2dist", "dfl_decode", "dist2bbox", "make_anchors"]


def make_anchors(height: int, width: int, stride: int, *, offset: float = 0.5,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
                 ) -> torch.Tensor:
    """Anchor points of a ``height`` x ``width`` output grid, in grid units: ``[H*W, 2]`` (x, y),
    row-major, at ``(x + offset, y + offset)``. Multiply by ``stride`` for pixels.

    >>> make_anchors(2, 3, 8).tolist()
    [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [0.5, 1.5], [1.5, 1.5], [2.5, 1.5]]
    """
    del stride  # grid units; kept in the signature so callers state the stride they use
    sx = torch.arange(width, device=device, dtype=dtype) + offset
    sy = torch.arange(height, device=device, dtype=dtype) + offset
    yy, xx = torch.meshgrid(sy, sx, indexing="ij")
    return torch.stack((xx, yy), -1).view(-1, 2)


def dist2bbox(distance: torch.Tensor, anchor_points: torch.Tensor, *, xywh: bool = False,
              dim: int = -1) -> torch.Tensor:
    """(left, top, right, bottom) distances from anchor points to boxes (x1y1x2y2, or cxcywh
    when ``xywh``), in the same units as the inputs. Shapes broadcast: ``[..., N, 4]`` with
    ``[N, 2]``."""
    lt, rb = distance.chunk(2, dim)
    x1y1 = anchor_points - lt
    x2y2 = anchor_points + rb
    if xywh:
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
    return torch.cat((x1y1, x2y2), dim)


def bbox2dist(anchor_points: torch.Tensor, bbox: torch.Tensor, reg_max: float) -> torch.Tensor:
    """x1y1x2y2 boxes to (left, top, right, bottom) distances from the anchor points, clamped to
    ``[0, reg_max - 0.01]`` (ultralytics passes ``reg_max - 1`` here for ``reg_max`` bins)."""
    x1y1, x2y2 = bbox.chunk(2, -1)
    return torch.cat((anchor_points - x1y1, x2y2 - anchor_points), -1).clamp_(0, reg_max - 0.01)


def dfl_decode(pred_dist: torch.Tensor, reg_max: int) -> torch.Tensor:
    """DFL logits ``[B, N, 4*reg_max]`` to expected distances ``[B, N, 4]`` (grid units)."""
    b, n, _ = pred_dist.shape
    proj = torch.arange(reg_max, dtype=pred_dist.dtype, device=pred_dist.device)
    return pred_dist.view(b, n, 4, reg_max).softmax(3).matmul(proj)
