"""Python execution of the HW graphs against the QONNX model, on SAR-like uint8 tiles."""

from __future__ import annotations

import numpy as np
import pytest

from sarvessel.hw.errors import VerificationError

pytestmark = pytest.mark.finn


def _real_network_flow(tmp_path, name: str, needs: str, **overrides):
    """Export the project's network with ``overrides`` (skipping when only the stand-in exists:
    ``needs`` says for what) and run the estimate flow on it at a 64 px tile. Returns the QONNX
    path, the flow config and the flow result."""

    from sarvessel.hw.config import HWConfig
    from sarvessel.hw.flow import run_flow
    from tests.hw.conftest import _finn_or_skip, export_contract_qonnx

    _finn_or_skip()
    path, which = export_contract_qonnx(tmp_path / f"{name}.onnx", tile=64, **overrides)
    if which != "sarvessel.model.network":
        pytest.skip(f"the real network is needed for {needs}")
    cfg = HWConfig(output_dir=tmp_path / "flow", tile_size=64, tile_overlap=8)
    return path, cfg, run_flow(path, cfg)


def test_synthetic_tiles_use_the_runtime_preprocessing() -> None:
    from sarvessel.hw.verify import synthetic_sar_tiles

    t = synthetic_sar_tiles(2, channels=2, tile=64, seed=3)
    assert t.shape == (2, 2, 64, 64) and t.dtype == np.uint8
    # sea clutter around -20 dB (VV) maps to ~109 on the [-50, 20] dB scale, VH lower
    assert 90 < np.median(t[:, 0]) < 125
    assert np.median(t[:, 1]) < np.median(t[:, 0])
    assert t.max() > 200  # bright point targets
    assert np.array_equal(t, synthetic_sar_tiles(2, channels=2, tile=64, seed=3))


def test_hw_graphs_match_bit_for_bit(flow_64, small_qonnx) -> None:
    from sarvessel.hw.verify import synthetic_sar_tiles, verify_flow_outputs

    cfg, _ = flow_64
    tiles = synthetic_sar_tiles(2, channels=2, tile=64)
    report = verify_flow_outputs(small_qonnx, cfg.output_dir, tiles)
    assert len(report.tiles) == 2
    assert report.hw_exact
    assert report.tiles[0].max_abs_ref != report.tiles[1].max_abs_ref  # not a constant net
    for t in report.tiles:
        assert t.ref_std > 0
        assert t.hw_vs_finn_exact is True and t.dataflow_exact is True
        assert t.qonnx_mismatch <= 0.01
        assert t.off_grid < 0.25
    d = report.to_dict()
    assert d["hw_exact"] is True and len(d["tiles"]) == 2


@pytest.mark.parametrize("bits", [{}, {"weight_mse": 1}], ids=["max_scales", "learned_scales"])
def test_dilated_body_converts_and_stays_bit_exact(tmp_path, bits) -> None:
    """Dilated stride-8 convs (the SSDD model's receptive-field trick) become FINN sliding-window
    generators with ``Dilation`` and the HW graphs still equal the QONNX model bit for bit, also
    with learned (MSE-initialised) per-channel weight scales (``weight_mse``)."""
    from qonnx.core.modelwrapper import ModelWrapper

    from sarvessel.hw.verify import synthetic_sar_tiles, verify_flow_outputs

    path, cfg, result = _real_network_flow(tmp_path, "dilated", "dilated convs",
                                           widths=(8, 16, 16, 16, 16),
                                           dilations=(1, 1, 1, 2, 4), bits=bits)
    hw = ModelWrapper(str(result.checkpoints["convert_to_hw"]))
    swg = [n for n in hw.graph.node if n.op_type.startswith("ConvolutionInputGenerator")]
    dil = [list(next(a.ints for a in n.attribute if a.name == "Dilation")) for n in swg]
    assert [2, 2] in dil and [4, 4] in dil
    report = verify_flow_outputs(path, cfg.output_dir, synthetic_sar_tiles(2, channels=2, tile=64))
    assert report.hw_exact
    assert all(t.ref_std > 0 for t in report.tiles)


