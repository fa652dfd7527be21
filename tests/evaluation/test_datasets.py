"""Dataset readers: VOC annotations, SSDD splits, YOLO folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sarvessel.evaluation.datasets import (
    DatasetError,
    LabeledImage,
    image_size,
    load_image_grey,
    load_ssdd,
    load_yolo_folder,
    read_voc,
    read_voc_boxes,
    read_yolo_labels,
    write_yolo_labels,
)
from sarvessel.runtime.errors import SarvesselError

VOC = """<annotation><filename>000007.jpg</filename>
<size><width>416</width><height>323</height><depth>3</depth></size>
<object><name>ship</name><difficult>0</difficult>
<bndbox><xmin>218</xmin><ymin>48</ymin><xmax>266</xmax><ymax>146</ymax></bndbox></object>
<object><name>ship</name><difficult>1</difficult>
<bndbox><xmin>10.5</xmin><ymin>20</ymin><xmax>30</xmax><ymax>25</ymax></bndbox></object>
</annotation>"""


def test_read_voc_boxes(tmp_path: Path) -> None:
    xml = tmp_path / "Annotations" / "000007.xml"
    xml.parent.mkdir()
    xml.write_text(VOC)
    boxes, classes = read_voc_boxes(xml)
    np.testing.assert_allclose(boxes, [[218, 48, 266, 146], [10.5, 20, 30, 25]])
    assert boxes.dtype == np.float32 and classes.tolist() == [0, 0]
    item = read_voc(xml)
    assert (item.width, item.height) == (416, 323)
    assert item.difficult.tolist() == [False, True]
    assert item.path == tmp_path / "JPEGImages" / "000007.jpg"


@pytest.mark.parametrize("text, match", [
    ("<annotation><size><width>4</width></size>", "cannot read"),
    ("<annotation><object><name>ship</name></object></annotation>", "size"),
    (VOC.replace("<name>ship</name>", "<name>boat</name>", 1), "unknown class 'boat'"),
    (VOC.replace("<xmax>266</xmax>", "<xmax>100</xmax>"), "x2 < x1"),
    (VOC.replace("<xmax>266</xmax>", "<xmax>nan</xmax>"), "non-finite coordinate"),
])
def test_read_voc_errors_name_the_file(tmp_path: Path, text: str, match: str) -> None:
    xml = tmp_path / "bad.xml"
    xml.write_text(text)
    with pytest.raises(DatasetError, match=match) as info:
        read_voc_boxes(xml)
    assert "bad.xml" in str(info.value)
    assert isinstance(info.value, SarvesselError)


def test_load_ssdd_missing_split(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="split file not found"):
        load_ssdd(tmp_path, "train")
    with pytest.raises(DatasetError, match="unknown SSDD split"):
        load_ssdd(tmp_path, "val")


def test_yolo_round_trip(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((50, 100), np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.full((40, 40), 7, np.uint8)).save(tmp_path / "images" / "b.png")
    item = LabeledImage(tmp_path / "images" / "a.png", 100, 50,
                        np.array([[10, 5, 30, 25], [0, 0, 100, 50]], np.float32),
                        np.array([0, 2]))
    write_yolo_labels(tmp_path / "labels" / "a.txt", item)
    items = load_yolo_folder(tmp_path)
    assert [i.stem for i in items] == ["a", "b"]
    np.testing.assert_allclose(items[0].boxes, item.boxes, atol=1e-3)
    assert items[0].classes.tolist() == [0, 2]
    assert (items[1].width, items[1].height, len(items[1].boxes)) == (40, 40, 0)
    assert load_image_grey(items[1].path).tolist()[0][:2] == [7, 7]


def test_yolo_label_errors(tmp_path: Path) -> None:
    txt = tmp_path / "x.txt"
    txt.write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(DatasetError, match=r"x.txt:1: expected"):
        read_yolo_labels(txt, width=10, height=10)
    with pytest.raises(DatasetError, match="images folder not found"):
        load_yolo_folder(tmp_path)
    for line, why in [("0 0.5 0.5 nan 0.1", "non-finite value"),
                      ("0 1.5 0.5 0.1 0.1", "normalised to 0..1"),
                      ("0 0.5 0.5 -0.1 0.1", "normalised to 0..1"),
                      ("0 0.5 0.5 0.1 0", "w, h > 0")]:
        txt.write_text(f"0 0.5 0.5 0.1 0.1\n{line}\n")
        with pytest.raises(DatasetError, match=rf"x.txt:2: .*{why}"):
            read_yolo_labels(txt, width=10, height=10)


def test_deep_and_multiband_images(tmp_path: Path) -> None:
    import tifffile

    ramp = np.arange(0, 4000, 40, dtype=np.uint16).reshape(10, 10)  # 0 .. 3960
    Image.fromarray(ramp).save(tmp_path / "u16.png")  # PIL mode I;16
    with pytest.raises(DatasetError, match=r"u16.png: uint16 samples, not 8-bit"):
        load_image_grey(tmp_path / "u16.png")
    g = load_image_grey(tmp_path / "u16.png", stretch=(0, 100))
    assert g.dtype == np.uint8 and g.shape == (10, 10)
    assert g[0, 0] == 0 and g[-1, -1] == 255 and g[5, 0] == round(2000 / 3960 * 255)
    # float with two samples per pixel: PIL cannot open it, tifffile gives its size
    tifffile.imwrite(tmp_path / "vvvh.tif", np.zeros((12, 20, 2), np.float32),
                     photometric="minisblack", planarconfig="contig")
    assert image_size(tmp_path / "vvvh.tif") == (20, 12)
    with pytest.raises(DatasetError, match=r"vvvh.tif: samples of shape \(12, 20, 2\); one band"):
        load_image_grey(tmp_path / "vvvh.tif", stretch=(1, 99))
    # an 8-bit TIFF of several pages is several bands too
    tifffile.imwrite(tmp_path / "pages.tif", np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(DatasetError, match="one band"):
        load_image_grey(tmp_path / "pages.tif")
    nan = np.full((4, 4), np.nan, np.float32)
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    with pytest.raises(DatasetError, match="nan.tif: no finite samples"):
        load_image_grey(tmp_path / "nan.tif", stretch=(1, 99))
    tifffile.imwrite(tmp_path / "ok.tif", ramp)
    (tmp_path / "cut.tif").write_bytes((tmp_path / "ok.tif").read_bytes()[:60])
    with pytest.raises(DatasetError, match="cut.tif: cannot read"):
        load_image_grey(tmp_path / "cut.tif", stretch=(1, 99))
    frames = [Image.fromarray(np.full((8, 8), k, np.uint8)) for k in (0, 9)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(DatasetError, match="anim.gif: 2 frames"):
        load_image_grey(tmp_path / "anim.gif")
    # an 8-bit TIFF with overviews (pyramid pages) is one band: its full-resolution level
    with tifffile.TiffWriter(tmp_path / "cog.tif") as tw:
        tw.write(np.full((16, 16), 5, np.uint8), subifds=1)
        tw.write(np.full((8, 8), 9, np.uint8), subfiletype=1)
    assert load_image_grey(tmp_path / "cog.tif").shape == (16, 16)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="junk.png: cannot read image"):
        load_image_grey(tmp_path / "junk.png")


@pytest.mark.ssdd
def test_load_ssdd_official_split(ssdd_dir: Path) -> None:
    counts = {s: load_ssdd(ssdd_dir, s) for s in ("train", "test", "test_inshore",
                                                    "test_offshore")}
    assert {s: len(v) for s, v in counts.items()} == {
        "train": 928, "test": 232, "test_inshore": 46, "test_offshore": 186}
    assert sum(len(i.boxes) for i in counts["train"]) == 2041
    assert sum(len(i.boxes) for i in counts["test"]) == 546
    first = counts["train"][0]
    assert first.path.is_file() and first.width >= 214
    img = load_image_grey(first.path)
    assert img.shape == (first.height, first.width)
    b = np.concatenate([i.boxes for i in counts["test"]])
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
