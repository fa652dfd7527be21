"""Tests of ``sarvessel eval``: a hand-built ONNX detector (a bright 8x8 cell gives a 32x32 box
centred on it) over YOLO and VOC folders written to tmp_path, images smaller and larger than the
tile, the CLI, and SSDD's split loading when the data is present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sarvessel.cli import main
from sarvessel.evaluation.datasets import DatasetError, LabeledImage, write_yolo_labels
from sarvessel.evaluation.evaluate import detect_image, evaluate, load_dataset
from sarvessel.runtime.backends.onnx import OnnxBackend
from sarvessel.runtime.contract import ModelMetadata
from sarvessel.runtime.detector import compose
from sarvessel.runtime.errors import SarvesselError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

TILE, STRIDE, REG_MAX = 64, 8, 4


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 channel, 1 class: logit 0.1*mean(cell) - 10; every box reaches 2 strides each side."""
    nout = 4 * REG_MAX + 1
    w = np.zeros((nout, 1, 1, 1), np.float32)
    b = np.zeros(nout, np.float32)
    dfl = np.full(REG_MAX, -20.0, np.float32)
    dfl[2] = 20.0
    b[:4 * REG_MAX] = np.tile(dfl, 4)
    w[4 * REG_MAX, 0], b[4 * REG_MAX] = 0.1, -10.0
    out = TILE // STRIDE
    graph = helper.make_graph(
        [helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[STRIDE] * 2,
                          strides=[STRIDE] * 2),
         helper.make_node("Conv", ["p", "w", "b"], ["y"])],
        "toy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, TILE, TILE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", nout, out, out])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("model") / "toy.onnx"
    onnx.save(model, str(path))
    ModelMetadata(name="toy", tile_size=TILE, channels=1, stride=STRIDE, reg_max=REG_MAX, nc=1,
                  bands=["grey"], class_names=["ship"], conf_threshold=0.5,
                  iou_threshold=0.5).write_sidecar(path)
    return path