def test_subgrid_head_converts_and_stays_bit_exact(tmp_path) -> None:
    """A subgrid-2 head is one wider last conv for FINN: its MVAU emits 4 anchors' channels per
    cell, and the HW graphs equal the QONNX model bit for bit (the runtime unpacks on the CPU)."""
    from qonnx.core.modelwrapper import ModelWrapper

    from sarvessel.hw.verify import synthetic_sar_tiles, verify_flow_outputs

    path, cfg, result = _real_network_flow(tmp_path, "subgrid", "a subgrid head",
                                           widths=(8, 16, 16), subgrid=2)
    hw = ModelWrapper(str(result.checkpoints["convert_to_hw"]))
    mvaus = [n for n in hw.graph.node if n.op_type.startswith("MVAU")]
    last_mh = next(a.i for a in mvaus[-1].attribute if a.name == "MH")
    assert last_mh == 4 * (4 * 16 + 3)
    report = verify_flow_outputs(path, cfg.output_dir, synthetic_sar_tiles(2, channels=2, tile=64))
    assert report.hw_exact


@pytest.mark.parametrize(("bits", "dw_dtype"), [({"dw_weight": 8}, "INT8"),
                                               ({"dw_in_per_channel": 1}, "INT4")])
def test_separable_body_converts_and_stays_bit_exact(tmp_path, bits, dw_dtype) -> None:
    """A depthwise-separable body (``separable_from``) becomes one VVAU per depthwise 3x3 conv
    (fed by depthwise sliding-window generators, dilated ones keeping ``Dilation``) and one MVAU
    per 1x1 conv, and the HW graphs still equal the QONNX model bit for bit. Case 1: 8-bit
    depthwise weights (``dw_weight``) beside 4-bit dense ones (mixed precision survives).
    Case 2: all 4-bit with one activation scale per channel into every depthwise conv
    (``dw_in_per_channel``): streamlining moves the per-channel Mul past the max-pools and the
    depthwise convs into the next thresholds, so no float op is left in the dataflow graph."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from sarvessel.hw.steps import conversion_problems
    from sarvessel.hw.verify import synthetic_sar_tiles, verify_flow_outputs

    widths, dilations = (8, 16, 24, 24, 24), (1, 1, 1, 2, 4)
    path, cfg, result = _real_network_flow(tmp_path, "separable", "separable blocks",
                                           widths=widths, dilations=dilations,
                                           separable_from=1, bits=bits)
    hw = ModelWrapper(str(result.checkpoints["convert_to_hw"]))
    assert conversion_problems(hw, cfg) == []
    ops = [n.op_type for n in hw.graph.node]
    n_sep = len(widths) - 1
    assert sum(o.startswith("VVAU") for o in ops) == n_sep
    wdt = [(n.op_type[:4], getCustomOp(n).get_nodeattr("weightDataType")) for n in hw.graph.node
           if n.op_type.startswith(("VVAU", "MVAU"))]
    assert [d for op, d in wdt if op == "VVAU"] == [dw_dtype] * n_sep
    # 8-bit stem, 4-bit 1x1 convs and first two head convs, 8-bit last conv
    assert [d for op, d in wdt if op == "MVAU"] == ["INT8"] + ["INT4"] * (n_sep + 2) + ["INT8"]
    # stem + 1x1 of every separable block + 3 head convs
    assert sum(o.startswith("MVAU") for o in ops) == 1 + n_sep + 3
    # every VVAU reads a depthwise sliding-window generator (the max-pools' are depthwise too)
    swg = [getCustomOp(hw.find_producer(n.input[0])) for n in hw.graph.node
           if n.op_type.startswith("VVAU")]
    assert all(s.onnx_node.op_type.startswith("ConvolutionInputGenerator") for s in swg)
    assert all(s.get_nodeattr("depthwise") == 1 for s in swg)
    dil = [list(s.get_nodeattr("Dilation")) for s in swg]
    assert dil == [[1, 1], [1, 1], [2, 2], [4, 4]]
    folded = [n for n in result.model.graph.node if n.op_type.startswith("VVAU")]
    assert len(folded) == n_sep
    report = verify_flow_outputs(path, cfg.output_dir, synthetic_sar_tiles(2, channels=2, tile=64))
    assert report.hw_exact
    for t in report.tiles:
        assert t.ref_std > 0
        # both stages ran: the VVAUs execute in Python before and after specialisation
        assert t.hw_vs_finn_exact is True and t.dataflow_exact is True
        assert t.qonnx_mismatch <= 0.01


def test_context_branch_converts_and_stays_bit_exact(tmp_path) -> None:
    """A context branch (the body output forks into a Concat and a max-pool -> dilated convs ->
    nearest x2 upsampling path, both Concat inputs leaving one shared quantizer) becomes
    DuplicateStreams, UpsampleNearestNeighbour and StreamingConcat inside the one dataflow
    partition; the HW graphs equal the QONNX model bit for bit and the estimate prices the
    Concat's skip FIFO."""
    from qonnx.core.modelwrapper import ModelWrapper

    from sarvessel.hw.estimate import load_report
    from sarvessel.hw.steps import (
        _fold_upsamplers,
        conversion_problems,
        has_branches,
        is_hw_node,
        parent_model_path,
    )
    from sarvessel.hw.verify import synthetic_sar_tiles, verify_flow_outputs

    path, cfg, result = _real_network_flow(tmp_path, "context", "a context branch",
                                           widths=(8, 16, 16, 16), dilations=(1, 1, 1, 2),
                                           context_widths=(16, 16), context_dilations=(1, 2))
    assert has_branches(ModelWrapper(str(result.checkpoints["qonnx_to_finn"])))
    hw = ModelWrapper(str(result.checkpoints["convert_to_hw"]))
    assert conversion_problems(hw, cfg) == []
    ops = [n.op_type for n in hw.graph.node]
    for op in ("StreamingConcat", "UpsampleNearestNeighbour", "DuplicateStreams"):
        assert ops.count(op) == 1, (op, ops)
    dup = next(n for n in hw.graph.node if n.op_type == "DuplicateStreams")
    concat = next(n for n in hw.graph.node if n.op_type == "StreamingConcat")
    assert any(o in concat.input for o in dup.output)  # the skip path
    up = next(n for n in hw.graph.node if n.op_type == "UpsampleNearestNeighbour")
    assert up.output[0] in concat.input
    # all of it in one partition, specialised; only the layout head and CPU tail outside
    df = result.model
    assert all(is_hw_node(n) for n in df.graph.node)
    df_ops = {n.op_type for n in df.graph.node}
    assert {"StreamingConcat_hls", "UpsampleNearestNeighbour_hls",
            "DuplicateStreams_hls"} <= df_ops
    parent = ModelWrapper(str(parent_model_path(df)))
    assert [n.op_type for n in parent.graph.node] == [
        "Transpose", "StreamingDataflowPartition", "Transpose", "Mul", "Add"
    ]
    # SetFolding ignores the upsampler; the flow folds it to the target itself (8x8x16 words
    # at SIMD 1 = 1024 cycles; a 256-cycle target needs SIMD 4)
    spec = ModelWrapper(str(result.checkpoints["specialize_layers"]))
    up_hls = next(n for n in _fold_upsamplers(spec, 256).graph.node
                  if n.op_type == "UpsampleNearestNeighbour_hls")
    assert next(a.i for a in up_hls.attribute if a.name == "SIMD") == 4
    tiles = synthetic_sar_tiles(2, channels=2, tile=64)
    report = verify_flow_outputs(path, cfg.output_dir, tiles)
    assert report.hw_exact
    assert report.tiles[0].max_abs_ref != report.tiles[1].max_abs_ref
    for t in report.tiles:
        assert t.ref_std > 0
        assert t.hw_vs_finn_exact is True and t.dataflow_exact is True
        assert t.qonnx_mismatch <= 0.01
    # the estimate: the new layers are listed, the skip FIFO holds the whole 8-row map
    # (the branch's pool + 3x3 d1 + 3x3 d2 windows reach 7 rows past the current one)
    rep = load_report(cfg.report_dir() / "estimate.json")
    names = {ly.op_type for ly in rep.layers}
    assert {"StreamingConcat_hls", "UpsampleNearestNeighbour_hls",
            "DuplicateStreams_hls"} <= names
    fifo = [ly for ly in rep.layers if ly.name.startswith("skip_fifo_")]
    assert len(fifo) == 1 and fifo[0].cycles == 0
    simd = next(a.i for n in df.graph.node if n.op_type == "StreamingConcat_hls"
                for a in n.attribute if a.name == "SIMD")
    assert fifo[0].folding["depth"] == 8 * 8 * 16 // simd
    assert fifo[0].resources["LUT"] > 0
    assert rep.totals["LUT"] == pytest.approx(sum(ly.resources["LUT"] for ly in rep.layers))


