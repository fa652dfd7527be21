"""Output distillation: a trained float teacher guides the quantised student during QAT.

Why: QAT starts from the float weights but sees only the hard labels, so it re-learns what the
float model already knew and loses some of it to 4-bit rounding. Matching the teacher's raw
outputs gives the student a dense target at every cell (soft class scores where the labels
only say 0 or 1, and the full DFL distribution of each side).

Both terms are divergences, zero when the student reproduces the teacher:
- class: Bernoulli KL between the teacher's and the student's sigmoid scores at every cell,
  summed and divided by the teacher's total score (as the detection loss divides by the total
  target score, so the two have comparable size);
- box: KL between the teacher's and the student's softmax over the ``reg_max`` DFL bins of
  each side, weighted per cell by the teacher's highest class score (background cells carry no
  box to learn).

The teacher can be a dihedral ensemble of itself (:class:`DihedralTeacher`, ``sarvessel train
--teacher-tta n``): its map averaged over n flips/rotations of each sample, as the runtime's
test-time augmentation averages them (:mod:`sarvessel.runtime.backends.tta`). Why: the averaged
map is a better detector than any one view (SSDD: W4A4 test AP50 0.931 -> 0.940 with two views), so
the student is asked to learn in one pass what the teacher needs n passes for. On SSDD it did not
help (8 views, two seeds: ``models/ssdd_w4a4/experiments.md``, session 16).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sarvessel.model.checkpoint import load_checkpoint
from sarvessel.model.config import ModelConfig
from sarvessel.model.network import SarYolo
from sarvessel.runtime.backends.tta import TTA_SETS, average_views
from sarvessel.runtime.errors import ModelError

__all__ = ["DihedralTeacher", "DistillLoss", "load_teacher"]


class DistillLoss(nn.Module):
    """Divergence of the student's raw output from the teacher's, both
    ``[B, 4*reg_max + nc, h, w]``. ``gain`` scales the class (``cls_gain``) and box
    (``dfl_gain``) terms together; the defaults match the detection loss's cls and dfl gains.
    ``forward`` returns ``sum * B`` (as :class:`~sarvessel.model.loss.DetectionLoss`)."""

    def __init__(self, *, reg_max: int, nc: int, gain: float = 1.0, cls_gain: float = 0.5,
                 dfl_gain: float = 1.5) -> None:
        super().__init__()
        self.reg_max, self.nc = reg_max, nc
        self.cls_gain, self.dfl_gain = gain * cls_gain, gain * dfl_gain

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """student, teacher: raw outputs of the same batch (teacher without gradient)."""
        if student.shape != teacher.shape:
            raise ValueError(f"student output {tuple(student.shape)} and teacher output "
                             f"{tuple(teacher.shape)} differ")
        b, r = student.shape[0], self.reg_max
        s = student.flatten(2).permute(0, 2, 1).float()  # B, N, C
        t = teacher.detach().flatten(2).permute(0, 2, 1).float()
        t_cls = t[..., 4 * r:].sigmoid()
        # Bernoulli KL(t || s) = BCE(s, t) - H(t)
        kl_cls = (F.binary_cross_entropy_with_logits(s[..., 4 * r:], t_cls, reduction="none")
                  - F.binary_cross_entropy(t_cls, t_cls, reduction="none"))
        norm = t_cls.sum().clamp(min=1.0)
        loss_cls = kl_cls.sum() / norm
        s_dist = s[..., :4 * r].reshape(b, -1, 4, r).log_softmax(-1)
        t_dist = t[..., :4 * r].reshape(b, -1, 4, r).log_softmax(-1)
        kl_box = (t_dist.exp() * (t_dist - s_dist)).sum(-1).mean(-1)  # B, N
        weight = t_cls.max(-1).values
        loss_box = (kl_box * weight).sum() / weight.sum().clamp(min=1.0)
        return (self.cls_gain * loss_cls + self.dfl_gain * loss_box) * b


def load_teacher(path: Path | str, student: ModelConfig) -> SarYolo:
    """Load the teacher checkpoint ``path`` (eval mode, frozen) and check that its output
    matches the student's: same stride, ``reg_max``, classes and input channels."""
    teacher, _ = load_checkpoint(path)
    tc = teacher.cfg
    for name in ("stride", "subgrid", "reg_max", "nc", "in_channels"):
        if getattr(tc, name) != getattr(student, name):
            raise ModelError(f"{path}: teacher {name} {getattr(tc, name)} differs from the "
                             f"student's {getattr(student, name)}")
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


class DihedralTeacher(nn.Module):
    """``teacher``'s raw map averaged over ``n`` dihedral views (``TTA_SETS[n]``) of square
    inputs by the runtime's own :func:`~sarvessel.runtime.backends.tta.average_views` (the maths of
    ``--tta``): class scores averaged as probabilities, DFL bins as softmax probabilities,
    returned as logits, so :class:`DistillLoss` takes it like a plain teacher's map."""

    def __init__(self, teacher: nn.Module, n: int) -> None:
        super().__init__()
        if n not in TTA_SETS:
            raise ModelError(f"teacher views must be one of {sorted(TTA_SETS)}, got {n}")
        self.teacher, self.views = teacher, TTA_SETS[n]
        self.reg_max = teacher.cfg.reg_max

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, C, S, S]`` (square, a multiple of the stride)."""
        if x.shape[-1] != x.shape[-2]:
            raise ModelError(f"a dihedral teacher needs square samples, got {tuple(x.shape)}")

        def infer(view: np.ndarray) -> np.ndarray:
            return self.teacher.forward_grid(torch.from_numpy(view).to(x.device)).cpu().numpy()

        avg = average_views(infer, x.cpu().numpy(), self.views, self.reg_max)
        return torch.from_numpy(avg).to(x.device)

    #: Already on the anchor grid (the views are averaged there), as ``SarYolo.forward_grid``.
    forward_grid = forward
