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
    import torch

    from tests.hw.conftest import _calibrate, _finn_or_skip

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


# -- line-buffer memory of the sliding-window generators (HWConfig.swg_ram_style) -----------


@pytest.fixture(scope="module")
def dilated_specialized(tmp_path_factory: pytest.TempPathFactory):
    """A 64 px detector with dilated body convs (dilations 1-1-1-2-4), run up to
    ``specialize_layers``: (model, config kwargs). Folding is redone per test (fast)."""
    from sarvessel.hw.config import HWConfig
    from sarvessel.hw.flow import run_flow

    from .conftest import _finn_or_skip, export_contract_qonnx

    _finn_or_skip()
    tmp = tmp_path_factory.mktemp("swg")
    path, which = export_contract_qonnx(tmp / "dilated.onnx", tile=64,
                                        widths=(8, 16, 16, 16, 16), dilations=(1, 1, 1, 2, 4))
    if which != "sarvessel.model.network":
        pytest.skip("the real network is needed for dilated convs")
    kw = {"output_dir": tmp / "flow", "tile_size": 64, "tile_overlap": 8}
    result = run_flow(path, HWConfig(**kw, stop_step="specialize_layers"))
    return result.model, kw


def _fold(base, **kw):
    """(folded model, config) after ``step_set_folding`` on a copy of ``base``."""
    import copy

    from sarvessel.hw.config import HWConfig
    from sarvessel.hw.steps import step_set_folding

    cfg = HWConfig(**kw)
    return step_set_folding(copy.deepcopy(base), cfg), cfg


def _styles(model) -> dict[str, str]:
    from sarvessel.hw.steps import sliding_window_generators

    return {i.onnx_node.name: i.get_nodeattr("ram_style")
            for i in sliding_window_generators(model)}


def test_swg_ram_style_block_and_distributed_reach_every_generator_and_the_estimate(
        dilated_specialized, tmp_path: Path) -> None:
    """"block" puts every line buffer in BRAM, "distributed" none; the estimate moves by
    exactly FINN's per-generator LUT/BRAM difference and the folding (cycles) is unchanged."""
    import json

    from sarvessel.hw.estimate import estimate_model, load_report, write_report
    from sarvessel.hw.steps import (
        SWG_RAM_STYLE_PROP,
        sliding_window_generators,
        swg_block_trade,
    )

    base, kw = dilated_specialized
    dist, cfg = _fold(base, **kw, swg_ram_style="distributed")
    block, _ = _fold(base, **kw, swg_ram_style="block")
    assert len(_styles(dist)) == 7  # stem, two pools, four body convs (two dilated)
    assert set(_styles(dist).values()) == {"distributed"}
    assert set(_styles(block).values()) == {"block"}
    assert block.get_metadata_prop(SWG_RAM_STYLE_PROP) == "block"
    trades = [swg_block_trade(i, cfg.fpga_part) for i in sliding_window_generators(dist)]
    r_dist, r_block = estimate_model(dist, cfg), estimate_model(block, cfg)
    assert r_block.bottleneck_cycles == r_dist.bottleneck_cycles
    assert r_dist.totals["LUT"] - r_block.totals["LUT"] == sum(t[0] for t in trades) > 0
    assert r_block.totals["BRAM_18K"] - r_dist.totals["BRAM_18K"] == sum(t[1] for t in trades) > 0
    # the report lists each generator's choice (other layers: None) and the setting
    swg = [ly for ly in r_block.layers if ly.op_type.startswith("ConvolutionInputGenerator")]
    assert len(swg) == 7 and all(ly.ram_style == "block" for ly in swg)
    assert all(ly.ram_style is None for ly in r_block.layers if ly not in swg)
    assert r_block.swg_ram_style == "block"
    paths = write_report(r_block, tmp_path)
    assert "block" in paths["txt"].read_text() and "7 block" in " ".join(r_block.notes)
    assert load_report(paths["json"]).layers[1].ram_style == r_block.layers[1].ram_style
    # reports written before the option load too
    data = json.loads(paths["json"].read_text())
    del data["swg_ram_style"]
    for ly in data["layers"]:
        del ly["ram_style"]
    paths["json"].write_text(json.dumps(data))
    assert load_report(paths["json"]).swg_ram_style is None