def test_fine_feature_skip_converts_and_stays_bit_exact(tmp_path) -> None:
    """A fine-feature skip (the last pooled block's output forks into the MaxPool and a 2x2
    stride-2 conv that rejoins the body output at a Concat; one shared quantizer) becomes
    DuplicateStreams and StreamingConcat in the one dataflow partition, the HW graphs equal the
    QONNX model bit for bit, and the estimate prices the skip's FIFO, which holds the rows the
    deep path needs before it emits its first."""
    from qonnx.core.modelwrapper import ModelWrapper

    from sarvessel.hw.estimate import load_report
    from sarvessel.hw.steps import conversion_problems, has_branches, is_hw_node
    from sarvessel.hw.verify import synthetic_sar_tiles, verify_flow_outputs

    path, cfg, result = _real_network_flow(tmp_path, "skip", "a fine-feature skip",
                                           widths=(8, 16, 16, 16), dilations=(1, 1, 1, 2),
                                           skip_width=8)
    assert has_branches(ModelWrapper(str(result.checkpoints["qonnx_to_finn"])))
    hw = ModelWrapper(str(result.checkpoints["convert_to_hw"]))
    assert conversion_problems(hw, cfg) == []
    ops = [n.op_type for n in hw.graph.node]
    assert ops.count("StreamingConcat") == 1 and ops.count("DuplicateStreams") == 1, ops
    assert all(is_hw_node(n) for n in result.model.graph.node)
    tiles = synthetic_sar_tiles(2, channels=2, tile=64)
    report = verify_flow_outputs(path, cfg.output_dir, tiles)
    assert report.hw_exact
    for t in report.tiles:
        assert t.ref_std > 0
        assert t.hw_vs_finn_exact is True and t.dataflow_exact is True
    rep = load_report(cfg.report_dir() / "estimate.json")
    fifo = [ly for ly in rep.layers if ly.name.startswith("skip_fifo_")]
    # the skip input waits for the deep path: 3x3 d1 and 3x3 d2 windows at 8x8 reach 3 rows
    # past the current one, plus the MaxPool / 2x2-conv rows, so a few rows, not the map
    assert len(fifo) == 1 and fifo[0].folding["depth"] > 1 and fifo[0].resources["LUT"] > 0


