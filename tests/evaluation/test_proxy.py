"""The off-domain proxy (#41): the image variants are deterministic and shape-correct, the
size-band scores follow COCO's range rule, and ``sarvessel eval-proxy`` runs end to end, on
small SSDD- and OpenSARShip-shaped folders written to tmp_path and, when present, on the real
data sets with the shipped models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from sarvessel.cli import main
from sarvessel.evaluation.ap import ImageDetections, ImageTruth
from sarvessel.evaluation.datasets import LabeledImage, write_yolo_labels
from sarvessel.evaluation.proxy import (
    SSDD_VARIANTS,
    ProxyVariant,
    ap50_by_size,
    apply_variant,
    centre_recall,
    centre_recall_by_size,
    dense_crop,
    run_proxy,
)

REPO = Path(__file__).resolve().parents[2]
GREY_MODEL = REPO / "models" / "ssdd_w4a4" / "ssdd_w4a4_intfloat.onnx"
SCENE_MODEL = REPO / "src" / "sarvessel" / "runtime" / "models" / "xview3_w4a4_intfloat.onnx"
SCENE = "S1A_IW_GRDH_1SDV_20990101T000000_20990101T000025_000000_000000_TEST"


def _sea(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Speckled grey sea with a few bright ships."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.gamma(2.0, 20.0, (h, w)), 0, 255).astype(np.uint8)
    return img


BOXES = np.array([[10, 12, 30, 20], [40, 40, 44, 70], [100, 5, 150, 60]], np.float32)


@pytest.mark.parametrize("variant", [v for v in SSDD_VARIANTS if v is not ProxyVariant.DENSE])
def test_variants_are_deterministic_and_shape_correct(variant: ProxyVariant) -> None:
    grey = _sea(96, 160)
    a = apply_variant(variant, grey, BOXES, name="000011")
    b = apply_variant(variant, grey.copy(), BOXES.copy(), name="000011")
    assert a is not None and b is not None
    (ga, ba, ia), (gb, bb, _) = a, b
    assert ga.dtype == np.uint8 and ga.ndim == 2
    np.testing.assert_array_equal(ga, gb)
    np.testing.assert_array_equal(ba, bb)
    factor = {ProxyVariant.SCALE_HALF: 0.5, ProxyVariant.SCALE_DOUBLE: 2.0}.get(variant, 1.0)
    assert ga.shape == (round(96 * factor), round(160 * factor))
    np.testing.assert_allclose(ba, BOXES * factor)
    assert ia.shape == (3,) and not ia.any()
    if variant is not ProxyVariant.CLEAN:
        assert not np.array_equal(ga, grey) or factor != 1.0


def test_speckle_is_seeded_by_image_and_keeps_the_mean() -> None:
    grey = np.full((128, 128), 128, np.uint8)
    one = apply_variant("looks1", grey, BOXES, name="a")[0]
    other = apply_variant("looks1", grey, BOXES, name="b")[0]
    four = apply_variant("looks4", grey, BOXES, name="a")[0]
    assert not np.array_equal(one, other)
    # intensity keeps its mean; one look spreads it more than four
    for img in (one, four):
        assert np.mean((img / 255.0) ** 2) == pytest.approx((128 / 255) ** 2, rel=0.05)
    assert np.std(one.astype(float)) > 1.5 * np.std(four.astype(float))


def test_display_curves() -> None:
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    bright = apply_variant("gamma0.5", grey, BOXES)[0]
    dark = apply_variant("gamma2", grey, BOXES)[0]
    assert bright[0, 0] == dark[0, 0] == 0 and bright[-1, -1] == dark[-1, -1] == 255
    assert (bright >= grey).all() and (dark <= grey).all()
    stretched = apply_variant("stretch2-98", grey, BOXES)[0]
    assert stretched.min() == 0 and stretched.max() == 255
    db = apply_variant("db", grey, BOXES)[0]
    assert (np.diff(db.ravel().astype(int)) >= 0).all()  # monotone in the grey level


def test_dense_crop_takes_the_most_ships_and_ignores_cut_boxes() -> None:
    grey = _sea(300, 600)
    boxes = np.array([[400, 100, 420, 110], [430, 120, 440, 140], [450, 150, 470, 160],
                      [455, 60, 475, 95],
                      [20, 20, 40, 30]], np.float32)
    got = dense_crop(grey, boxes, np.zeros(5, bool), size=128, min_ships=3)
    assert got is not None
    crop, cb, ign = got
    assert crop.shape == (128, 128)
    assert len(cb) == 4  # the far-away ship is outside
    assert not ign.any()
    again = dense_crop(grey, boxes, np.zeros(5, bool), size=128, min_ships=3)
    np.testing.assert_array_equal(again[0], crop)
    # a box mostly outside the window (400 px long, centred among the others) is ignored
    boxes2 = np.vstack([boxes, [[200, 100, 600, 110]]]).astype(np.float32)
    _, cb2, ign2 = dense_crop(grey, boxes2, np.zeros(6, bool), size=128, min_ships=3)
    assert ign2.sum() == 1 and (cb2 >= 0).all() and (cb2 <= 128).all()
    assert dense_crop(grey, boxes[:2], np.zeros(2, bool), size=128, min_ships=3) is None


def test_ap50_by_size_follows_the_coco_range_rule() -> None:
    truth = ImageTruth(np.array([[0, 0, 10, 10], [50, 50, 90, 70]], float), np.zeros(2, int))
    # both found, and a false alarm of 40 px ranked first
    det = ImageDetections(np.array([[200, 200, 240, 240], [0, 0, 10, 10], [50, 50, 90, 70]]),
                          np.array([0.9, 0.8, 0.7]), np.zeros(3, int))
    aps = ap50_by_size([det], [truth])
    assert aps["<16"] == pytest.approx(1.0)  # the 40 px false alarm is outside this band
    assert aps["32-64"] < 1.0  # ... and inside this one
    assert np.isnan(aps["16-32"]) and np.isnan(aps[">=64"])


def test_centre_recall() -> None:
    truth = ImageTruth(np.array([[20, 20, 60, 30]], float), np.zeros(1, int))
    near = ImageDetections(np.array([[30, 30, 50, 40]]), np.array([0.5]), np.array([1]))
    assert centre_recall([near], [truth], conf_threshold=0.4) == 1.0
    assert centre_recall([near], [truth], conf_threshold=0.6) == 0.0
    assert centre_recall([near], [truth], conf_threshold=0.4, classes=[2]) == 0.0
    far = ImageDetections(np.array([[70, 70, 90, 80]]), np.array([0.9]), np.array([1]))
    assert centre_recall([far], [truth], conf_threshold=0.4) == 0.0
    small = ImageTruth(np.array([[20, 20, 60, 30], [100, 100, 108, 104]], float),
                       np.zeros(2, int))
    bands = centre_recall_by_size([near], [small], conf_threshold=0.4)
    assert bands["<16"] == {"n": 1, "recall": 0.0} and bands["32-64"] == {"n": 1, "recall": 1.0}
    assert bands["16-32"]["n"] == 0


def _write_voc(root: Path, n: int = 4) -> Path:
    """An SSDD-shaped folder: ``n`` speckled images with bright ships, split test (all) and
    test_inshore (all)."""
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True)
    ids = []
    for k in range(n):
        img = _sea(200, 240, seed=k)
        objs = []
        for j, (x, y, w, h) in enumerate([(30, 40, 12, 6), (60, 50, 30, 10), (100, 60, 8, 8),
                                          (150, 120, 50, 14)]):
            x += 7 * k + j
            img[y:y + h, x:x + w] = 250
            objs.append(f"<object><name>ship</name><difficult>0</difficult><bndbox><xmin>{x}"
                        f"</xmin><ymin>{y}</ymin><xmax>{x + w}</xmax><ymax>{y + h}</ymax>"
                        "</bndbox></object>")
        sid = f"{k + 1:06d}"
        ids.append(sid)
        Image.fromarray(img).convert("RGB").save(root / "JPEGImages" / f"{sid}.jpg")
        (root / "Annotations" / f"{sid}.xml").write_text(
            f"<annotation><filename>{sid}.jpg</filename><size><width>240</width><height>200"
            f"</height><depth>3</depth></size>{''.join(objs)}</annotation>")
    for split in ("test", "test_inshore"):
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def _write_opensarship(root: Path, n: int = 4) -> Path:
    """An OpenSARShip-shaped folder: ``n`` dual-pol GRD chips (Patch_Cal, band 0 VH, band 1
    VV, linear sigma0) with a bright ship at the centre, and their yolo_uint8 images/labels."""
    cal = root / "scenes" / SCENE / "Patch_Cal"
    cal.mkdir(parents=True)
    (root / "yolo_uint8" / "images").mkdir(parents=True)
    (root / "yolo_uint8" / "labels").mkdir()
    rng = np.random.default_rng(1)
    for k in range(n):
        s = 40 + 8 * k
        vv = rng.gamma(4.4, 0.02 / 4.4, (s, s)).astype(np.float32)
        vh = vv / 8
        c = s // 2
        vv[c - 2:c + 2, c - 6:c + 6] = 2.0
        vh[c - 2:c + 2, c - 6:c + 6] = 0.3
        stem = f"Cargo_x{100 + k}_y{200 + k}"
        tifffile.imwrite(cal / f"{stem}.tif", np.stack([vh, vv], -1))
        box = np.array([[c - 7, c - 3, c + 7, c + 3]], np.float32)
        for pol, band in (("vv", vv), ("vh", vh)):
            u8 = np.clip(20 * np.log10(band / band.min()), 0, 255).astype(np.uint8)
            path = root / "yolo_uint8" / "images" / f"{SCENE}_{stem}_{pol}.png"
            Image.fromarray(u8).save(path)
            write_yolo_labels(root / "yolo_uint8" / "labels" / f"{SCENE}_{stem}_{pol}.txt",
                              LabeledImage(path, s, s, box, np.zeros(1, np.int64)))
    return root


def test_eval_proxy_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ssdd = _write_voc(tmp_path / "ssdd")
    osd = _write_opensarship(tmp_path / "osd")
    out = tmp_path / "proxy.json"
    assert main(["eval-proxy", str(GREY_MODEL), "--ssdd", str(ssdd), "--opensarship",
                 str(osd), "--limit", "4", "--threads", "1", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert set(rep["variants"]) == {v.value for v in (*SSDD_VARIANTS, ProxyVariant.OPENSARSHIP)}
    assert rep["variants"]["clean"]["images"] == 4 and rep["variants"]["clean"]["objects"] == 16
    assert rep["variants"]["opensarship"]["weak"] is True
    assert "centre_recall" in rep["variants"]["opensarship"]
    assert set(rep["variants"]["opensarship"]["centre_by_size"]) == {"<16", "16-32", "32-64",
                                                                      ">=64"}
    assert set(rep["variants"]["scale0.5"]["by_size"]) == {"<16", "16-32", "32-64", ">=64"}
    assert rep["skipped"] == {}
    assert "| scale2 |" in capsys.readouterr().out
    # the scene model takes the dual-pol chips, and only them
    scene = run_proxy(SCENE_MODEL, opensarship=osd, threads=1)
    res = scene.results["opensarship_dualpol"]
    assert res.images == 4 and res.objects == 4 and res.centre_recall_vessel is not None


def test_absent_data_is_skipped_with_the_reason(tmp_path: Path) -> None:
    rep = run_proxy(GREY_MODEL, variants=["clean", "opensarship"], ssdd=tmp_path / "none",
                    opensarship=tmp_path / "none")
    assert not rep.results
    assert "not found" in rep.skipped["clean"] and "not found" in rep.skipped["opensarship"]


def test_real_data_four_images(ssdd_dir: Path, opensarship_dir: Path) -> None:
    rep = run_proxy(GREY_MODEL, variants=["clean", "scale0.5", "dense", "opensarship"],
                    ssdd=ssdd_dir, opensarship=opensarship_dir, limit=4, threads=1)
    assert set(rep.results) == {"clean", "scale0.5", "dense", "opensarship"}
    assert all(r.images == 4 for r in rep.results.values())
    scene = run_proxy(SCENE_MODEL, opensarship=opensarship_dir, limit=4, threads=1)
    assert scene.results["opensarship_dualpol"].images == 4
