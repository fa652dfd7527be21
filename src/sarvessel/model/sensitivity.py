"""Post-training quantization sensitivity: which quantizers of a float model cost accuracy.

A float checkpoint is loaded into quantised twins that differ only in their bit widths; each
twin's activation scales are calibrated on training batches (weights keep the float values,
batch-norm statistics are frozen) and its AP50 is measured on the validation images, with no
training. Why: a QAT run costs an hour on this project's CPUs and answers for one bit-width
choice; this costs well under a minute per choice and ranks the quantizers (depthwise weights,
depthwise outputs, dense weights, activations) by the accuracy they take before QAT repairs
what it can, so the QAT hour goes to the choice that matters.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch

from sarvessel.model.config import BitWidths, ModelConfig
from sarvessel.model.data import ImageDataset, collate
from sarvessel.model.evaluate import evaluate_ap
from sarvessel.model.network import SarYolo, build_model
from sarvessel.runtime.errors import SarvesselError


@dataclass(frozen=True)
class SensitivityRow:
    """AP50 of one bit-width choice (``bits`` is None for the float model itself)."""

    label: str
    bits: BitWidths | None
    ap50: float


def calibrate(model: SarYolo, batches: Iterable[torch.Tensor]) -> None:
    """Run ``batches`` (float ``[B, C, H, W]`` uint8-valued images) through ``model`` so
    Brevitas sets its activation scales from their statistics, as the first QAT steps would;
    batch-norm statistics stay frozen (eval mode) so only the quantizers change."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    with torch.no_grad():
        for images in batches:
            model(images)
    model.eval()


def dataset_batches(ds: ImageDataset, n: int, *, batch: int = 16, seed: int = 0
                    ) -> Iterator[torch.Tensor]:
    """``n`` image batches of ``ds`` in a seeded order (wrapping around a small dataset)."""
    order = np.random.default_rng([seed, 0]).permutation(len(ds))
    for b in range(n):
        idx = order[(b * batch) % len(order):][:batch]
        yield collate([ds[int(i)] for i in idx]).images


def sensitivity(float_model: SarYolo, choices: dict[str, BitWidths], train_ds: ImageDataset,
                val_ds: ImageDataset, *, calib_batches: int = 30, batch: int = 16,
                ) -> list[SensitivityRow]:
    """AP50 of ``float_model`` and of each quantised twin in ``choices`` (label -> bit widths),
    each calibrated on ``train_ds`` and scored on ``val_ds``."""
    from sarvessel.model.quant import UintActQuant

    if calib_batches < UintActQuant.collect_stats_steps:
        raise SarvesselError(f"calib_batches={calib_batches}: the activation quantizers collect "
                             f"statistics over their first {UintActQuant.collect_stats_steps} "
                             "batches; use at least that many")
    cfg: ModelConfig = float_model.cfg
    rows = [SensitivityRow("float", None, evaluate_ap(float_model, val_ds))]
    state = float_model.state_dict()
    for label, bits in choices.items():
        model = build_model(replace(cfg, quantized=True, bits=bits))
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
        model.apply_masks()
        torch.manual_seed(0)
        calibrate(model, dataset_batches(train_ds, calib_batches, batch=batch))
        rows.append(SensitivityRow(label, bits, evaluate_ap(model, val_ds)))
    return rows
