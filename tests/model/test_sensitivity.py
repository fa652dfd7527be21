"""Post-training quantization sensitivity: calibration sets the activation scales from data, wider
bit widths track the float model more closely, and the report covers every choice."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sarvessel.evaluation.datasets import LabeledImage
from sarvessel.model.checkpoint import load_checkpoint, save_checkpoint
from sarvessel.model.config import BitWidths, ConfigError, ModelConfig
from sarvessel.model.data import ImageDataset, collate
from sarvessel.model.network import build_model
from sarvessel.model.sensitivity import calibrate, dataset_batches, sensitivity
from sarvessel.runtime.errors import SarvesselError


def _dataset(tmp_path: Path, n: int = 6) -> ImageDataset:
    from PIL import Image

    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        img = rng.integers(0, 60, (64, 64)).astype(np.uint8)
        img[20:36, 24:36] = 220
        path = tmp_path / f"{i}.png"
        Image.fromarray(img).save(path)
        items.append(LabeledImage(path, 64, 64, np.array([[24, 20, 36, 36]], np.float32),
                                  np.array([0])))
    return ImageDataset(items, tile_size=64)


def _cfg(**kw) -> ModelConfig:
    return ModelConfig(name="tiny", widths=(4, 8, 8), separable_from=1, head_width=4,
                       tile_size=64, quantized=False, **kw)


def test_bit_width_specs_parse_and_name_bad_entries() -> None:
    assert BitWidths.parse("") == BitWidths()
    assert BitWidths.parse("weight=3, dw_act=8") == BitWidths(weight=3, dw_act=8)
    for bad in ("colour=4", "weight=four", "weight=9"):
        with pytest.raises(ConfigError, match="bit width"):
            BitWidths.parse(bad)


def test_wider_twins_track_the_float_model_more_closely(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ds = _dataset(tmp_path)
    fl = build_model(_cfg()).eval()
    x = collate([ds[i] for i in range(4)]).images
    ref = fl(x).detach()
    errs = {}
    for b in (3, 8):
        q = build_model(replace(_cfg(), quantized=True,
                                bits=BitWidths(weight=b, act=b, first_weight=b, last_act=b,
                                               last_weight=b)))
        q.load_state_dict(fl.state_dict(), strict=False)
        calibrate(q, dataset_batches(ds, 30, batch=2))
        scales = [float(m.act_quant.scale()) for m in q.modules()
                  if type(m).__name__ == "QuantReLU"]
        assert all(np.isfinite(s) and s > 0 for s in scales)
        assert not any(m.training for m in q.modules())
        errs[b] = float((q(x).detach() - ref).abs().mean() / ref.abs().mean())
    assert 0 < 10 * errs[8] < errs[3], errs


def test_sensitivity_reports_the_float_model_then_every_choice(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ds = _dataset(tmp_path)
    ckpt = save_checkpoint(tmp_path / "f.pt", build_model(_cfg()))
    model, _ = load_checkpoint(ckpt, quantized=False)
    rows = sensitivity(model, {"w4a4": BitWidths(), "dw8": BitWidths(dw_weight=8, dw_act=8)},
                       ds, ds, calib_batches=30, batch=2)
    assert [r.label for r in rows] == ["float", "w4a4", "dw8"]
    assert rows[0].bits is None and rows[2].bits == BitWidths(dw_weight=8, dw_act=8)
    assert all(0.0 <= r.ap50 <= 1.0 for r in rows)
    with pytest.raises(SarvesselError, match="at least"):
        sensitivity(model, {"w4a4": BitWidths()}, ds, ds, calib_batches=5)
