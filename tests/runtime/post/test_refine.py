"""The second-stage box refiner: its features on real pixels, its offsets clipped to the image,
its ONNX-ML model against scikit-learn's, and the rescorer running it before rescoring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sarvessel.runtime.detections import Detections
from sarvessel.runtime.detector import compose
from sarvessel.runtime.errors import ModelError
from sarvessel.runtime.post.refine import (
    FEATURE_NAMES,
    MAX_SIDE,
    BoxRefiner,
    apply_offsets,
    has_window,
    refinable,
    refine_features,
)
from sarvessel.runtime.post.rescore import Rescorer, RescorerSpec
from sarvessel.runtime.post.stage import HeadMapPost
from tests.runtime.conftest import toy_dets as rescore_dets
from tests.runtime.conftest import toy_meta

COL = {n: i for i, n in enumerate(FEATURE_NAMES)}


def _dets(boxes: list[list[float]], scores: list[float] | None = None) -> Detections:
    return rescore_dets(boxes, [0.5] * len(boxes) if scores is None else scores)


def _boat() -> np.ndarray:
    """A 100 x 100 px sea at 20 with a 4 x 6 px boat at 220: rows 40-44, cols 50-56."""
    g = np.full((100, 100), 20, np.uint8)
    g[40:44, 50:56] = 220
    return g


def test_features_find_the_boat_a_loose_box_misses():
    g = _boat()
    box = np.array([[36.0, 48.0, 48.0, 64.0]])  # 12 x 16, boat in its upper left
    f = refine_features(g, box)[0]
    assert f.shape == (len(FEATURE_NAMES),)
    assert (f[COL["h"]], f[COL["w"]]) == (12, 16)
    # the half-maximum extent is the boat's: its edges relative to the box's
    assert [f[COL[k]] for k in ("e_top", "e_left", "e_bottom", "e_right")] == [4, 2, -4, -8]
    # the brightness centroid is the boat's centre (42, 53), the box's is (42, 56)
    assert (f[COL["dy"]], f[COL["dx"]]) == pytest.approx((0.0, -3.0), abs=1e-4)
    assert f[COL["background"]] == 20 and f[COL["peak"]] == 220 and f[COL["n_half"]] == 24
    assert f[COL["sx"]] == pytest.approx(np.std(np.arange(6)), abs=1e-4)
    # zero padding beyond the image (a tile) does not count when the extent says so
    tile = np.zeros((512, 512), np.uint8)
    tile[:100, :100] = g
    corner = np.array([[90.0, 90.0, 100.0, 100.0]])
    np.testing.assert_array_equal(refine_features(tile, corner, extent=(100, 100)),
                                  refine_features(g, corner))


def test_boxes_past_the_image_and_blank_windows_give_no_pull():
    g = _boat()
    # a box entirely above and left of the image (or in a tile's padding): no window, zeros
    far = np.array([[-20.0, -20.0, -12.0, -12.0], [200.0, 200.0, 210.0, 210.0]])
    assert has_window(far, (100, 100)).tolist() == [False, False]
    assert not refine_features(g, far).any()
    # a constant window: nothing above the background, so no centroid pull and no spread
    flat = np.full((100, 100), 37, np.uint8)
    f = refine_features(flat, np.array([[60.0, 70.0, 66.0, 78.0]]))[0]
    assert [f[COL[k]] for k in ("dy", "dx", "sy", "sx", "mean_excess")] == [0, 0, 0, 0, 0]
    assert f[COL["background"]] == 37 and f[COL["n_half"]] == 0


def test_only_small_boxes_are_refined_and_offsets_stay_in_the_image():
    d = _dets([[0, 0, 10, 10], [0, 0, 10, MAX_SIDE + 1], [90, 90, 99, 99]])
    assert refinable(d).tolist() == [0, 2]
    out = apply_offsets(d, np.array([0, 2]), np.array([[1, 2, 3, 4], [-5, -5, 20, 20]]),
                        (100, 100))
    assert out.boxes[0].tolist() == [1, 2, 13, 14]
    assert (out.rows[0], out.cols[0]) == (7, 8)  # the centre follows the box
    assert out.lengths_px[0] == 12 and d.lengths_px[0] == 1  # and the length
    assert out.boxes[2].tolist() == [85, 85, 100, 100]  # clipped to the image
    assert out.boxes[1].tolist() == d.boxes[1].tolist()  # untouched, and d itself unchanged
    assert d.boxes[0].tolist() == [0, 0, 10, 10]
    # an offset that would turn a box inside out leaves a 1 px box at its middle
    flat = apply_offsets(d, np.array([0]), np.array([[8.0, 0, -8.0, 0]]), (100, 100))
    assert flat.boxes[0].tolist() == [4.5, 0, 5.5, 10]


def _fit(tmp_path: Path, max_iter: int = 100) -> tuple[Path, object, np.ndarray]:
    """A regressor that moves each edge to the half-maximum extent, exported as the runtime
    loads it."""
    ensemble = pytest.importorskip("sklearn.ensemble")
    multi = pytest.importorskip("sklearn.multioutput")
    skl2onnx = pytest.importorskip("skl2onnx")
    rng = np.random.default_rng(0)
    x = rng.normal(0, 4, size=(800, len(FEATURE_NAMES))).astype(np.float32)
    y = x[:, [COL["e_top"], COL["e_left"], COL["e_bottom"], COL["e_right"]]].astype(np.float64)
    fit = multi.MultiOutputRegressor(
        ensemble.HistGradientBoostingRegressor(max_iter=max_iter, random_state=0)).fit(x, y)
    onx = skl2onnx.to_onnx(fit, x[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    path = tmp_path / "toy_refiner.onnx"
    path.write_bytes(onx.SerializeToString())
    return path, fit, x


def test_the_onnx_refiner_matches_scikit_learn_and_snaps_a_loose_box(tmp_path: Path):
    path, fit, x = _fit(tmp_path)
    r = BoxRefiner(path)
    np.testing.assert_allclose(r.offsets(x), fit.predict(x), atol=1e-3)
    d = _dets([[36, 48, 48, 64], [0, 0, 60, 60]])
    out = r.refine(_boat(), d)
    iou_before = 24 / (12 * 16)
    t, left, b, right = out.boxes[0]
    inter = max(0, min(b, 44) - max(t, 40)) * max(0, min(right, 56) - max(left, 50))
    iou_after = inter / ((b - t) * (right - left) + 24 - inter)
    assert iou_before < 0.2 and iou_after > 0.6
    assert out.boxes[1].tolist() == [0, 0, 60, 60]  # too large to refine
    # a small box in a tile's zero padding, past the image (extent), is left as it is
    tile = np.zeros((512, 512), np.uint8)
    tile[:100, :100] = _boat()
    pad = _dets([[300, 300, 310, 310]])
    assert r.refine(tile, pad, extent=(100, 100)).boxes[0].tolist() == [300, 300, 310, 310]
    with pytest.raises(ModelError, match="box refiner model not found"):
        BoxRefiner(tmp_path / "nope.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="junk.onnx: cannot load the box refiner"):
        BoxRefiner(tmp_path / "junk.onnx")


def test_the_rescorer_refines_first_and_names_both_files(tmp_path: Path):
    from tests.runtime.conftest import fit_toy_rescorer as fit_rescorer

    refiner, _, _ = _fit(tmp_path)
    rescorer, _, _ = fit_rescorer(tmp_path)
    spec = RescorerSpec(file=rescorer.name, alpha=0.75, refiner=refiner.name)
    assert RescorerSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert "refiner" not in RescorerSpec(file="r.onnx").to_dict()  # old sidecars unchanged
    meta = toy_meta(rescorer=spec.to_dict())
    post = HeadMapPost(meta, tmp_path, conf_threshold=0.01)
    assert post.files == [rescorer, refiner]
    grey = _boat()
    boxes = _dets([[36, 48, 48, 64]], [0.6])
    out = post._second_stage(grey, boxes)
    plain = Rescorer(RescorerSpec(file=rescorer.name, alpha=0.75), tmp_path)
    assert out.boxes[0].tolist() != [36, 48, 48, 64]
    assert plain.rescore(_boat(), _dets([[36, 48, 48, 64]], [0.6])).boxes[0].tolist() == [
        36, 48, 48, 64]
    with pytest.raises(ValueError, match="fitted on other features"):
        RescorerSpec.from_dict({"file": "r.onnx", "refiner": "f.onnx",
                                "refine_features": ["h"]})
    with pytest.raises(ValueError, match="refine_max_side"):
        RescorerSpec.from_dict({"file": "r.onnx", "refiner": "f.onnx", "refine_max_side": 0})
    with pytest.raises(ModelError, match="box refiner model not found"):
        HeadMapPost(toy_meta(rescorer=RescorerSpec(file=rescorer.name, refiner="gone.onnx")
                             .to_dict()), tmp_path)


def test_the_backend_fingerprints_the_refiner(tmp_path: Path):
    """A resumed scene must not reuse rows detected before the refiner changed."""
    from sarvessel.runtime.backends.onnx import OnnxBackend
    from tests.runtime.conftest import fit_toy_rescorer as fit_rescorer
    from tests.runtime.conftest import toy_meta as _meta
    from tests.runtime.conftest import write_toy_model as _write_model

    refiner, _, _ = _fit(tmp_path)
    rescorer, _, _ = fit_rescorer(tmp_path)
    model = _write_model(tmp_path / "toy.onnx")
    _meta(rescorer=RescorerSpec(file=rescorer.name).to_dict()).write_sidecar(model)
    without = compose(OnnxBackend(model)).fingerprint
    _meta(rescorer=RescorerSpec(file=rescorer.name, refiner=refiner.name).to_dict()
          ).write_sidecar(model)
    with_refiner = compose(OnnxBackend(model))
    assert with_refiner.post.rescorer is not None and with_refiner.post.refiner is not None
    assert with_refiner.fingerprint != without
    before = with_refiner.fingerprint
    _fit(tmp_path, max_iter=50)  # the same name, another fit
    assert compose(OnnxBackend(model)).fingerprint != before
