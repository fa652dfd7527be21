"""The runner: checkpoints, timings, resuming, callables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sarvessel.hw.errors import ConversionError, StepError

pytestmark = pytest.mark.finn


def test_checkpoints_and_timings(flow_64) -> None:
    from sarvessel.hw.config import ESTIMATE_STEPS

    cfg, result = flow_64
    assert result.steps_run == list(ESTIMATE_STEPS)
    for step in ESTIMATE_STEPS:
        assert (cfg.intermediate_dir() / f"{step}.onnx").stat().st_size > 0
    timings = json.loads((cfg.output_dir / "time_per_step.json").read_text())
    assert list(timings) == list(ESTIMATE_STEPS)
    assert all(v >= 0 for v in timings.values())


def test_resume_and_stop(flow_64, tmp_path: Path) -> None:
    import shutil

    from sarvessel.hw.flow import run_flow

    cfg, _ = flow_64
    out = tmp_path / "copy"
    shutil.copytree(cfg.output_dir, out)
    resumed = cfg.replace(output_dir=out, start_step="set_folding", stop_step="minimize_bit_width")
    r = run_flow(None, resumed)
    assert r.steps_run == ["set_folding", "minimize_bit_width"]
    # the resumed folding equals the original one (same input checkpoint, same target)
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    orig = ModelWrapper(str(cfg.intermediate_dir() / "minimize_bit_width.onnx"))
    for a, b in zip(orig.graph.node, r.model.graph.node, strict=True):
        if a.op_type.startswith("MVAU"):
            assert getCustomOp(a).get_nodeattr("PE") == getCustomOp(b).get_nodeattr("PE")
            assert getCustomOp(a).get_nodeattr("SIMD") == getCustomOp(b).get_nodeattr("SIMD")
    timings = json.loads((out / "time_per_step.json").read_text())
    assert "tidy_up" in timings and "set_folding" in timings


def test_resume_without_checkpoint_fails(tmp_path: Path) -> None:
    from sarvessel.hw.config import HWConfig
    from sarvessel.hw.flow import run_flow

    cfg = HWConfig(output_dir=tmp_path, start_step="streamline")
    with pytest.raises(StepError, match="qonnx_to_finn.onnx"):
        run_flow(None, cfg)


def test_callable_steps_and_bad_model(small_qonnx: Path, tmp_path: Path) -> None:
    from sarvessel.hw.config import HWConfig
    from sarvessel.hw.flow import run_flow

    seen = []

    def step_count_nodes(model, cfg):
        seen.append(len(model.graph.node))
        return model

    cfg = HWConfig(output_dir=tmp_path, tile_size=64, tile_overlap=8)
    r = run_flow(small_qonnx, cfg, steps=["tidy_up", step_count_nodes])
    assert r.steps_run == ["tidy_up", "count_nodes"] and seen and seen[0] > 5
    assert (tmp_path / "intermediate_models" / "count_nodes.onnx").is_file()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ConversionError, match="bad.onnx"):
        run_flow(bad, cfg)
    with pytest.raises(ConversionError, match="not found"):
        run_flow(tmp_path / "missing.onnx", cfg)
