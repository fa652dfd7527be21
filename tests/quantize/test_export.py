"""Export tests: Brevitas → QONNX / QCDQ / integer-fusable QCDQ, run in real onnxruntime and
qonnx sessions and compared with the torch forward, parametrised over bit widths.

Two networks: the project's :class:`sarvessel.model.network.SarYolo` (small widths, random init,
BatchNorm statistics set to non-trivial values, some negative BN gains) and a stand-in Brevitas
chain defined here (QuantConv2d/BN/QuantReLU/MaxPool, 8-bit last conv with an Int32 bias, a
QuantTensor output) so the export does not depend on one network's details.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("brevitas")
pytest.importorskip("qonnx")
onnx = pytest.importorskip("onnx")

import onnxruntime as ort  # noqa: E402
from brevitas.nn import QuantConv2d, QuantReLU  # noqa: E402
from brevitas.quant import Int8WeightPerChannelFloat, Int32Bias, Uint8ActPerTensorFloat  # noqa: E402
from torch import nn  # noqa: E402

from sarvessel.model.config import BitWidths, scene_config  # noqa: E402
from sarvessel.model.network import build_model  # noqa: E402
from sarvessel.quantize.equivalence import EquivalenceError, check_equivalence  # noqa: E402
from sarvessel.quantize.export import (  # noqa: E402
    ExportError,
    ExportFormat,
    export_qcdq,
    export_qcdq_int8,
    export_qonnx,
)
from sarvessel.runtime.backends.onnx import OnnxBackend  # noqa: E402
from sarvessel.runtime.contract import METADATA_KEY  # noqa: E402
from sarvessel.runtime.detector import compose  # noqa: E402
from sarvessel.runtime.post.decode import decode  # noqa: E402

TILE = 64


def _nontrivial_bn(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm random statistics and affine parameters (some gains negative)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) * 3 - 1.0)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)


def _calibrate(model: nn.Module, channels: int) -> None:
    """A few training-mode passes so the activation quantizers' runtime scales are set."""
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randint(0, 256, (2, channels, TILE, TILE)).float())
    model.eval()


def _saryolo(nbits: int, **overrides: object) -> nn.Module:
    """A small calibrated SarYolo with ``nbits``-bit body weights and activations; ``overrides``
    change its :class:`ModelConfig` fields."""
    cfg = scene_config(**{"widths": (8, 16, 16), "pools": 2, "head_width": 8, "reg_max": 4,
                          "tile_size": TILE, "bits": BitWidths(weight=nbits, act=nbits),
                          **overrides})
    torch.manual_seed(nbits)
    model = build_model(cfg)
    _calibrate(model, cfg.in_channels)
    _nontrivial_bn(model, seed=nbits)
    return model


class StandIn(nn.Module):
    """QuantConv2d/BN/QuantReLU/MaxPool chain, uint8 input, 8-bit last conv with Int32 bias."""

    def __init__(self, bits: int, *, channels: int = 1, reg_max: int = 2, nc: int = 1) -> None:
        super().__init__()

        def block(cin: int, cout: int, wbits: int) -> list[nn.Module]:
            return [QuantConv2d(cin, cout, 3, padding=1, bias=False,
                                weight_quant=Int8WeightPerChannelFloat, weight_bit_width=wbits),
                    nn.BatchNorm2d(cout),
                    QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=bits,
                              return_quant_tensor=True)]

        self.body = nn.Sequential(*block(channels, 8, 8), nn.MaxPool2d(2),
                                  *block(8, 8, bits), nn.MaxPool2d(2))
        self.out = QuantConv2d(8, 4 * reg_max + nc, 1, bias=True,
                               weight_quant=Int8WeightPerChannelFloat, weight_bit_width=8,
                               bias_quant=Int32Bias, return_quant_tensor=True)

    def forward(self, x: torch.Tensor):  # type: ignore[no-untyped-def]
        return self.out(self.body(x))  # a QuantTensor: the export must unwrap it


STANDIN_META = {"name": "standin", "tile_size": TILE, "channels": 1, "bands": ["grey"],
                "stride": 4, "reg_max": 2, "nc": 1, "class_names": ["ship"],
                "conf_threshold": 0.25, "iou_threshold": 0.5, "bit_widths": {"act": 4}}


def _tiles(channels: int, n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, channels, TILE, TILE), np.uint8)


