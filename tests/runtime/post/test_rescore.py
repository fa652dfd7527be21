"""The second-stage rescorer: its features on real pixels, its ONNX-ML model against
scikit-learn's, and the ONNX backend rescoring and thresholding with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sarvessel.runtime.detections import Detections
from sarvessel.runtime.errors import ModelError
from sarvessel.runtime.post.rescore import (
    FEATURE_NAMES,
    P_FLOOR,
    Rescorer,
    RescorerSpec,
    combine,
    detection_features,
    valid_extent,
)
from tests.runtime.conftest import COL
from tests.runtime.conftest import fit_toy_rescorer as _fit
from tests.runtime.conftest import toy_dets as _dets
from tests.runtime.conftest import toy_scene as _scene


def test_features_measure_the_box_its_ring_and_its_neighbours():
    g = _scene()
    d = _dets([[50, 70, 56, 80], [50, 72, 56, 82], [10, 10, 16, 20]], [0.9, 0.5, 0.3])
    f = detection_features(g, d)
    assert f.shape == (3, len(FEATURE_NAMES)) and f.dtype == np.float32
    ship = f[0]
    assert ship[COL["in_mean"]] == 200 and ship[COL["in_std"]] == 0
    assert ship[COL["ring_mean"]] == pytest.approx(20.0)  # the ring (box grown by its size) is sea
    assert ship[COL["contrast"]] == pytest.approx(180.0)
    assert (ship[COL["log_w"]], ship[COL["log_h"]]) == pytest.approx((np.log(10), np.log(6)))
    assert ship[COL["logit"]] == pytest.approx(np.log(9.0), abs=1e-6)
    assert ship[COL["near_confident"]] == 2  # itself and the shifted box, not the far one
    assert ship[COL["iou_with_higher"]] == 0  # nothing scores higher
    assert f[1, COL["iou_with_higher"]] == pytest.approx(48 / 72)  # 6x8 of 6x12 overlap
    assert f[2, COL["in_mean"]] == 20 and f[2, COL["w16_bright"]] == 0
    assert 0 < ship[COL["w16_bright"]] < 1


def test_an_image_padded_into_a_tile_has_the_features_of_the_image():
    """At runtime the features are measured on the zero-padded tile; fitted on the image."""
    g = _scene()
    tile = np.zeros((512, 512), np.uint8)
    tile[:120, :160] = g
    assert valid_extent(tile) == (120, 160)
    d = _dets([[50, 70, 56, 80], [100, 140, 118, 159]], [0.9, 0.2])  # the second at the corner
    np.testing.assert_array_equal(detection_features(tile, d), detection_features(g, d))
    assert detection_features(tile, Detections()).shape == (0, len(FEATURE_NAMES))


def test_combine_floors_the_probability_so_nothing_falls_below_the_decode_threshold():
    s = np.array([0.001, 0.5], np.float32)
    out = combine(np.zeros(2), s, 0.75)
    assert out[0] == pytest.approx(P_FLOOR**0.75 * 0.001**0.25) and out[0] > 0.001
    assert combine(np.ones(2), s, 0.0).tolist() == pytest.approx(s.tolist())


@pytest.mark.parametrize(("data", "message"), [
    ({"alpha": 0.5}, "at least a 'file'"),
    ({"file": "r.onnx", "alpha": 1.5}, "alpha must be in"),
    ({"file": "r.onnx", "pre_conf": 0}, "pre_conf must be in"),
    ({"file": "r.onnx", "features": ["logit"]}, "fitted on other features"),
    ({"file": "r.onnx", "temperature": 2}, "unknown rescorer keys"),
])
def test_bad_specs_are_refused(data, message):
    with pytest.raises(ValueError, match=message):
        RescorerSpec.from_dict(data)


def test_the_onnx_rescorer_matches_scikit_learn_and_reranks(tmp_path: Path):
    path, fit, x = _fit(tmp_path)
    r = Rescorer(RescorerSpec(file=path.name, alpha=1.0), tmp_path)
    np.testing.assert_allclose(r.probabilities(x), fit.predict_proba(x)[:, 1], atol=1e-5)
    g = _scene()
    d = _dets([[10, 10, 16, 20], [50, 70, 56, 80]], [0.9, 0.2])  # sea scores above the ship
    new = r.rescore(g, d)
    assert new.rows.tolist() == [53.0, 13.0]  # the ship first now
    assert new.scores[0] > 0.5 > new.scores[1] >= P_FLOOR
    with pytest.raises(ModelError, match="rescorer model not found"):
        Rescorer(RescorerSpec(file="nope.onnx"), tmp_path)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="junk.onnx: cannot load the rescorer"):
        Rescorer(RescorerSpec(file="junk.onnx"), tmp_path)


def test_the_backend_rescores_thresholds_on_the_new_score_and_fingerprints_it(tmp_path: Path):
    """The toy network of test_onnx_backend: a bright 8 x 8 cell is a detection."""
    from sarvessel.runtime.backends.onnx import OnnxBackend
    from sarvessel.runtime.detector import compose
    from tests.runtime.conftest import toy_batch as _batch
    from tests.runtime.conftest import toy_meta as _meta
    from tests.runtime.conftest import write_toy_model as _write_model

    path, _, _ = _fit(tmp_path)
    model = _write_model(tmp_path / "toy.onnx")
    _meta(conf_threshold=0.5).write_sidecar(model)
    plain = compose(OnnxBackend(model))
    spec = RescorerSpec(file=path.name, alpha=1.0)
    meta = _meta(conf_threshold=0.5, rescorer=spec.to_dict())
    meta.write_sidecar(model)
    assert json.loads(model.with_suffix(".json").read_text())["rescorer"]["file"] == path.name
    rescored = compose(OnnxBackend(model))
    batch = _batch(2)
    batch[1, 0] = 0  # tile 1: a dim cell (200) in channel 1 only; channel 0 is empty
    a, b = plain.detect(batch), rescored.detect(batch)
    assert [len(d) for d in a] == [1, 1]
    # tile 0's box holds the 255 cell: a ship, kept; tile 1's box is dark on channel 0 (the
    # features' band), so the tree model rules it out and its new score falls under 0.5
    assert len(b[0]) == 1 and b[0].scores[0] > 0.5 and len(b[1]) == 0
    assert rescored.fingerprint != plain.fingerprint
    assert len(compose(OnnxBackend(model), second_stage=False).detect(batch)[1]) == 1


def test_boxes_that_cannot_pass_the_threshold_are_dropped_unmeasured(tmp_path: Path):
    """At a deployment threshold the result is the same as measuring every box and then
    thresholding; only boxes with score**(1 - alpha) <= threshold are skipped."""
    path, _, _ = _fit(tmp_path)
    r = Rescorer(RescorerSpec(file=path.name, alpha=0.75), tmp_path)
    g = _scene()
    rng = np.random.default_rng(1)
    tl = rng.uniform(0, 100, (40, 2))
    boxes = np.concatenate([tl, tl + rng.uniform(4, 20, (40, 2))], axis=1)
    scores = np.concatenate([[0.9, 0.6, 0.3], rng.uniform(0.001, 0.01, 37)])
    d = _dets(boxes.tolist(), scores.tolist())
    full = r.rescore(g, d)
    full = full.select(np.flatnonzero(full.scores > 0.25))
    fast = r.rescore(g, d, conf_threshold=0.25)
    kept = fast.select(np.flatnonzero(fast.scores > 0.25))
    np.testing.assert_array_equal(kept.boxes, full.boxes)
    np.testing.assert_array_equal(kept.scores, full.scores)
    assert len(fast) < len(d)  # the boxes under 0.25**4 = 0.0039 were never measured
    calls = []
    orig = r.probabilities
    r.probabilities = lambda x, f=orig: calls.append(len(x)) or f(x)
    r.rescore(g, d, conf_threshold=0.25)
    assert calls == [int((scores ** 0.25 > 0.25).sum())]
