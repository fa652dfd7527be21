"""Conversion of the contract network to one FINN dataflow partition, and the step registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarvessel.hw.errors import ConversionError, StepError

pytestmark = pytest.mark.finn


def _check_full_conversion(cfg, result) -> None:
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    from sarvessel.hw.steps import conversion_problems, is_hw_node, parent_model_path

    df = result.model
    # every node of the accelerator is a HW layer, none computes in float
    assert all(is_hw_node(n) for n in df.graph.node)
    for n in df.graph.node:
        for t in (n.input[0], n.output[0]):
            assert df.get_tensor_datatype(t) != DataType["FLOAT32"], (n.name, t)
    assert df.get_tensor_datatype(df.graph.input[0].name) == DataType["UINT8"]
    ops = [n.op_type for n in df.graph.node]
    assert ops[-1].startswith("MVAU")  # the final conv, no activation
    assert sum(o.startswith("MVAU") for o in ops) >= 6  # >= 3 body + 3 head convs
    # one output scale: stride 8 (the contract default), NHWC out of the fabric
    t_in = df.get_tensor_shape(df.graph.input[0].name)
    t_out = df.get_tensor_shape(df.graph.output[0].name)
    assert t_out[1] * 8 == t_in[1] and t_out[2] * 8 == t_in[2]
    assert t_out[3] > 4 * 16  # 4*reg_max DFL logits + nc class logits
    # outside the partition: input layout transpose, then the CPU tail only
    parent = ModelWrapper(str(parent_model_path(df)))
    assert [n.op_type for n in parent.graph.node] == [
        "Transpose", "StreamingDataflowPartition", "Transpose", "Mul", "Add"
    ]
    hw = ModelWrapper(str(result.checkpoints["convert_to_hw"]))
    assert conversion_problems(hw, cfg) == []


def test_contract_network_converts_fully_small(flow_64) -> None:
    cfg, result = flow_64
    _check_full_conversion(cfg, result)


@pytest.mark.slow
def test_contract_network_converts_fully_512(flow_512) -> None:
    cfg, result = flow_512
    _check_full_conversion(cfg, result)
    first = result.model.graph.node[0]
    assert result.model.get_tensor_shape(first.input[0]) == [1, 512, 512, 2]


def test_standin_converts_fully(standin_qonnx: Path, tmp_path: Path) -> None:
    """The stand-in used before the real network existed keeps converting (regression)."""
    from sarvessel.hw.config import HWConfig
    from sarvessel.hw.flow import run_flow

    cfg = HWConfig(output_dir=tmp_path, tile_size=64, tile_overlap=8, stop_step="specialize_layers")
    result = run_flow(standin_qonnx, cfg)
    assert result.steps_run[-1] == "specialize_layers"
    _check_full_conversion(cfg, result)


def test_chain_takes_the_plain_path(flow_64) -> None:
    """A plain chain is not treated as branched: no fork/join handling, no stream layers."""
    from qonnx.core.modelwrapper import ModelWrapper

    from sarvessel.hw.steps import has_branches

    _, result = flow_64
    for step in ("qonnx_to_finn", "streamline", "convert_to_hw"):
        assert not has_branches(ModelWrapper(str(result.checkpoints[step]))), step
    ops = {n.op_type for n in result.model.graph.node}
    assert not ops & {"DuplicateStreams_hls", "StreamingConcat_hls",
                      "UpsampleNearestNeighbour_hls"}


def test_context_branch_with_its_own_quantizer_is_rejected(tmp_path: Path) -> None:
    """StreamingConcat joins integers of one grid: a context branch that ends in a quantizer
    of its own (a second scale) cannot stream, and the error says why."""
    import sys

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import _calibrate, _finn_or_skip

    _finn_or_skip()
    try:
        from sarvessel.model.config import scene_config
        from sarvessel.model.network import _relu, build_model
        from sarvessel.quantize.export import export_qonnx
    except ImportError:
        pytest.skip("the real network is needed for a context branch")
    from sarvessel.hw.config import HWConfig
    from sarvessel.hw.flow import run_flow

    cfg = scene_config(tile_size=64, widths=(8, 16, 16, 16), dilations=(1, 1, 1, 2),
                       context_widths=(16, 16), context_dilations=(1, 2))
    torch.manual_seed(0)
    net = build_model(cfg)
    net.context[-2] = _relu(cfg, cfg.bits.act)  # not the body's quantizer any more
    _calibrate(net, 2)
    path = tmp_path / "two_scales.onnx"
    export_qonnx(net, path, tile=64, channels=2)
    with pytest.raises(ConversionError, match="one shared quantizer"):
        run_flow(path, HWConfig(output_dir=tmp_path / "out", tile_size=64, tile_overlap=8))


def test_float_op_inside_the_chain_is_rejected(tmp_path: Path) -> None:
    import brevitas.nn as qnn
    import torch
    from brevitas.export import export_qonnx
    from brevitas.quant.scaled_int import Int8WeightPerChannelFloat, Uint8ActPerTensorFloat
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from torch import nn

    from sarvessel.hw.config import HWConfig
    from sarvessel.hw.flow import run_flow

    net = nn.Sequential(
        qnn.QuantConv2d(1, 4, 3, padding=1, bias=False, weight_quant=Int8WeightPerChannelFloat,
                        weight_bit_width=4),
        nn.Sigmoid(),  # not a HW layer: FINN cannot map it
        qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=4),
        qnn.QuantConv2d(4, 4, 1, bias=False, weight_quant=Int8WeightPerChannelFloat,
                        weight_bit_width=4),
        nn.BatchNorm2d(4),
        qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=4),
        qnn.QuantConv2d(4, 4, 1, bias=True, weight_quant=Int8WeightPerChannelFloat,
                        weight_bit_width=8),
    ).eval()
    path = tmp_path / "bad.onnx"
    export_qonnx(net, torch.zeros(1, 1, 16, 16), export_path=str(path), dynamo=False)
    mw = ModelWrapper(str(path))
    mw.set_tensor_datatype(mw.graph.input[0].name, DataType["UINT8"])
    mw.save(str(path))
    cfg = HWConfig(output_dir=tmp_path / "out", tile_size=16, tile_overlap=0)
    with pytest.raises(ConversionError, match="Sigmoid"):
        run_flow(path, cfg)


def test_register_step_rejects_duplicates() -> None:
    from sarvessel.hw.steps import STEP_REGISTRY, register_step, resolve_step

    @register_step("test_dup")
    def step_one(model, cfg):
        return model

    try:
        with pytest.raises(StepError, match="already registered"):
            register_step("test_dup")(step_one)
        assert resolve_step("test_dup") == ("test_dup", step_one)
        assert resolve_step("step_test_dup")[1] is step_one
    finally:
        del STEP_REGISTRY["test_dup"]
    with pytest.raises(StepError, match="unknown step 'nope'"):
        resolve_step("nope")
