"""Writers: submission CSV and GeoJSON round trips, atomic writes, the quicklook PNG."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sarvessel.runtime.detections import Detections
from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.io import outputs
from sarvessel.runtime.io.outputs import (
    SINGLE_CLASS_VESSEL_CLASSES,
    SUBMISSION_COLUMNS,
    quicklook_zoom,
    write_geojson,
    write_json,
    write_quicklook_png,
    write_submission_csv,
    write_submissions_csv,
)


def _dets() -> Detections:
    return Detections(
        rows=[10.4, 2000.6, 35.5],
        cols=[7.2, 15.5, 3000.49],
        scores=[0.91, 0.5, 0.123456789],
        classes=[0, 1, 2],
        boxes=[[2, 0, 18, 16], [1990, 5, 2010, 25], [25, 2990, 45, 3010]],
        lengths_px=[3.0, np.nan, 12.34],
    )


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == SUBMISSION_COLUMNS
        return list(reader)


def test_submission_csv_round_trip(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "sub" / "preds.csv"
    with caplog.at_level(logging.WARNING):
        write_submission_csv(path, "abc123v", _dets(), pixel_size_m=10.0)
    assert "no length" in caplog.text
    rows = _read_csv(path)
    assert [r["scene_id"] for r in rows] == ["abc123v"] * 3
    assert [int(r["detect_scene_row"]) for r in rows] == [10, 2001, 36]  # round half even
    assert [r["detect_scene_column"] for r in rows] == ["7", "16", "3000"]
    assert [r["is_vessel"] for r in rows] == ["False", "True", "True"]
    assert [r["is_fishing"] for r in rows] == ["False", "False", "True"]
    assert [r["vessel_length_m"] for r in rows] == ["30", "", "123.4"]
    assert [float(r["score"]) for r in rows] == pytest.approx([0.91, 0.5, 0.123457], abs=1e-6)
    assert not list(tmp_path.glob("sub/.*tmp"))  # no temporary left behind


def test_submission_csv_single_class_and_fill(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    d = _dets()
    d.classes[:] = 0
    write_submission_csv(path, "s1", d, vessel_classes=SINGLE_CLASS_VESSEL_CLASSES,
                         fishing_classes=(), missing_length_m=50.0, pixel_size_m=5.0)
    rows = _read_csv(path)
    assert [r["is_vessel"] for r in rows] == ["True"] * 3
    assert [r["is_fishing"] for r in rows] == ["False"] * 3
    assert [r["vessel_length_m"] for r in rows] == ["15", "50", "61.7"]


def test_submissions_csv_several_scenes_and_empty(tmp_path: Path) -> None:
    path = tmp_path / "all.csv"
    write_submissions_csv(path, {"a": _dets(), "b": Detections(), "c": _dets().select([0])})
    rows = _read_csv(path)
    assert [r["scene_id"] for r in rows] == ["a", "a", "a", "c"]
    write_submission_csv(path, "empty", Detections())
    assert path.read_text() == ",".join(SUBMISSION_COLUMNS) + "\n"
    with pytest.raises(ValueError, match="scene_id"):
        write_submission_csv(path, "", _dets())


def test_atomic_write_keeps_old_file_on_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    path = tmp_path / "p.csv"
    write_submission_csv(path, "old", _dets())
    before = path.read_bytes()

    def boom(*args: object, **kwargs: object) -> str:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(outputs, "_num", boom)  # fails mid-way through the rows
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_submission_csv(path, "new", _dets())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]


def test_geojson_round_trip_georeferenced(tmp_path: Path) -> None:
    def to_lonlat(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return 10.0 + cols * 1e-4, 50.0 - rows * 1e-4

    path = tmp_path / "d.geojson"
    write_geojson(path, "s9", _dets(), to_lonlat=to_lonlat, pixel_size_m=10.0)
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection" and doc["coordinate_system"] == "EPSG:4326"
    assert set(doc) == {"type", "name", "coordinate_system", "note", "features"}
    feats = doc["features"]
    assert len(feats) == 3
    assert all(f["geometry"]["type"] == "Point" for f in feats)
    lon, lat = feats[1]["geometry"]["coordinates"]
    assert lon == pytest.approx(10.0 + 15.5e-4) and lat == pytest.approx(50.0 - 2000.6e-4)
    props = [f["properties"] for f in feats]
    assert [p["class_name"] for p in props] == ["non_vessel", "vessel", "fishing"]
    assert [p["is_vessel"] for p in props] == [False, True, True]
    assert [p["is_fishing"] for p in props] == [False, False, True]
    assert [p["length_m"] for p in props] == [30.0, None, 123.4]
    assert props[2]["row"] == 35.5 and props[2]["col"] == pytest.approx(3000.49)
    assert props[0]["score"] == pytest.approx(0.91) and props[0]["scene_id"] == "s9"
    assert "NaN" not in path.read_text()


def test_geojson_without_georef_is_refused_not_written_in_pixels(tmp_path: Path) -> None:
    """It once held pixel positions as if they were lon/lat (issue #34, 7)."""
    path = tmp_path / "d.geojson"
    with pytest.raises(SarvesselError, match="no georeferencing"):
        write_geojson(path, "s9", _dets(), to_lonlat=None)
    assert not path.exists()


def test_write_json_writes_null_for_nan_and_is_strict_json(tmp_path: Path) -> None:
    path = write_json(tmp_path / "s.json", {"a": float("nan"), "b": [np.float32(1.5), -np.inf],
                                            "c": (1, 2)})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {
        "a": None, "b": [1.5, None], "c": [1, 2]}


@pytest.mark.parametrize(
    ("shape", "dtype", "expect"),
    [((300, 500), np.uint8, (768, 461)),  # enlarged to 768 on the long side
     ((3000, 1000), np.float32, (683, 2048)),  # shrunk to max_side
     ((900, 1200), np.uint8, (1200, 900))],  # kept
)
def test_quicklook_png_size_and_content(tmp_path: Path, shape: tuple[int, int], dtype: type,
                                        expect: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    if dtype == np.uint8:
        thumb = rng.integers(90, 130, shape).astype(np.uint8)
        thumb[:, :20] = 0
    else:
        thumb = rng.normal(-20, 3, shape).astype(np.float32)
        thumb[:50] = np.nan
    scale = 8.0
    h, w = shape
    dets = Detections(rows=[h * scale / 2], cols=[w * scale / 2], scores=[0.9], classes=[2],
                      boxes=[[h * scale / 2 - 8, w * scale / 2 - 8, h * scale / 2 + 8,
                              w * scale / 2 + 8]], lengths_px=[5.0])
    labels = (np.array([h * scale / 2, 10.0]), np.array([w * scale / 2, 10.0]),
              np.array([1.0, np.nan]))
    path = tmp_path / "q.png"
    write_quicklook_png(path, thumb, scale=scale, detections=dets, labels=labels, title="t")
    img = Image.open(path)
    assert img.format == "PNG" and img.mode == "RGB"
    assert img.size == expect
    arr = np.asarray(img).astype(int)
    f = quicklook_zoom(h, w)
    # The fishing detection at the centre is drawn in orange, the truth square in green.
    cy, cx = round(h * f / 2), round(w * f / 2)
    patch = arr[max(cy - 40, 0):cy + 40, max(cx - 40, 0):cx + 40]
    orange = (patch[..., 0] > 200) & (np.abs(patch[..., 1] - 140) < 50) & (patch[..., 2] < 80)
    green = (patch[..., 1] > 200) & (patch[..., 0] < 120) & (patch[..., 2] < 120)
    assert orange.sum() > 10 and green.sum() > 10
    # The scene is grey (R = G = B) away from markers and text.
    far = arr[expect[1] // 2 - 5: expect[1] // 2 + 5, expect[0] - 30:expect[0] - 20]
    assert (far[..., 0] == far[..., 1]).all() and far[..., 0].std() > 1


def test_quicklook_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2-D"):
        write_quicklook_png(tmp_path / "q.png", np.zeros((2, 3, 4)), scale=1.0,
                            detections=Detections())
    with pytest.raises(ValueError, match="scale"):
        write_quicklook_png(tmp_path / "q.png", np.zeros((20, 30)), scale=0.0,
                            detections=Detections())
    # An empty thumbnail still gives a readable (blank) picture.
    write_quicklook_png(tmp_path / "e.png", np.zeros((0, 0), np.uint8), scale=1.0,
                        detections=Detections())
    assert Image.open(tmp_path / "e.png").size == (768, 768)


@pytest.mark.parametrize("shape", [(4, 2048), (2048, 3), (1, 1)])
def test_quicklook_of_a_long_thin_scene_has_room_for_its_legend(tmp_path: Path,
                                                                shape: tuple[int, int]) -> None:
    """A 64 x 40000 px scene once crashed the legend box (its thumbnail is 4 px tall)."""
    thumb = np.full(shape, 100, np.uint8)
    dets = Detections(rows=[2.0], cols=[2.0], scores=[0.9], classes=[1], boxes=[[0, 0, 4, 4]],
                      lengths_px=[3.0])
    path = write_quicklook_png(tmp_path / "q.png", thumb, scale=20.0, detections=dets)
    img = Image.open(path)
    assert min(img.size) >= 320 and max(img.size) <= 2048 + 320
    arr = np.asarray(img).astype(int)
    # the legend (white text on a dark box) is drawn in the bottom-left corner
    corner = arr[-120:, :200]
    assert (corner.min(axis=-1) > 200).sum() > 50
    # the scene (grey 100, stretched) is not under the title or the legend: a wide strip is
    # drawn below the title bar, a tall one right of the legend column
    grey = (arr[..., 0] == arr[..., 1]) & (arr[..., 1] == arr[..., 2]) & (arr[..., 0] > 0)
    level = np.bincount(arr[..., 0][grey]).argmax()  # the scene's stretched grey
    scene = grey & (arr[..., 0] == level)
    if shape[0] < shape[1]:  # the rows the strip fills
        rows = np.flatnonzero(scene.mean(axis=1) > 0.5)
        assert len(rows) and rows.min() > 30
    elif shape[0] > shape[1]:  # the columns it fills
        cols = np.flatnonzero(scene.mean(axis=0) > 0.5)
        assert len(cols) and cols.min() >= 320
