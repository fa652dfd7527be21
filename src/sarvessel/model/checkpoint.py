"""Small model checkpoints: the model config plus (EMA) weights, loadable without training state.

Format (``torch.save`` dict): ``{"format": "sarvessel-checkpoint/1", "config": ModelConfig dict,
"model": state_dict, "epoch": int, "metrics": {name: float}}``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from sarvessel.model.config import ModelConfig
from sarvessel.model.network import SarYolo, build_model
from sarvessel.runtime.errors import ModelError

log = logging.getLogger(__name__)

FORMAT = "sarvessel-checkpoint/1"

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(path: Path | str, model: SarYolo, *, epoch: int = -1,
                    metrics: dict[str, float] | None = None, **extra: Any) -> Path:
    """Write ``model``'s config and weights (plus ``extra`` entries) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = _on_cpu({"format": FORMAT, "config": model.cfg.to_dict(),
                     "model": model.state_dict(), "epoch": epoch,
                     "metrics": dict(metrics or {}), **extra})
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: Path | str, *, quantized: bool | None = None
                    ) -> tuple[SarYolo, dict[str, Any]]:
    """Rebuild the model stored in ``path`` (eval mode) and return it with the raw dict.

    ``quantized`` overrides the stored config (load float weights into the quantised twin for
    QAT: the activation scales then start by collecting statistics).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise ModelError(f"{path}: cannot read checkpoint ({exc})") from exc
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise ModelError(f"{path}: not a sarvessel checkpoint (no config/model entries)")
    cfg = ModelConfig.from_dict(dict(state["config"]))
    if quantized is not None:
        cfg.quantized = quantized
    model = build_model(cfg)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    missing = [k for k in missing if "act_quant" not in k]
    unexpected = [k for k in unexpected if "act_quant" not in k]
    if missing or unexpected:
        raise ModelError(f"{path}: weights do not fit the config "
                         f"(missing {missing[:4]}, unexpected {unexpected[:4]})")
    model.apply_masks()
    model.eval()
    return model, state


def _on_cpu(obj: Any) -> Any:
    """``obj`` with every tensor (in dicts, lists and tuples) moved to the CPU. Why: a run
    trained on a GPU must load where there is none (the board's host, CI)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        out = type(obj)((k, _on_cpu(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # a state dict's per-module versions
            out._metadata = obj._metadata  # type: ignore[attr-defined]
        return out
    if isinstance(obj, list | tuple):
        return type(obj)(_on_cpu(v) for v in obj)
    return obj
