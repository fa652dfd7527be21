"""Output distillation: a divergence that is zero at the teacher and pulls the student toward
it (its use in the training loop is tested in test_train.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sarvessel.model.checkpoint import save_checkpoint
from sarvessel.model.config import ModelConfig
from sarvessel.model.distill import DistillLoss, load_teacher
from sarvessel.model.network import build_model
from sarvessel.runtime.errors import ModelError

R, NC = 4, 1


def _raw(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4 * R + NC, 5, 6, generator=g) * 3


def test_distill_loss_is_zero_at_the_teacher_and_positive_elsewhere() -> None:
    kd = DistillLoss(reg_max=R, nc=NC)
    t = _raw(0)
    assert float(kd(t.clone(), t)) == pytest.approx(0.0, abs=1e-5)
    assert float(kd(_raw(1), t)) > 0.1
    with pytest.raises(ValueError, match="differ"):
        kd(_raw(1)[:, :, :4], t)


def test_distill_gradient_moves_the_student_toward_the_teacher() -> None:
    kd = DistillLoss(reg_max=R, nc=NC, gain=2.0)
    t = _raw(0)
    s = _raw(1).requires_grad_(True)
    opt = torch.optim.Adam([s], lr=0.1)
    before = float(kd(s, t))
    for _ in range(200):
        opt.zero_grad()
        kd(s, t).backward()
        opt.step()
    assert float(kd(s, t)) < 0.2 * before
    # class logits move toward the teacher's
    cls = slice(4 * R, None)
    assert (s[:, cls] - t[:, cls]).abs().mean() < (_raw(1)[:, cls] - t[:, cls]).abs().mean()


def test_load_teacher_rejects_a_different_output(tmp_path: Path) -> None:
    cfg = ModelConfig(name="tiny", widths=(4, 8, 8), head_width=4, tile_size=64, quantized=False)
    ckpt = save_checkpoint(tmp_path / "t.pt", build_model(cfg))
    teacher = load_teacher(ckpt, ModelConfig(name="tiny", widths=(4, 8, 8), head_width=4,
                                                  tile_size=64))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ModelError, match="reg_max 16 differs from the student's 8"):
        load_teacher(ckpt, ModelConfig(name="tiny", widths=(4, 8, 8), head_width=4,
                                       tile_size=64, reg_max=8))