def _image(h: int, w: int, cells: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """A dark image with bright 8x8 squares at pixel corners ``cells`` (multiples of 8), and the
    boxes the toy model predicts for them (x1, y1, x2, y2)."""
    img = np.full((h, w), 10, np.uint8)
    boxes = []
    for r, c in cells:
        img[r:r + 8, c:c + 8] = 255
        cy, cx = r + 4, c + 4
        boxes.append([cx - 16, cy - 16, cx + 16, cy + 16])
    return img, np.array(boxes, np.float32).reshape(-1, 4)


def _yolo_folder(root: Path, images: list[tuple[np.ndarray, np.ndarray]]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for k, (img, boxes) in enumerate(images):
        path = root / "images" / f"im{k}.png"
        Image.fromarray(img).save(path)
        h, w = img.shape
        write_yolo_labels(root / "labels" / f"im{k}.txt",
                          LabeledImage(path, w, h, np.clip(boxes, 0, [w, h, w, h]),
                                       np.zeros(len(boxes), np.int64)))
    return root


def test_perfect_detector_on_small_and_large_images(model_path: Path, tmp_path: Path) -> None:
    images = [
        _image(48, 60, [(16, 24)]),                  # smaller than the tile: padded
        _image(104, 152, [(40, 40), (80, 128)]),     # tiled 2 x 3, one object in an overlap
        _image(64, 64, []),                          # nothing at all
    ]
    folder = _yolo_folder(tmp_path / "yolo", images)
    res = evaluate(model_path, folder, overlap=16)
    r = res.report
    assert res.images == 3 and res.tiles == 1 + 6 + 1
    assert r.n_gt == 3 and (r.tp, r.fp, r.fn) == (3, 0, 0)
    assert r.ap50 == pytest.approx(1.0) and r.ap50_95 == pytest.approx(1.0)
    # the toy model sees every orientation alike: 8 averaged views give the same boxes
    tta = evaluate(model_path, folder, overlap=16, tta=8)
    assert tta.backend == "onnx+tta8" and (tta.report.tp, tta.report.fp) == (3, 0)
    assert tta.report.ap50_95 == pytest.approx(1.0)


def test_detect_image_shifts_merges_and_clips(model_path: Path) -> None:
    backend = compose(OnnxBackend(model_path))
    # tile starts: rows 0, 40; cols 0, 48, 88 (multiples of the stride, so cells stay aligned)
    img, boxes = _image(104, 152, [(40, 40), (96, 144)])
    dets, tiles = detect_image(backend, img, overlap=16)
    assert tiles == 6 and len(dets) == 2  # (40, 40) lies in 2 tiles: merged to one
    got = dets.boxes[np.argsort(dets.rows)]
    np.testing.assert_allclose(got[0], [28, 28, 60, 60], atol=1e-3)  # top, left, bottom, right
    np.testing.assert_allclose(got[1], [84, 132, 104, 152], atol=1e-3)  # clipped to the image


def test_input_scale_resamples_images_and_scales_boxes_back(model_path: Path,
                                                            tmp_path: Path) -> None:
    # 4x4 squares are too faint for the toy model's 8x8 cells; resampled x2 they fill a cell,
    # and the 32 px box it predicts there is a 16 px box in the image
    img = np.full((64, 64), 10, np.uint8)
    img[8:12, 8:12] = img[20:24, 40:44] = 255
    labels = np.array([[2, 2, 18, 18], [34, 14, 50, 30]], np.float32)
    folder = _yolo_folder(tmp_path / "y", [(img, labels)])
    native = evaluate(model_path, folder, overlap=16)
    assert native.report.tp == 0 and native.tiles == 1
    res = evaluate(model_path, folder, input_scale=2.0, overlap=16)
    assert (res.report.tp, res.report.fp) == (2, 0) and res.tiles == 9  # 128 px: 3 x 3 tiles
    assert res.report.ap50_95 > 0.6
    # the sidecar's input_scale is the default
    scaled = tmp_path / "scaled.onnx"
    scaled.write_bytes(model_path.read_bytes())
    meta = json.loads(model_path.with_suffix(".json").read_text())
    (tmp_path / "scaled.json").write_text(json.dumps({**meta, "input_scale": 2.0}))
    assert evaluate(scaled, folder, overlap=16).report.tp == 2
    assert OnnxBackend(scaled).metadata.input_scale == 2.0
    with pytest.raises(SarvesselError, match="input.scale must be in"):
        evaluate(model_path, folder, input_scale=0.0)
    assert main(["eval", str(model_path), "--data", str(folder), "--input-scale", "0"]) == 2


def test_false_positive_and_miss_are_counted(model_path: Path, tmp_path: Path) -> None:
    img, boxes = _image(64, 64, [(8, 8), (40, 40)])
    labels = np.array([boxes[0], [0, 40, 10, 50]], np.float32)  # second GT never detected
    folder = _yolo_folder(tmp_path / "y", [(img, labels)])
    r = evaluate(model_path, folder).report
    assert (r.tp, r.fp, r.fn) == (1, 1, 1)
    assert r.precision == 0.5 and r.recall == 0.5


def test_iou_threshold_overrides_the_model_nms(model_path: Path, tmp_path: Path) -> None:
    # two ships one cell apart diagonally: their 32 px boxes overlap with IoU 576/1472 = 0.39
    folder = _yolo_folder(tmp_path / "y", [_image(64, 64, [(16, 16), (24, 24)])])
    assert evaluate(model_path, folder).report.tp == 2  # the model's NMS IoU is 0.5
    r = evaluate(model_path, folder, iou_threshold=0.3).report
    assert (r.tp, r.fn) == (1, 1)


def test_voc_folder_with_split_and_cli(model_path: Path, tmp_path: Path) -> None:
    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for k, cells in enumerate([[(16, 16)], [(32, 8)]]):
        img, boxes = _image(64, 64, cells)
        Image.fromarray(img).save(root / "JPEGImages" / f"{k:06d}.png")
        objs = "".join(
            f"<object><name>ship</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin>"
            f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for b in boxes.tolist())
        (root / "Annotations" / f"{k:06d}.xml").write_text(
            f"<annotation><filename>{k:06d}.png</filename><size><width>64</width>"
            f"<height>64</height><depth>1</depth></size>{objs}</annotation>")
    (root / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    assert len(load_dataset(root, split="test")) == 1
    assert len(load_dataset(root, split="all")) == 2
    out_json, png = tmp_path / "r" / "eval.json", tmp_path / "r" / "pr.png"
    gallery = tmp_path / "r" / "gallery.png"
    rc = main(["eval", str(model_path), "--data", str(root), "--split", "all",
               "--json", str(out_json), "--pr-png", str(png), "--gallery", str(gallery)])
    assert rc == 0
    data = json.loads(out_json.read_text())
    assert data["images"] == 2 and data["ap50"] == pytest.approx(1.0) and data["tp"] == 2
    assert png.stat().st_size > 1000
    assert Image.open(gallery).size[0] > 0
    sizes = data["recall_by_size"]
    assert sum(v["n"] for v in sizes.values()) == 2
    assert all(v["recall"] == 1.0 for v in sizes.values() if v["n"])


def test_bad_data_gives_clear_errors(model_path: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(DatasetError, match="dataset folder not found"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="neither a YOLO folder"):
        load_dataset(tmp_path / "empty")
    assert main(["eval", str(model_path), "--data", str(tmp_path / "empty")]) == 2
    assert "neither a YOLO folder" in capsys.readouterr().err
    folder = _yolo_folder(tmp_path / "ok", [_image(64, 64, [(8, 8)])])
    assert main(["eval", str(tmp_path / "nope.onnx"), "--data", str(folder)]) == 2
    assert "nope.onnx: model file not found" in capsys.readouterr().err
    (folder / "labels" / "im0.txt").write_text("2 0.5 0.5 0.1 0.1\n")
    assert main(["eval", str(model_path), "--data", str(folder)]) == 2
    assert "im0.png: its labels use class 2, but the model has 1 class(es)" in (
        capsys.readouterr().err)


def test_deep_images_are_refused_or_stretched(model_path: Path, tmp_path: Path,
                                             capsys) -> None:
    # the same scene as 16-bit amplitude and as float dB with a NaN (no-data) corner: read as
    # PIL's "L" they would be all white / all black; stretched they are the 8-bit scene again
    import tifffile

    img, boxes = _image(64, 96, [(16, 16), (40, 72)])
    amp = np.where(img > 100, 30000, 1000).astype(np.uint16)
    db = np.where(img > 100, 5.0, -25.0).astype(np.float32)
    db[:4, :4] = np.nan
    folder = _yolo_folder(tmp_path / "y", [(img, boxes), (img, boxes)])
    for k, deep in enumerate((amp, db)):
        (folder / "images" / f"im{k}.png").unlink()
        tifffile.imwrite(folder / "images" / f"im{k}.tif", deep)
    with pytest.raises(DatasetError, match="im0.tif: uint16 samples, not 8-bit.*--stretch"):
        evaluate(model_path, folder)
    assert main(["eval", str(model_path), "--data", str(folder)]) == 2
    assert "not 8-bit" in capsys.readouterr().err
    out = tmp_path / "e.json"
    assert main(["eval", str(model_path), "--data", str(folder), "--stretch", "0,100",
                 "--json", str(out), "--gallery", str(tmp_path / "g.png")]) == 0
    data = json.loads(out.read_text())
    assert (data["tp"], data["fp"], data["fn"]) == (4, 0, 0)
    assert data["stretch_percentiles"] == [0.0, 100.0]
    for bad in ("99", "50,10", "a,b", "0,101"):
        with pytest.raises(SystemExit):
            main(["eval", str(model_path), "--data", str(folder), "--stretch", bad])
        assert "--stretch" in capsys.readouterr().err


@pytest.mark.ssdd
def test_ssdd_splits(ssdd_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SARVESSEL_SSDD", str(ssdd_dir))
    inshore = load_dataset("ssdd", split="test_inshore")
    assert len(inshore) == 46 and sum(len(i.boxes) for i in inshore) == 172
    assert len(load_dataset("ssdd", split="test")) == 232
    assert len(load_dataset("ssdd", split="all")) == 1160
