"""Output distillation: a divergence that is zero at the teacher and pulls the student toward
it (its use in the training loop is tested in test_train.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sarvessel.model.checkpoint import save_checkpoint
from sarvessel.model.config import ModelConfig
from sarvessel.model.distill import DihedralTeacher, DistillLoss, load_teacher
from sarvessel.model.network import build_model
from sarvessel.runtime.backends.tta import TTA_SETS, restore_raw, transform_tiles
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
    with pytest.raises(ModelError, match="subgrid 1 differs from the student's 2"):
        load_teacher(ckpt, ModelConfig(name="tiny", widths=(4, 8, 8), head_width=4,
                                       tile_size=64, subgrid=2))


def _tiny_float() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(name="tiny", widths=(4, 8, 8), head_width=4, tile_size=64, quantized=False)
    return build_model(cfg).eval()


@pytest.mark.parametrize("n", [2, 4, 8])
def test_dihedral_teacher_matches_the_runtime_tta_average(n: int) -> None:
    """The torch ensemble teacher and the runtime's numpy TTA average the same views the same
    way: class probabilities and DFL softmax probabilities, moved back to the input frame."""
    net = _tiny_float()
    x = torch.randint(0, 256, (2, 1, 64, 64)).float()
    got = DihedralTeacher(net, n)(x).numpy()
    r = net.cfg.reg_max
    cls, dfl = 0.0, 0.0
    for k in TTA_SETS[n]:
        with torch.no_grad():
            view = torch.from_numpy(transform_tiles(x.numpy(), k))
            raw = restore_raw(net(view).numpy(), k, r)
        b, _, h, w = raw.shape
        cls = cls + 1 / (1 + np.exp(-raw[:, 4 * r:]))
        d = raw[:, :4 * r].reshape(b, 4, r, h, w)
        e = np.exp(d - d.max(2, keepdims=True))
        dfl = dfl + e / e.sum(2, keepdims=True)
    cls, dfl = cls / len(TTA_SETS[n]), dfl / len(TTA_SETS[n])
    np.testing.assert_allclose(1 / (1 + np.exp(-got[:, 4 * r:])), cls, rtol=1e-4, atol=1e-6)
    got_dfl = np.exp(got[:, :4 * r].reshape(dfl.shape))
    np.testing.assert_allclose(got_dfl, dfl, rtol=1e-4, atol=1e-6)
    # the views differ (an untrained net is not dihedral-invariant), so averaging did something
    assert not np.allclose(got, DihedralTeacher(net, 1)(x).numpy(), atol=1e-3)


def test_dihedral_teacher_of_one_view_is_the_teacher_and_needs_square_input() -> None:
    net = _tiny_float()
    x = torch.randint(0, 256, (1, 1, 64, 64)).float()
    one = DihedralTeacher(net, 1)(x)
    with torch.no_grad():
        raw = net(x)
    r = net.cfg.reg_max
    # the class logit round-trips; the DFL logits come back as log-probabilities
    torch.testing.assert_close(one[:, 4 * r:], raw[:, 4 * r:], rtol=1e-4, atol=1e-4)
    b, _, h, w = raw.shape
    torch.testing.assert_close(one[:, :4 * r].reshape(b, 4, r, h, w),
                               raw[:, :4 * r].reshape(b, 4, r, h, w).log_softmax(2),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelError, match="square"):
        DihedralTeacher(net, 2)(torch.zeros(1, 1, 64, 32))
    with pytest.raises(ModelError, match="one of"):
        DihedralTeacher(net, 3)