def test_swg_ram_style_auto_moves_only_the_big_buffers_to_bram(dilated_specialized) -> None:
    """"auto" takes a generator to BRAM when its LUTs saved per BRAM18 beat the LUT-budget /
    BRAM-budget exchange rate: at the default 70 %/80 % (356 LUT per BRAM18) none of these small
    64 px buffers qualifies; at a cheaper rate exactly the buffers above it do, the biggest (the
    dilation-4 conv's) first, and LUT goes down and BRAM up against "distributed"."""
    from sarvessel.hw.config import HWConfig
    from sarvessel.hw.estimate import total_resources
    from sarvessel.hw.steps import sliding_window_generators, swg_block_trade

    base, kw = dilated_specialized
    dist, cfg = _fold(base, **kw, swg_ram_style="distributed")
    auto, _ = _fold(base, **kw, swg_ram_style="auto")
    assert HWConfig(**kw).swg_ram_style == "distributed"  # the default keeps FINN's LUTRAM
    assert set(_styles(auto).values()) == {"distributed"}
    assert total_resources(auto, cfg) == total_resources(dist, cfg)

    ratio = {}
    for inst in sliding_window_generators(dist):
        luts, brams = swg_block_trade(inst, cfg.fpga_part)
        ratio[inst.onnx_node.name] = luts / brams
        if list(inst.get_nodeattr("Dilation")) == [4, 4]:
            biggest = inst.onnx_node.name
    assert max(ratio, key=ratio.get) == biggest
    rate = 150.0  # LUT per BRAM18: lut_budget * LUT / (bram_budget * BRAM18)
    lut_budget = rate * 0.8 * 288 / 117_120
    assert min(ratio.values()) < rate < max(ratio.values())
    # one attempt: the same folding as ``dist`` (a tight LUT budget would relax it otherwise)
    auto, acfg = _fold(base, **kw, lut_budget=lut_budget, bram_budget=0.8, swg_ram_style="auto",
                       max_folding_attempts=1)
    styles = _styles(auto)
    assert _styles(dist).keys() == styles.keys()  # same folding, same generators
    chosen = {n for n, s in styles.items() if s == "block"}
    assert chosen == {n for n, r in ratio.items() if r > rate} and biggest in chosen
    assert len(chosen) < len(styles)
    t_auto, t_dist = total_resources(auto, acfg), total_resources(dist, acfg)
    assert t_auto["LUT"] < t_dist["LUT"] and t_auto["BRAM_18K"] > t_dist["BRAM_18K"]


def test_swg_ram_style_auto_stays_within_the_bram_budget(dilated_specialized) -> None:
    """With room for one more BRAM18 only, "auto" takes the best generator and no other."""
    from sarvessel.hw.estimate import total_resources
    from sarvessel.hw.steps import apply_swg_ram_style, sliding_window_generators

    base, kw = dilated_specialized
    dist, cfg = _fold(base, **kw, swg_ram_style="distributed")
    base_bram = total_resources(dist, cfg)["BRAM_18K"]
    bram_budget = (base_bram + 1.5) / 288
    # a LUT budget that makes every generator with a line buffer worth moving (rate ~20)
    tight = cfg.replace(swg_ram_style="auto", bram_budget=bram_budget, lut_budget=0.005)
    auto = apply_swg_ram_style(dist, tight)
    styles = _styles(auto)
    assert list(styles.values()).count("block") == 1
    (chosen,) = (i for i in sliding_window_generators(auto)
                 if i.get_nodeattr("ram_style") == "block")
    assert list(chosen.get_nodeattr("Dilation")) == [4, 4]
    assert total_resources(auto, tight)["BRAM_18K"] <= bram_budget * 288


def test_folding_budget_check_sees_the_swg_ram_style(dilated_specialized) -> None:
    """A LUT budget between the LUTRAM and the BRAM line-buffer variants of the first folding:
    with "block" the target is kept, with "distributed" the folding relaxes it."""
    from sarvessel.hw.estimate import expected_resources
    from sarvessel.hw.steps import FOLDING_FITS_PROP, FOLDING_TARGET_PROP

    base, kw = dilated_specialized
    one = {**kw, "max_folding_attempts": 1}
    dist, cfg = _fold(base, **one, swg_ram_style="distributed")
    block, _ = _fold(base, **one, swg_ram_style="block")
    lut_d, lut_b = (expected_resources(m, cfg)["LUT"] for m in (dist, block))
    budget = (lut_d + lut_b) / 2 / 117_120
    target = cfg.folding_target_cycles()
    block, _ = _fold(base, **kw, swg_ram_style="block", lut_budget=budget, max_folding_attempts=3)
    assert block.get_metadata_prop(FOLDING_TARGET_PROP) == str(target)
    assert block.get_metadata_prop(FOLDING_FITS_PROP) == "1"
    dist, _ = _fold(base, **kw, swg_ram_style="distributed", lut_budget=budget,
                    max_folding_attempts=3)
    assert int(dist.get_metadata_prop(FOLDING_TARGET_PROP)) > target