@pytest.fixture(scope="module", params=[4, 8], ids=["w4a4", "w8a8"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """SarYolo at one bit width, exported in all three formats."""
    bits = request.param
    model = _saryolo(bits)
    out = tmp_path_factory.mktemp(f"export{bits}")
    reports = {
        ExportFormat.QONNX: export_qonnx(model, out / "m_qonnx.onnx", tile=TILE, channels=2),
        ExportFormat.QCDQ: export_qcdq(model, out / "m.onnx", tile=TILE, channels=2),
        ExportFormat.QCDQ_INT8: export_qcdq_int8(model, out / "m_int8.onnx", tile=TILE,
                                                 channels=2),
    }
    return bits, model, reports


def _assert_integer_exact(rep) -> None:
    """All three pairs compared, integer-exact accumulators of the last conv, float outputs
    equal to 1e-4."""
    assert rep.ok and [(p.a, p.b) for p in rep.pairs] == [("brevitas", "qonnx"),
                                                          ("brevitas", "onnxruntime"),
                                                          ("qonnx", "onnxruntime")]
    for p in rep.pairs:
        assert p.code_mismatches == 0, p
        assert p.max_abs_diff < 1e-4
    assert rep.quantum_residual < 0.25


def test_qonnx_and_qcdq_match_brevitas_exactly(exported) -> None:
    bits, model, reports = exported
    _assert_integer_exact(check_equivalence(model, reports[ExportFormat.QONNX].path,
                                            reports[ExportFormat.QCDQ].path, _tiles(2, 3),
                                            atol=1e-4))


def _assert_fused_and_unchanged(path: Path, fused: int, optimized: Path) -> None:
    """onnxruntime's optimiser turns exactly ``fused`` convs of ``path`` into QLinearConv, and
    the fused integer kernels compute what the unfused graph specifies (no int16 saturation of
    the U8S8 kernel: the rewrite leaves convs that could saturate in float)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(optimized)
    opts.log_severity_level = 3
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(optimized)).graph.node]
    assert ops.count("QLinearConv") == fused, ops
    x = _tiles(2, 2, seed=3).astype(np.float32)
    runs = []
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        o = ort.SessionOptions()
        o.graph_optimization_level = level
        sess = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
        runs.append(sess.run(None, {"x": x})[0])
    np.testing.assert_allclose(runs[1], runs[0], atol=1e-4)


def test_int8_variant_is_fused_and_close(exported, tmp_path: Path) -> None:
    bits, model, reports = exported
    path = reports[ExportFormat.QCDQ_INT8].path
    # Fused: convs whose pair sums 2*max|w|*max(x) fit the int16 of the AVX2 U8S8 kernel,
    # i.e. the 4-bit convs on 4-bit inputs (not the 8-bit first conv on the 0..255 image, nor
    # the float-output last conv). With 8-bit weights and activations nothing qualifies.
    fused = {4: 4, 8: 0}[bits]
    assert reports[ExportFormat.QCDQ_INT8].op_counts.get("BatchNormalization", 0) == 5 - fused
    _assert_fused_and_unchanged(path, fused, tmp_path / "opt.onnx")
    # Bias rounding to int32 flips a few activation roundings: close, not exact.
    rep = check_equivalence(model, None, path, _tiles(2, 3), atol=0.25)
    if not fused:
        assert rep.pairs[0].max_abs_diff < 1e-4
        return
    with pytest.raises(EquivalenceError, match="brevitas vs onnxruntime"):
        check_equivalence(model, None, path, _tiles(2, 3), atol=1e-7)


def test_graph_interfaces_and_metadata(exported) -> None:
    bits, model, reports = exported
    from qonnx.core.modelwrapper import ModelWrapper

    q = reports[ExportFormat.QONNX]
    mw = ModelWrapper(str(q.path))
    assert len(mw.graph.input) == 1
    assert mw.get_tensor_datatype(mw.graph.input[0].name).name == "UINT8"
    out = TILE // model.cfg.stride
    assert q.input_shape == [1, 2, TILE, TILE] and q.output_shape == [1, 4 * 4 + 3, out, out]
    assert "Quant" in q.op_counts and q.op_counts.get("Conv") == 6
    c = reports[ExportFormat.QCDQ]
    assert c.input_shape == ["batch", 2, TILE, TILE]
    assert "Quant" not in c.op_counts and c.op_counts["QuantizeLinear"] >= 5
    proto = onnx.load(str(c.path))
    assert {i.name for i in proto.graph.input} == {"x"}  # no initializers among the inputs
    meta = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    side = json.loads(c.sidecar.read_text())
    assert meta == side
    assert (side["tile_size"], side["channels"], side["stride"], side["reg_max"], side["nc"]) == (
        TILE, 2, model.cfg.stride, 4, 3)
    assert side["bit_widths"]["act"] == bits


def test_onnx_backend_runs_the_export_like_brevitas(exported) -> None:
    bits, model, reports = exported
    backend = compose(OnnxBackend(reports[ExportFormat.QCDQ].path, threads=1),
                      conf_threshold=0.05)
    tiles = _tiles(2, 3, seed=1)
    with torch.no_grad():
        ref_raw = model(torch.from_numpy(tiles.astype(np.float32))).numpy()
    raw = backend.infer(tiles)
    np.testing.assert_allclose(raw, ref_raw, atol=1e-4)
    got = backend.detect(tiles)
    want = decode(ref_raw, stride=model.cfg.stride, reg_max=4, conf_threshold=0.05,
                  iou_threshold=0.5)
    assert [len(d) for d in got] == [len(d) for d in want]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.boxes, w.boxes, atol=1e-3)


def test_equivalence_catches_a_changed_model(exported) -> None:
    bits, model, reports = exported
    other = _saryolo(bits)
    with torch.no_grad():
        other.head[-1].bias.add_(0.5)
    with pytest.raises(EquivalenceError, match="accumulator mismatches"):
        check_equivalence(other, reports[ExportFormat.QONNX].path, None, _tiles(2, 1), atol=1.0)


@pytest.mark.parametrize("bits", [4, 8])
def test_standin_network_exports_exactly(bits: int, tmp_path: Path) -> None:
    torch.manual_seed(bits)
    model = StandIn(bits)
    _calibrate(model, 1)
    _nontrivial_bn(model, seed=bits + 10)
    q = export_qonnx(model, tmp_path / "s_qonnx.onnx", tile=TILE, channels=1,
                     metadata=STANDIN_META)
    c = export_qcdq(model, tmp_path / "s.onnx", tile=TILE, channels=1, metadata=STANDIN_META)
    rep = check_equivalence(model, q.path, c.path, _tiles(1, 2), atol=1e-4)
    # brevitas-qonnx, brevitas-onnxruntime, qonnx-onnxruntime
    assert [p.code_mismatches for p in rep.pairs] == [0, 0, 0]
    i8 = export_qcdq_int8(model, tmp_path / "s8.onnx", tile=TILE, channels=1,
                          metadata=STANDIN_META)
    check_equivalence(model, None, i8.path, _tiles(1, 2), atol=0.25)
    assert OnnxBackend(c.path).metadata.name == "standin"


def _context_saryolo(bits: int) -> nn.Module:
    """SarYolo with a context branch: fork after the body, max-pool + dilated convs at twice
    the stride, nearest upsampling, Concat with the body output."""
    return _saryolo(bits, widths=(8, 16, 16, 16), dilations=(1, 1, 1, 2),
                    context_widths=(16, 16), context_dilations=(1, 2))


@pytest.mark.parametrize("bits", [4, 8])
def test_context_branch_exports_exactly(bits: int, tmp_path: Path) -> None:
    from qonnx.core.modelwrapper import ModelWrapper

    model = _context_saryolo(bits)
    assert model.context[-2] is model.body[-1]  # one QuantReLU ends both Concat inputs
    q = export_qonnx(model, tmp_path / "ctx_qonnx.onnx", tile=TILE, channels=2)
    c = export_qcdq(model, tmp_path / "ctx.onnx", tile=TILE, channels=2)
    out = TILE // model.cfg.stride
    assert q.output_shape == [1, 4 * 4 + 3, out, out] and c.output_shape[1:] == q.output_shape[1:]
    for r in (q, c):
        assert r.op_counts["Concat"] == 1 and r.op_counts["Resize"] == 1
        assert r.op_counts["Conv"] == 4 + 2 + 3
    # QONNX: both Concat inputs come out of Quant nodes with the same scale and bit width
    mw = ModelWrapper(str(q.path))
    concat = mw.get_nodes_by_op_type("Concat")[0]
    quants = []
    for t in concat.input:
        node = mw.find_producer(t)
        while node.op_type != "Quant":
            node = mw.find_producer(node.input[0])
        quants.append(node)
    scales = [mw.get_initializer(n.input[1]) for n in quants]
    widths = [mw.get_initializer(n.input[3]) for n in quants]
    assert quants[0] is not quants[1]
    assert np.array_equal(scales[0], scales[1]) and np.array_equal(widths[0], widths[1])
    assert len(mw.find_consumers(quants[0].output[0])) == 2  # the fork: Concat, MaxPool
    _assert_integer_exact(check_equivalence(model, q.path, c.path, _tiles(2, 3), atol=1e-4))
    # integer-fusable variant: the fork's DequantizeLinear is split, MaxPool and Resize move
    # before theirs and the Concat joins integers, so with 4 bits every 4-bit conv fuses
    # (3 body + 2 context + 2 head: all but the 8-bit first and the float-output last conv)
    i8 = export_qcdq_int8(model, tmp_path / "ctx_int8.onnx", tile=TILE, channels=2)
    assert i8.op_counts["Concat"] == 1
    fused = {4: 7, 8: 0}[bits]
    assert i8.op_counts.get("BatchNormalization", 0) == 8 - fused
    _assert_fused_and_unchanged(i8.path, fused, tmp_path / "ctx_opt.onnx")
    check_equivalence(model, None, i8.path, _tiles(2, 3), atol=0.25)


def test_metadata_must_fit_the_export(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="channels"):
        export_qcdq(StandIn(4), tmp_path / "x.onnx", tile=TILE, channels=2,
                    metadata=STANDIN_META)
    with pytest.raises(ExportError, match="no metadata"):
        export_qcdq(StandIn(4), tmp_path / "x.onnx", tile=TILE, channels=1)


def test_export_cli_writes_checked_models(tmp_path: Path) -> None:
    from sarvessel.cli import main
    from sarvessel.model.checkpoint import save_checkpoint

    model = _saryolo(4)
    ckpt = save_checkpoint(tmp_path / "ck.pt", model)
    out = tmp_path / "out"
    assert main(["export", str(ckpt), "--out", str(out), "--name", "toy", "--int8"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "toy.json", "toy.onnx", "toy_export.json", "toy_int8.json", "toy_int8.onnx",
        "toy_qonnx.json", "toy_qonnx.onnx"]
    summary = json.loads((out / "toy_export.json").read_text())
    assert summary["qcdq"]["format"] == "qcdq"
    assert [p["code_mismatches"] for p in summary["equivalence"]["pairs"]] == [0, 0, 0]
    backend = OnnxBackend(out / "toy.onnx")
    assert (backend.channels, backend.tile_size) == (2, TILE)
    assert main(["export", str(tmp_path / "missing.pt"), "--out", str(out)]) == 2


@pytest.mark.parametrize(("bits", "per_channel"), [(4, 0), (8, 0), (4, 1)])
def test_separable_body_exports_exactly(bits: int, per_channel: int, tmp_path: Path) -> None:
    """Depthwise-separable blocks (grouped 3x3 conv, then 1x1) keep the export integer-exact and
    the int8 variant fuses the depthwise convs too, also with one activation scale per channel
    on the depthwise convs' inputs (``dw_in_per_channel``)."""
    model = _saryolo(bits, widths=(8, 16, 24, 24), dilations=(1, 1, 1, 2), separable_from=1,
                     bits=BitWidths(weight=bits, act=bits, dw_in_per_channel=per_channel))
    dw = [m for m in model.body if getattr(m, "groups", 1) > 1]
    assert [m.groups for m in dw] == [8, 16, 24]
    scales = [tuple(m.act_quant.scale().shape) for m in model.body if hasattr(m, "act_quant")]
    # the stem's and each 1x1's output scale (they feed depthwise convs; the last one does not)
    pc = [(1, 8, 1, 1), (1, 16, 1, 1), (1, 24, 1, 1)] if per_channel else [()] * 3
    assert [scales[0], scales[2], scales[4]] == pc and scales[6] == ()
    if per_channel:  # the calibrated per-channel scales really differ between channels
        s = model.body[2].act_quant.scale().flatten()
        assert float(s.max() / s.min()) > 1.2
    q = export_qonnx(model, tmp_path / "sep_qonnx.onnx", tile=TILE, channels=2)
    c = export_qcdq(model, tmp_path / "sep.onnx", tile=TILE, channels=2)
    # stem + 3 x (depthwise + pointwise) + 3 head convs
    for r in (q, c):
        assert r.op_counts["Conv"] == 1 + 2 * 3 + 3
    groups = [a.i for n in onnx.load(str(c.path)).graph.node if n.op_type == "Conv"
              for a in n.attribute if a.name == "group"]
    assert sorted(g for g in groups if g > 1) == [8, 16, 24]
    _assert_integer_exact(check_equivalence(model, q.path, c.path, _tiles(2, 3), atol=1e-4))
    i8 = export_qcdq_int8(model, tmp_path / "sep_int8.onnx", tile=TILE, channels=2)
    # with 4 bits all but the 8-bit first and the float-output last conv fuse: 3 depthwise,
    # 3 pointwise, 2 head. QLinearConv takes only per-tensor input and output scales: with
    # per-channel ones the rewrite moves them into the depthwise weights (input) and the 1x1
    # weights and biases (output), so the same 8 fuse.
    _assert_fused_and_unchanged(i8.path, {4: 8, 8: 0}[bits], tmp_path / "sep_opt.onnx")
    check_equivalence(model, None, i8.path, _tiles(2, 3), atol=0.25)


def test_learned_weight_scales_survive_checkpoint_and_export(tmp_path: Path) -> None:
    """``weight_mse=1``: per-channel weight scales start below max|w| (rounding-MSE optimum),
    are trained like any parameter, come back from a checkpoint unchanged and export
    integer-exact, so FINN and onnxruntime see the trained scales."""
    from sarvessel.model.checkpoint import load_checkpoint, save_checkpoint

    model = _saryolo(4, bits=BitWidths(weight=4, act=4, weight_mse=1))
    idx = [i for i, m in enumerate(model.body) if hasattr(m, "quant_weight")][1]
    conv = model.body[idx]
    w_scale = conv.quant_weight().scale.flatten().detach().clone()
    wmax = conv.weight.detach().abs().amax((1, 2, 3))
    # at or below max|w| / 7 (uniform init weights have few outliers to clip)
    assert bool((w_scale * 7 <= wmax * (1 + 1e-5)).all())
    assert float((w_scale * 7 / wmax).mean()) < 0.99
    learned = [n for n, p in model.named_parameters() if "weight_quant" in n]
    assert learned and all(p.requires_grad for n, p in model.named_parameters() if n in learned)
    # one optimiser step moves the scales
    model.train()
    opt = torch.optim.SGD([p for n, p in model.named_parameters() if n in learned], lr=0.05)
    model(torch.randint(0, 256, (2, 2, TILE, TILE)).float()).square().mean().backward()
    opt.step()
    model.eval()
    moved = conv.quant_weight().scale.flatten().detach()
    assert not torch.allclose(moved, w_scale)
    back, _ = load_checkpoint(save_checkpoint(tmp_path / "ck.pt", model))
    assert torch.equal(back.body[idx].quant_weight().scale.flatten(), moved)
    x = torch.randint(0, 256, (2, 2, TILE, TILE)).float()
    with torch.no_grad():
        assert torch.equal(model(x), back(x))
    q = export_qonnx(back, tmp_path / "mse_qonnx.onnx", tile=TILE, channels=2)
    c = export_qcdq(back, tmp_path / "mse.onnx", tile=TILE, channels=2)
    _assert_integer_exact(check_equivalence(back, q.path, c.path, _tiles(2, 3), atol=1e-4))


def test_subgrid_head_exports_packed_and_the_backend_unpacks_it(tmp_path: Path) -> None:
    """A subgrid-2 head leaves the graph packed (4 anchors per cell in its channels, FINN sees
    one plain conv) and the backend hands the decoder the anchor grid the loss trained on."""
    model = _saryolo(4, subgrid=2)
    q = export_qonnx(model, tmp_path / "sg_qonnx.onnx", tile=TILE, channels=2)
    c = export_qcdq(model, tmp_path / "sg.onnx", tile=TILE, channels=2)
    cells = TILE // model.cfg.stride
    assert c.output_shape[1:] == [4 * (4 * 4 + 3), cells, cells] == q.output_shape[1:]
    assert json.loads(c.sidecar.read_text())["subgrid"] == 2
    _assert_integer_exact(check_equivalence(model, q.path, c.path, _tiles(2, 2), atol=1e-4))
    backend = compose(OnnxBackend(c.path, threads=1), conf_threshold=0.001)
    tiles = _tiles(2, 2, seed=3)
    with torch.no_grad():
        grid = model.forward_grid(torch.from_numpy(tiles.astype(np.float32))).numpy()
    raw = backend.infer(tiles)
    assert raw.shape == (2, 4 * 4 + 3, 2 * cells, 2 * cells)
    np.testing.assert_allclose(raw, grid, atol=1e-4)
    got = backend.detect(tiles)
    want = decode(grid, stride=model.cfg.stride, reg_max=4, conf_threshold=0.001,
                  iou_threshold=0.5, subgrid=2)
    assert [len(d) for d in got] == [len(d) for d in want] and sum(map(len, got)) > 0
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.boxes, w.boxes, atol=1e-3)
