"""Synthetic xView3 scenes: layout, georeference, labels, physics, determinism, memory."""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy.spatial import cKDTree

from sarvessel.runtime.errors import LabelsError, SarvesselError
from sarvessel.runtime.io.geotiff import TAG_GDAL_NODATA, read_georef
from sarvessel.synth.generate import LABEL_COLUMNS, register_cli, synthesize_scene

H, W = 1400, 1200
NODATA = -32768.0


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return synthesize_scene(root, height=H, width=W, seed=5, n_vessels=40)


def _labels(path: Path, scene_id: str | None = None) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r for r in rows if scene_id is None or r["scene_id"] == scene_id]


def _read(path: Path):
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        return page.asarray(), read_georef(page), page


def _mask_full(scene) -> np.ndarray:
    mask, _, _ = _read(scene.scene_dir / "owiMask.tif")
    return np.kron(mask, np.ones((50, 50), np.uint8))[: scene.height, : scene.width]


def test_layout_shapes_dtypes_nodata_and_georef(scene):
    assert scene.scene_id == "synth00051400x1200v" and scene.scene_id[-1].isalpha()
    vv, geo, page = _read(scene.scene_dir / "VV_dB.tif")
    vh, geo_vh, _ = _read(scene.scene_dir / "VH_dB.tif")
    assert vv.shape == vh.shape == (H, W) and vv.dtype == vh.dtype == np.float32
    assert page.is_tiled and page.tags[TAG_GDAL_NODATA].value == "-32768"
    assert geo == geo_vh == scene.georef
    assert geo.pixel_size_m == pytest.approx(10.0, rel=0.01)
    assert abs(geo.lat_per_row) == pytest.approx(0.0000898, rel=0.01)
    nd = vv == NODATA
    assert np.array_equal(nd, vh == NODATA)
    assert 0.02 < nd.mean() < 0.4  # slanted swath edges, like real GRD frames
    assert nd[0, 0] or nd[0, -1]  # a corner wedge ...
    assert not nd[H // 2, W // 2]  # ... and data in the middle
    edge = np.argmax(~nd, axis=1)[H // 4 : 3 * H // 4]
    assert np.ptp(edge) > 20  # the left swath edge is slanted, not vertical
    valid = vv[~nd]
    assert np.isfinite(valid).all() and valid.min() > -45 and valid.max() < 45
    for name, dtype in (("bathymetry.tif", np.float32), ("owiMask.tif", np.uint8),
                        ("owiWindSpeed.tif", np.float32), ("owiWindDirection.tif", np.float32)):
        arr, ageo, _ = _read(scene.scene_dir / name)
        assert arr.shape == (math.ceil(H / 50), math.ceil(W / 50)) and arr.dtype == dtype
        assert ageo.pixel_size_m == pytest.approx(500.0, rel=0.01)
        assert (ageo.lon0, ageo.lat0) == pytest.approx((geo.lon0, geo.lat0))
    mask = _read(scene.scene_dir / "owiMask.tif")[0]
    bathy = _read(scene.scene_dir / "bathymetry.tif")[0]
    wind = _read(scene.scene_dir / "owiWindSpeed.tif")[0]
    assert set(np.unique(mask)) == {0, 1}
    assert (bathy[mask == 0] < 0).all() and (bathy[mask == 1] > 0).all()
    assert wind.min() > 0.5 and wind.max() < 30


def test_labels_columns_and_values(scene):
    with scene.labels_csv.open() as fh:
        assert next(csv.reader(fh)) == list(LABEL_COLUMNS)
    rows = _labels(scene.labels_csv, scene.scene_id)
    assert len(rows) == scene.n_labels == 40
    vv, geo, _ = _read(scene.scene_dir / "VV_dB.tif")
    r = np.array([int(x["detect_scene_row"]) for x in rows])
    c = np.array([int(x["detect_scene_column"]) for x in rows])
    lon, lat = geo.pixel_to_lonlat(r, c)
    np.testing.assert_allclose([float(x["detect_lon"]) for x in rows], lon, atol=1e-6)
    np.testing.assert_allclose([float(x["detect_lat"]) for x in rows], lat, atol=1e-6)
    assert len({x["detect_id"] for x in rows}) == len(rows)
    assert (vv[r, c] != NODATA).all()
    for x, ri, ci in zip(rows, r, c, strict=True):
        top, left, bottom, right = (int(x[k]) for k in ("top", "left", "bottom", "right"))
        assert top <= ri <= bottom and left <= ci <= right
        assert bottom - top >= 16 and right - left >= 16
        assert x["is_vessel"] in ("True", "False")
        assert x["is_fishing"] in ("True", "False", "")
        assert x["confidence"] in ("HIGH", "MEDIUM", "LOW")
        assert float(x["distance_from_shore_km"]) >= 0
        if x["is_vessel"] == "False":
            assert x["is_fishing"] == "" and x["vessel_length_m"] == ""
        elif x["vessel_length_m"]:
            length = float(x["vessel_length_m"])
            assert 12 <= length <= (70 if x["is_fishing"] == "True" else 400)
    n_non = sum(x["is_vessel"] == "False" for x in rows)
    n_fish = sum(x["is_fishing"] == "True" for x in rows)
    assert n_non == 6  # 15 % of 40
    assert 8 <= n_fish <= 14  # ~40 % of 34 vessels, some unknown
    assert {x["confidence"] for x in rows} >= {"HIGH", "MEDIUM"}


def test_targets_are_brighter_than_clutter(scene):
    vv, _, _ = _read(scene.scene_dir / "VV_dB.tif")
    contrast = {}
    for x in _labels(scene.labels_csv, scene.scene_id):
        r, c = int(x["detect_scene_row"]), int(x["detect_scene_column"])
        peak = vv[r - 2 : r + 3, c - 2 : c + 3].max()
        ring = vv[max(0, r - 60) : r + 60, max(0, c - 60) : c + 60]
        bg = np.median(ring[ring != NODATA])
        contrast.setdefault(x["confidence"], []).append(peak - bg)
    strong = contrast["HIGH"] + contrast.get("MEDIUM", [])
    assert min(strong) > 8.0
    assert np.median(contrast["HIGH"]) > 18.0
    if "LOW" in contrast:  # faint ones are labelled LOW
        assert np.median(contrast["LOW"]) < np.median(contrast["HIGH"])


def test_vh_is_6_to_10_db_below_vv_over_sea(scene):
    vv, _, _ = _read(scene.scene_dir / "VV_dB.tif")
    vh, _, _ = _read(scene.scene_dir / "VH_dB.tif")
    sea = (_mask_full(scene) == 0) & (vv != NODATA)
    diff = float(np.mean(vv[sea]) - np.mean(vh[sea]))
    assert 6.0 <= diff <= 10.0
    land = (_mask_full(scene) == 1) & (vv != NODATA)
    assert np.median(vv[land]) > np.median(vv[sea]) + 3  # land is bright


def test_shoreline_matches_owi_mask_and_distances(scene):
    contours = np.load(scene.shoreline_path, allow_pickle=True)
    assert contours.dtype == object and len(contours) >= 1
    pts = np.vstack(contours)  # what the official xView3 metric does
    assert pts.shape[1] == 2 and pts.dtype == np.float64
    mask = _read(scene.scene_dir / "owiMask.tif")[0]
    cells = np.clip((pts // 50).astype(int), 0, np.array(mask.shape) - 1)
    near_both = []
    for r, c in cells[:: max(1, len(cells) // 300)]:
        win = mask[max(0, r - 1) : r + 2, max(0, c - 1) : c + 2]
        near_both.append(win.min() == 0 and win.max() == 1)
    assert np.mean(near_both) > 0.9
    # the VV raster is bright on one side of the shoreline and sea-like on the other
    vv, _, _ = _read(scene.scene_dir / "VV_dB.tif")
    rows = _labels(scene.labels_csv, scene.scene_id)
    rc = np.array([[int(x["detect_scene_row"]), int(x["detect_scene_column"])] for x in rows])
    d, _ = cKDTree(pts).query(rc)
    np.testing.assert_allclose([float(x["distance_from_shore_km"]) for x in rows],
                               d * 10 / 1000, atol=2e-3)
    assert (d > 3).all()  # no object on the coastline
    assert (_mask_full(scene)[rc[:, 0], rc[:, 1]] == 0).mean() > 0.8  # and (almost) none on land


def test_same_seed_same_bytes_any_block_size(tmp_path):
    a = synthesize_scene(tmp_path / "a", height=300, width=280, seed=11, n_vessels=6, block_rows=64)
    b = synthesize_scene(tmp_path / "b", height=300, width=280, seed=11, n_vessels=6, block_rows=37)
    c = synthesize_scene(tmp_path / "c", height=300, width=280, seed=12, n_vessels=6)
    for name in ("VV_dB.tif", "VH_dB.tif", "bathymetry.tif", "owiMask.tif", "owiWindSpeed.tif"):
        assert (a.scene_dir / name).read_bytes() == (b.scene_dir / name).read_bytes(), name
    assert a.labels_csv.read_bytes() == b.labels_csv.read_bytes()
    assert a.shoreline_path.read_bytes() == b.shoreline_path.read_bytes()
    assert (a.scene_dir / "VV_dB.tif").read_bytes() != (c.scene_dir / "VV_dB.tif").read_bytes()


def test_strips_hold_the_same_pixels(tmp_path):
    t = synthesize_scene(tmp_path / "t", height=600, width=530, seed=3, n_vessels=5)
    s = synthesize_scene(tmp_path / "s", height=600, width=530, seed=3, n_vessels=5, tiled=False)
    vt, _, pt = _read(t.scene_dir / "VV_dB.tif")
    vs, _, ps = _read(s.scene_dir / "VV_dB.tif")
    assert pt.is_tiled and not ps.is_tiled
    assert np.array_equal(vt, vs)


def test_labels_csv_scenes_are_appended_and_replaced(tmp_path):
    kw = {"height": 256, "width": 256, "land": False}
    a = synthesize_scene(tmp_path, scene_id="aaav", seed=1, n_vessels=4, **kw)
    b = synthesize_scene(tmp_path, scene_id="bbbv", seed=2, n_vessels=5, **kw)
    assert a.labels_csv == b.labels_csv
    assert len(_labels(a.labels_csv, "aaav")) == 4 and len(_labels(a.labels_csv, "bbbv")) == 5
    synthesize_scene(tmp_path, scene_id="aaav", seed=1, n_vessels=2, **kw)
    rows = _labels(a.labels_csv)
    assert [r["scene_id"] for r in rows] == ["bbbv"] * 5 + ["aaav"] * 2
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "labels.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(LabelsError, match="labels.csv.*scene_id"):
        synthesize_scene(bad, height=128, width=128, seed=1, n_vessels=1)


def test_open_sea_scene(tmp_path):
    s = synthesize_scene(tmp_path, height=512, width=640, seed=4, n_vessels=8, land=False)
    assert (_read(s.scene_dir / "owiMask.tif")[0] == 0).all()
    contours = np.load(s.shoreline_path, allow_pickle=True)
    assert contours.dtype == object and len(contours) == 0
    rows = _labels(s.labels_csv, s.scene_id)
    assert len(rows) == 8
    assert all(float(r["distance_from_shore_km"]) >= 20 for r in rows)


def test_bad_arguments_raise_sarvessel_errors(tmp_path):
    with pytest.raises(SarvesselError, match="height"):
        synthesize_scene(tmp_path, height=10, width=100)
    with pytest.raises(SarvesselError, match="scene id"):
        synthesize_scene(tmp_path, scene_id="../x", height=100, width=100)


def test_cli(tmp_path):
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["synth", str(tmp_path), "--size", "256x320", "--seed", "9",
                              "--vessels", "3", "--strips", "--no-land"])
    assert args.func(args) == 0
    sid = "synth0009256x320v"
    vv, _, page = _read(tmp_path / sid / "VV_dB.tif")
    assert vv.shape == (256, 320) and not page.is_tiled
    assert len(_labels(tmp_path / "labels.csv", sid)) == 3
    bad = parser.parse_args(["synth", str(tmp_path), "--size", "256by320"])
    with pytest.raises(SarvesselError, match="--size"):
        bad.func(bad)


@pytest.mark.slow
def test_8000_squared_scene_stays_under_500_mb(tmp_path):
    code = textwrap.dedent(f"""
        import json, resource
        from sarvessel.synth.generate import synthesize_scene
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        synthesize_scene({str(tmp_path)!r}, height=8000, width=8000, seed=1)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"before_kb": before, "after_kb": after}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=600)
    rss = json.loads(out.stdout.strip().splitlines()[-1])
    assert (rss["after_kb"] - rss["before_kb"]) / 1024 < 500
    vv = tifffile.TiffFile(next(tmp_path.glob("*/VV_dB.tif")))
    assert vv.pages[0].shape == (8000, 8000)


def test_moving_ships_shift_in_azimuth_and_ghosts_are_unlabelled():
    from sarvessel.synth import fields as sf
    from sarvessel.synth import objects as so

    geom = sf.SwathGeometry(height=4000, width=3000, theta=math.radians(10), half_u=2100,
                            half_v=1400, near_sign=1.0)
    rng = np.random.default_rng(3)
    fields = sf.make_fields(geom, rng, land=False, land_fraction=0.0)
    objs = so.plan_objects(geom, fields.land, fields.sea_db[0], so.ShoreIndex(np.zeros((0, 2))),
                           rng, 60)
    az = np.array(geom.az_hat)
    moving = [o for o in objs if o.is_vessel and o.speed_mps > 3]
    assert moving
    shifts = np.array([[o.row - o.true_row, o.col - o.true_col] for o in moving])
    along = shifts @ az
    across = shifts @ np.array(geom.rg_hat)
    np.testing.assert_allclose(across, 0, atol=1e-6)  # displaced along azimuth only
    assert np.abs(along).max() > 10  # tens of pixels at ~10 kn
    ghosts = [o for o in objs if o.kind is so.ObjectKind.GHOST]
    assert ghosts and not any(g.labelled for g in ghosts)
    sources = np.array([[o.row, o.col] for o in objs if o.labelled])
    for g in ghosts:
        d = np.array([g.row, g.col]) - sources
        same_range = np.abs(d @ np.array(geom.rg_hat)) < 1e-6
        assert same_range.any()  # a copy of a real target, displaced in azimuth only ...
        assert 400 < np.abs(d[same_range] @ az).min() < 650  # ... by ~500 px
    # every labelled object is rendered brighter than its ghost
    assert max(g.peak_db for g in ghosts) < max(o.peak_db for o in objs if o.labelled) - 15
