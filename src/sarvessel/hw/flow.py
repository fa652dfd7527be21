"""The runner of the hardware flow: resolves steps, checkpoints and times them, resumes.

After each step the runner (never the step) saves ``<output_dir>/intermediate_models/<step>.onnx``
and rewrites ``<output_dir>/time_per_step.json``. ``cfg.start_step`` resumes from the checkpoint of
the step before it; ``cfg.stop_step`` stops after the named step (finn-plus ``build_dataflow_cfg``
and ``resolve_step_filename`` semantics).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qonnx.core.modelwrapper import ModelWrapper

from sarvessel.hw.config import HWConfig
from sarvessel.hw.errors import ConversionError, HWError, StepError
from sarvessel.hw.steps import Step, resolve_step
from sarvessel.runtime.io.outputs import write_json

log = logging.getLogger(__name__)

#: File the runner writes the per-step wall times into (inside ``cfg.output_dir``).
TIMINGS_FILE = "time_per_step.json"
#: Copy of the flow's input model (the verification reference), inside ``cfg.output_dir``.
INPUT_MODEL_FILE = "input_model.onnx"
#: Verification report written when ``cfg.verify_tiles`` > 0 (inside ``cfg.report_dir()``).
VERIFY_FILE = "verify.json"


@dataclass
class FlowResult:
    """What :func:`run_flow` produced."""

    #: Model after the last step that ran.
    model: ModelWrapper
    #: Names of the steps that ran, in order.
    steps_run: list[str] = field(default_factory=list)
    #: Wall time of each step that ran (s).
    timings: dict[str, float] = field(default_factory=dict)
    #: Checkpoint written after each step (empty when saving is off).
    checkpoints: dict[str, Path] = field(default_factory=dict)
    #: Verification outcome when ``cfg.verify_tiles`` > 0 (a :class:`VerifyReport`), else None.
    verification: Any = None


def run_flow(
    model: ModelWrapper | Path | str | None,
    cfg: HWConfig,
    *,
    steps: Sequence[str | Step] | None = None,
) -> FlowResult:
    """Run ``steps`` (default ``cfg.steps``) on ``model`` (a ModelWrapper or an ONNX path).

    ``model`` may be None when ``cfg.start_step`` resumes from a checkpoint. Step errors from
    FINN are wrapped in :class:`ConversionError` naming the step. With ``cfg.verify_tiles`` > 0
    the runner verifies the HW graphs against the input model after the last step
    (:func:`sarvessel.hw.verify.verify_flow_outputs`) and writes ``report/verify.json``; a
    mismatch raises :class:`~sarvessel.hw.errors.VerificationError`.
    """
    resolved = [resolve_step(s) for s in (steps if steps is not None else cfg.steps)]
    names = [n for n, _ in resolved]
    if len(set(names)) != len(names):
        raise StepError(f"a step appears twice in {names}")
    for key in ("start_step", "stop_step"):
        v = getattr(cfg, key)
        if v is not None and v not in names:
            raise StepError(f"{key} {v!r} is not one of the steps {names}")
    start = names.index(cfg.start_step) if cfg.start_step else 0
    stop = names.index(cfg.stop_step) if cfg.stop_step else len(names) - 1
    if stop < start:
        raise StepError(f"stop_step {cfg.stop_step!r} comes before start_step {cfg.start_step!r}")
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    if start > 0:
        ckpt = resolve_step_filename(names[start - 1], cfg)
        if not ckpt.is_file():
            raise StepError(
                f"cannot resume at {names[start]!r}: checkpoint {ckpt} of the previous step "
                "is missing (run the earlier steps with save_intermediate_models on)"
            )
        log.info("resuming at %s from %s", names[start], ckpt)
        model = ModelWrapper(str(ckpt))
    elif model is None:
        raise StepError("no model given and no start_step to resume from")
    elif not isinstance(model, ModelWrapper):
        path = Path(model)
        if not path.is_file():
            raise ConversionError(f"{path}: model file not found")
        try:
            model = ModelWrapper(str(path))
        except Exception as exc:  # onnx raises several types for a bad file
            raise ConversionError(f"{path}: not a readable ONNX model: {exc}") from exc

    if start == 0:
        model.save(str(cfg.output_dir / INPUT_MODEL_FILE))
    timings_path = cfg.output_dir / TIMINGS_FILE
    timings: dict[str, float] = {}
    if start > 0 and timings_path.is_file():
        timings = {k: v for k, v in json.loads(timings_path.read_text()).items() if k in names}
    result = FlowResult(model=model)
    for name, fn in resolved[start : stop + 1]:
        log.info("step %s ...", name)
        t0 = time.perf_counter()
        try:
            model = fn(model, cfg)
        except HWError:
            raise
        except Exception as exc:  # FINN raises bare Exceptions and AssertionErrors
            raise ConversionError(f"step {name!r} failed: {type(exc).__name__}: {exc}") from exc
        dt = time.perf_counter() - t0
        timings[name] = round(dt, 3)
        result.steps_run.append(name)
        result.timings[name] = dt
        log.info("step %s done in %.1f s", name, dt)
        if cfg.save_intermediate_models:
            ckpt = resolve_step_filename(name, cfg)
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            model.save(str(ckpt))
            result.checkpoints[name] = ckpt
        write_json(timings_path, timings)
    result.model = model
    if cfg.verify_tiles > 0:
        result.verification = _verify(cfg)
    return result


def _verify(cfg: HWConfig) -> Any:
    from qonnx.core.modelwrapper import ModelWrapper as _MW

    from sarvessel.hw.verify import synthetic_sar_tiles, verify_flow_outputs

    ref = cfg.output_dir / INPUT_MODEL_FILE
    if not ref.is_file():
        raise StepError(f"{ref}: input model copy missing; cannot verify")
    shape = _MW(str(ref)).model.graph.input[0].type.tensor_type.shape.dim
    channels = int(shape[1].dim_value)
    tiles = synthetic_sar_tiles(cfg.verify_tiles, channels=channels, tile=cfg.tile_size)
    report = verify_flow_outputs(ref, cfg.output_dir, tiles)
    cfg.report_dir().mkdir(parents=True, exist_ok=True)
    write_json(cfg.report_dir() / VERIFY_FILE, report.to_dict())
    log.info("verification: HW graphs bit-exact %s, vs QONNX bit-exact %s", report.hw_exact,
             report.bit_exact)
    return report


def resolve_step_filename(step: str, cfg: HWConfig) -> Path:
    """Checkpoint path of ``step`` (``<output_dir>/intermediate_models/<step>.onnx``)."""
    return cfg.intermediate_dir() / f"{step.removeprefix('step_')}.onnx"
