"""Tests of the onnxruntime backend on small hand-built ONNX graphs (real sessions, tmp_path).

The graphs mimic the exported network's interface: float input carrying 0..255, raw output
``[B, 4*reg_max + nc, T/s, T/s]``. An average pool over each stride cell followed by a 1x1 conv
gives a class logit ``0.1 * mean - 10`` (a bright cell is a detection) and constant DFL logits
peaked at bin 2 (every box reaches 2 strides from its anchor on each side).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sarvessel.runtime.backends.base import Backend
from sarvessel.runtime.backends.onnx import OnnxBackend
from sarvessel.runtime.contract import METADATA_KEY, read_metadata
from sarvessel.runtime.detector import compose
from sarvessel.runtime.errors import ModelError
from tests.runtime.conftest import CHANNELS, NC, REG_MAX, STRIDE, TILE
from tests.runtime.conftest import toy_batch as _batch
from tests.runtime.conftest import toy_meta as _meta
from tests.runtime.conftest import write_toy_model as _write_model

onnx = pytest.importorskip("onnx")


def test_detect_finds_bright_cells_with_boxes_and_classes(model_path: Path) -> None:
    backend = OnnxBackend(model_path, threads=1)
    assert isinstance(backend, Backend)
    assert (backend.channels, backend.tile_size) == (CHANNELS, TILE)
    res = compose(backend).detect(_batch(3))
    assert [len(d) for d in res] == [1, 1, 0]
    d0, d1 = res[0], res[1]
    # anchor (44, 20); 2 strides (16 px) on every side
    np.testing.assert_allclose(d0.boxes[0], [4.0, 28.0, 36.0, 60.0], atol=1e-3)
    # VV scene model: length measured on the image (the 8 px bright square less the 3 px PSF),
    # not the 32 px box
    assert (d0.rows[0], d0.cols[0], d0.lengths_px[0]) == pytest.approx((20.0, 44.0, 5.0))
    assert d0.classes[0] == 0 and d0.scores[0] == pytest.approx(1 / (1 + np.exp(-15.5)))
    assert d1.classes[0] == 1 and d1.scores[0] == pytest.approx(1 / (1 + np.exp(-10.0)), 1e-6)
    assert (d1.rows[0], d1.cols[0]) == pytest.approx((60.0, 4.0))
    assert backend.tiles == 3 and backend.seconds_infer > 0


def test_raw_output_shape_and_values(model_path: Path) -> None:
    raw = OnnxBackend(model_path).infer(_batch(2))
    assert raw.shape == (2, 4 * REG_MAX + NC, TILE // STRIDE, TILE // STRIDE)
    assert raw.dtype == np.float32
    assert raw[0, 4 * REG_MAX, 2, 5] == pytest.approx(15.5, abs=1e-4)
    assert raw[0, 4 * REG_MAX, 0, 0] == pytest.approx(-10.0)


def test_conf_threshold_override(model_path: Path) -> None:
    # logit 10 -> score 0.99995: above 0.9999, below 0.99999
    low = compose(OnnxBackend(model_path), conf_threshold=0.9999).detect(_batch(2))
    high = compose(OnnxBackend(model_path), conf_threshold=0.99999).detect(_batch(2))
    assert [len(d) for d in low] == [1, 1]
    assert [len(d) for d in high] == [1, 0]


def test_fixed_batch_one_graph_runs_bigger_batches(tmp_path: Path) -> None:
    path = _write_model(tmp_path / "b1.onnx", batch=1)
    _meta().write_sidecar(path)
    backend = OnnxBackend(path)
    assert backend.max_batch == 1
    assert [len(d) for d in compose(backend).detect(_batch(3))] == [1, 1, 0]
    assert backend.infer(_batch(1)[:0]).shape[0] == 0


def test_metadata_from_metadata_props_without_sidecar(tmp_path: Path) -> None:
    meta = _meta(name="props-only", conf_threshold=0.3)
    path = _write_model(tmp_path / "m.onnx", props={METADATA_KEY: json.dumps(meta.to_dict())})
    got = read_metadata(path)
    assert got.name == "props-only" and got.conf_threshold == 0.3
    assert OnnxBackend(path).metadata.class_names == ["a", "b"]


def test_sidecar_round_trip_keeps_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"")
    data = {**_meta().to_dict(), "trained_on": "ssdd"}
    (tmp_path / "m.json").write_text(json.dumps(data))
    meta = read_metadata(path)
    assert meta.extra == {"trained_on": "ssdd"}
    assert meta.to_dict() == data
    assert (meta.out_channels, meta.out_size) == (4 * REG_MAX + NC, TILE // STRIDE)


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="nope.onnx: model file not found"):
        OnnxBackend(tmp_path / "nope.onnx")


def test_missing_metadata(tmp_path: Path) -> None:
    path = _write_model(tmp_path / "bare.onnx")
    with pytest.raises(ModelError, match="bare.onnx: no metadata sidecar bare.json"):
        OnnxBackend(path)


@pytest.mark.parametrize("bad, match", [
    ({"tile_size": None}, "tile_size"),
    ({"nc": 0}, "nc must be a positive integer"),
    ({"tile_size": 60}, "not a multiple of stride"),
    ({"class_names": ["a"]}, "class_names"),
    ({"input_scale": 0}, "input_scale must be in"),
    ({"subgrid": 3}, r"subgrid must be one of \(1, 2, 4\)"),
    ({"subgrid": 2.0}, "subgrid must be a positive integer"),
    ({"stretch": [50, 10]}, "stretch must be percentiles"),
    ({"stretch": [1]}, "bad model metadata"),
])
def test_bad_sidecar_names_the_file(tmp_path: Path, bad: dict, match: str) -> None:
    path = _write_model(tmp_path / "m.onnx")
    data = {**_meta().to_dict(), **bad}
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match=match) as info:
        OnnxBackend(path)
    assert "m.json" in str(info.value)


def test_unreadable_sidecar(tmp_path: Path) -> None:
    path = _write_model(tmp_path / "m.onnx")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ModelError, match="m.json: cannot read model metadata JSON"):
        OnnxBackend(path)


def test_channel_and_tile_mismatch_between_graph_and_metadata(tmp_path: Path) -> None:
    path = _write_model(tmp_path / "c1.onnx", channels=1)
    _meta().write_sidecar(path)  # says 2 channels
    with pytest.raises(ModelError, match="graph input shape"):
        OnnxBackend(path)
    path2 = _write_model(tmp_path / "t.onnx")
    _meta(tile_size=128).write_sidecar(path2)
    with pytest.raises(ModelError, match="graph input shape"):
        OnnxBackend(path2)
    path3 = _write_model(tmp_path / "r.onnx")
    _meta(reg_max=8).write_sidecar(path3)
    with pytest.raises(ModelError, match="graph output shape"):
        OnnxBackend(path3)
    # a one-anchor graph described as subgrid 2 lacks the packed anchors' channels
    _meta(subgrid=2).write_sidecar(path3)
    with pytest.raises(ModelError, match=r"graph output shape .*\[B, 4\*\(4\*"):
        OnnxBackend(path3)


def test_bad_batches(model_path: Path) -> None:
    backend = OnnxBackend(model_path)
    with pytest.raises(ModelError, match=r"batch shape \(2, 1, 64, 64\)"):
        backend.infer(np.zeros((2, 1, TILE, TILE), np.uint8))
    with pytest.raises(ModelError, match="must be uint8"):
        backend.infer(np.zeros((2, CHANNELS, TILE, TILE), np.float32))


def test_not_an_onnx_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"definitely not protobuf")
    _meta().write_sidecar(path)
    with pytest.raises(ModelError, match="junk.onnx: onnxruntime cannot load"):
        OnnxBackend(path)


def test_fingerprint_names_the_model_bytes_and_the_decode_settings(tmp_path: Path,
                                                                   model_path: Path) -> None:
    """A resumed scene reuses rows only from the same fingerprint; once every ONNX model
    was "onnx", so a run resumed with another model kept the first model's rows."""
    from sarvessel.runtime.backends.tta import with_tta

    fp = compose(OnnxBackend(model_path)).fingerprint
    assert fp == compose(OnnxBackend(model_path, threads=1)).fingerprint  # threads: no change
    assert fp != compose(OnnxBackend(model_path), conf_threshold=0.9).fingerprint
    net = OnnxBackend(model_path).fingerprint
    assert with_tta(OnnxBackend(model_path), 2).fingerprint == net + "+tta2"
    other = _write_model(tmp_path / "other.onnx", channels=CHANNELS)
    _meta(conf_threshold=0.6).write_sidecar(other)  # same graph, another sidecar
    assert compose(OnnxBackend(other), conf_threshold=0.5).fingerprint != compose(
        OnnxBackend(model_path), conf_threshold=0.5).fingerprint
