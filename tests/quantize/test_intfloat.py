"""The integer-exact float graph (intfloat) of the shipped W4A4 models: its requantisation equals
the hardware thresholds for every accumulator, and on real tiles (a generated scene, SSDD) its
accumulators equal the hardware graph's and the QONNX model's, and the runtime finds the same
detections with it as with the QCDQ graph it replaces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qonnx")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from sarvessel.quantize.export import ExportError  # noqa: E402
from sarvessel.quantize.intfloat import (  # noqa: E402
    accumulator_model,
    fit_requant,
    tail_of,
)
from sarvessel.runtime.backends.onnx import OnnxBackend  # noqa: E402
from sarvessel.runtime.detector import compose  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCENE = {"qonnx": REPO / "models" / "xview3_w4a4" / "xview3_w4a4_qonnx.onnx",
         "qcdq": REPO / "src" / "sarvessel" / "runtime" / "models" / "xview3_w4a4.onnx",
         "intfloat": REPO / "src" / "sarvessel" / "runtime" / "models"
         / "xview3_w4a4_intfloat.onnx"}
SSDD = {"qonnx": REPO / "models" / "ssdd_w4a4" / "ssdd_w4a4_qonnx.onnx",
        "qcdq": REPO / "models" / "ssdd_w4a4" / "ssdd_w4a4.onnx",
        "intfloat": REPO / "models" / "ssdd_w4a4" / "ssdd_w4a4_intfloat.onnx"}
TILES = 8
#: tiles also run through the (slow, pure-Python) hardware graph execution, per model
HW_TILES = 4


def test_requantisation_equals_the_thresholds_for_every_accumulator() -> None:
    """Thresholds as FINN derives them (ceil of an affine sequence, some above the reachable
    range): the fitted floor formula is checked on every reachable integer inside the fit and
    again here."""
    rng = np.random.default_rng(0)
    c, k = 24, 15
    start = rng.uniform(-50, 300, (c, 1))
    step = rng.uniform(0.4, 90, (c, 1))
    t = np.ceil(start + step * np.arange(k)).astype(np.int64)
    lo, hi = np.full(c, -2000), np.full(c, 1500)
    fit = fit_requant(t, lo, hi, fraction_bits=8)
    assert fit.margin > 0
    acc = np.arange(-2000, 1501)
    for ch in range(c):
        want = np.searchsorted(t[ch], acc, side="right")
        y = acc.astype(np.float32) + fit.bias[ch]
        got = np.clip(np.floor(y / fit.divisor[ch]), 0, k)
        np.testing.assert_array_equal(got, want)


def test_a_staircase_no_floor_can_follow_is_refused() -> None:
    t = np.array([[0, 1, 100, 101]])
    with pytest.raises(ExportError, match="no linear floor"):
        fit_requant(t, np.array([-10]), np.array([200]), fraction_bits=8)


@pytest.fixture(scope="module")
def scene_tiles(tmp_path_factory) -> np.ndarray:
    """Eight 512² uint8 VV/VH tiles of a generated 1024 x 2048 scene, preprocessed as the
    runtime does."""
    tifffile = pytest.importorskip("tifffile")
    from sarvessel.runtime.preprocess import preprocess
    from sarvessel.synth.generate import synthesize_scene

    scene = synthesize_scene(tmp_path_factory.mktemp("scene"), height=1024, width=2048, seed=3)
    bands = np.stack([tifffile.imread(scene.scene_dir / f"{b}.tif") for b in ("VV_dB", "VH_dB")])
    u8 = preprocess(bands.astype(np.float32))
    tiles = [u8[:, r:r + 512, c:c + 512] for r in (0, 512) for c in range(0, 2048, 512)]
    return np.stack(tiles)


@pytest.fixture(scope="module")
def ssdd_tiles(ssdd_dir: Path) -> np.ndarray:
    """Eight SSDD test images, each in the top-left corner of a zero 512² tile."""
    from PIL import Image

    from sarvessel.evaluation.datasets import load_ssdd

    images = load_ssdd(ssdd_dir, "test")[:TILES]
    out = np.zeros((len(images), 1, 512, 512), np.uint8)
    for i, im in enumerate(images):
        with Image.open(im.path) as pil:
            a = np.asarray(pil.convert("L"))[:512, :512]
        out[i, 0, :a.shape[0], :a.shape[1]] = a
    return out


def _accumulators(path: Path, tiles: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(accumulator_model(path).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": tiles.astype(np.float32)})[0]


def _check_model(paths: dict[str, Path], tiles: np.ndarray) -> int:
    """All four checks on ``tiles``; returns the number of detections found."""
    from qonnx.core.onnx_exec import execute_onnx

    from sarvessel.quantize.equivalence import _run_qonnx
    from sarvessel.quantize.intfloat import hardware_graph

    assert len(tiles) >= TILES
    x = tiles.astype(np.float32)
    acc = _accumulators(paths["intfloat"], tiles)
    assert np.array_equal(acc, np.rint(acc)) and np.abs(acc).max() < 2**24
    # 1. the hardware graph (FINN-streamlined: integer MatMuls, MultiThresholds) bit for bit
    hw = hardware_graph(paths["qonnx"])
    last = [n for n in hw.graph.node if n.op_type == "MatMul"][-1].output[0]
    for i in range(HW_TILES):
        ctx = execute_onnx(hw, {hw.graph.input[0].name: x[i:i + 1]},
                           return_full_exec_context=True)
        np.testing.assert_array_equal(ctx[last].transpose(0, 3, 1, 2), acc[i:i + 1])
    # 2. the QONNX model (execute_onnx): its float output through the last conv's quanta
    raw_q, quantum = _run_qonnx(paths["qonnx"], x)
    scale, bias = quantum
    acc_q = (raw_q.astype(np.float64) - bias) / scale
    assert np.abs(acc_q - np.rint(acc_q)).max() < 0.25  # resolved: trained quanta
    np.testing.assert_array_equal(np.rint(acc_q), acc)
    # 3. the tail is the QONNX last conv's scale and bias
    s, b = tail_of(paths["intfloat"])
    np.testing.assert_allclose(s, scale.reshape(-1), rtol=1e-6)
    np.testing.assert_allclose(b, bias.reshape(-1), rtol=1e-6, atol=1e-7)
    # 4. the runtime: same head map (to float32 rounding, same accumulators) and detections
    new = OnnxBackend(paths["intfloat"], threads=2)
    old = OnnxBackend(paths["qcdq"], threads=2)
    raw_new, raw_old = new.infer(tiles), old.infer(tiles)
    np.testing.assert_allclose(raw_new, raw_old, rtol=0, atol=2e-5)
    acc_old = (raw_old.astype(np.float64) - bias) / scale
    np.testing.assert_array_equal(np.rint(acc_old), acc)
    found = compose(new).detect(tiles)
    for d_new, d_old in zip(found, compose(old).detect(tiles), strict=True):
        assert len(d_new) == len(d_old)
        np.testing.assert_array_equal(d_new.classes, d_old.classes)
        np.testing.assert_allclose(d_new.scores, d_old.scores, atol=1e-5)
        np.testing.assert_allclose(d_new.boxes, d_old.boxes, atol=1e-3)
    return sum(len(d) for d in found)


def test_scene_model_is_exact_on_generated_scene_tiles(scene_tiles: np.ndarray) -> None:
    _check_model(SCENE, scene_tiles)


def test_ssdd_model_is_exact_on_ssdd_tiles(ssdd_tiles: np.ndarray) -> None:
    assert _check_model(SSDD, ssdd_tiles) > 0  # the ships of the eight images


def test_shipped_graph_is_what_the_export_writes(tmp_path: Path) -> None:
    """The committed scene graph is reproduced by the export (same nodes, same constants)."""
    from onnx import numpy_helper

    from sarvessel.quantize.intfloat import export_intfloat
    from sarvessel.runtime.contract import read_metadata

    out = tmp_path / "scene_intfloat.onnx"
    rep = export_intfloat(SCENE["qonnx"], out, metadata=read_metadata(SCENE["qcdq"]))
    assert rep.file_bytes < 10e6 and rep.output_shape == ["batch", 67, 64, 64]
    assert "QuantizeLinear" not in rep.op_counts and "DequantizeLinear" not in rep.op_counts
    a, b = onnx.load(str(out)).graph, onnx.load(str(SCENE["intfloat"])).graph
    assert [n.op_type for n in a.node] == [n.op_type for n in b.node]
    for ia, ib in zip(a.initializer, b.initializer, strict=True):
        np.testing.assert_array_equal(numpy_helper.to_array(ia), numpy_helper.to_array(ib))