def test_tampered_dataflow_model_is_caught(flow_64, small_qonnx, tmp_path) -> None:
    from qonnx.core.modelwrapper import ModelWrapper

    from sarvessel.hw.verify import synthetic_sar_tiles, verify_models

    cfg, result = flow_64
    df = ModelWrapper(str(result.checkpoints["generate_estimates"]))
    # flip the sign of one output channel's weights in the final conv (no activation after it)
    mvau = [n for n in df.graph.node if n.op_type.startswith("MVAU")][-1]
    w = df.get_initializer(mvau.input[1]).copy()
    assert np.abs(w[:, 0]).sum() > 0
    w[:, 0] = -w[:, 0]
    df.set_initializer(mvau.input[1], w)
    tiles = synthetic_sar_tiles(1, channels=2, tile=64)
    with pytest.raises(VerificationError, match="does not match"):
        verify_models(
            small_qonnx, result.checkpoints["convert_to_hw"], tiles, dataflow_model=df
        )


def test_bad_tiles_are_rejected(flow_64, small_qonnx) -> None:
    from sarvessel.hw.verify import verify_models

    _, result = flow_64
    with pytest.raises(VerificationError, match="uint8"):
        verify_models(small_qonnx, result.checkpoints["convert_to_hw"], np.zeros((1, 2, 64, 64)))


@pytest.mark.ssdd
def test_real_sar_tiles_from_ssdd(ssdd_dir, tmp_path) -> None:
    """The grey SSDD detector's HW graphs on real SAR image crops (128 px) from the test split."""

    from PIL import Image

    from tests.hw.conftest import _finn_or_skip, export_contract_qonnx

    _finn_or_skip()
    from sarvessel.hw.config import HWConfig
    from sarvessel.hw.flow import run_flow
    from sarvessel.hw.verify import verify_flow_outputs

    ids = (ssdd_dir / "ImageSets" / "Main" / "test.txt").read_text().split()[:2]
    tiles = []
    for i in ids:
        img = np.asarray(Image.open(ssdd_dir / "JPEGImages" / f"{i}.jpg").convert("L"))
        r0, c0 = (img.shape[0] - 128) // 2, (img.shape[1] - 128) // 2
        tiles.append(img[None, r0 : r0 + 128, c0 : c0 + 128])
    tiles = np.stack(tiles).astype(np.uint8)
    model, _ = export_contract_qonnx(tmp_path / "ssdd_128.onnx", tile=128, channels=1)
    cfg = HWConfig(output_dir=tmp_path / "out", tile_size=128, tile_overlap=16)
    run_flow(model, cfg)
    report = verify_flow_outputs(model, cfg.output_dir, tiles)
    assert report.hw_exact
    assert all(t.qonnx_mismatch <= 0.01 and t.ref_std > 0 for t in report.tiles)
    assert report.tiles[0].max_abs_ref != report.tiles[1].max_abs_ref
