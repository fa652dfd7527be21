"""Datasets: SSDD tiles, collation, xView3 labels and scene chips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from sarvessel.evaluation.datasets import load_ssdd
from sarvessel.model.augment import AugmentConfig
from sarvessel.model.data import (
    ImageDataset,
    SceneChipDataset,
    collate,
    load_scene,
    read_xview3_labels,
)
from sarvessel.runtime.errors import SarvesselError

CSV_HEAD = ("scene_id,detect_scene_row,detect_scene_column,top,left,bottom,right,"
            "is_vessel,is_fishing,vessel_length_m,confidence\n")


def test_collate_pads_boxes() -> None:
    s1 = (np.zeros((1, 32, 32), np.uint8), np.array([[1, 2, 3, 4]], np.float32), np.array([0]))
    s2 = (np.ones((1, 32, 32), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    b = collate([s1, s2])
    assert b.images.shape == (2, 1, 32, 32) and b.images.dtype.is_floating_point
    assert b.boxes.shape == (2, 1, 4) and b.mask.tolist() == [[True], [False]]


@pytest.mark.ssdd
def test_ssdd_loader_shapes(ssdd_dir: Path) -> None:
    items = load_ssdd(ssdd_dir, "test")[:6]
    ev = ImageDataset(items, tile_size=512)
    img, boxes, classes = ev[0]
    assert img.shape == (1, 512, 512) and img.dtype == np.uint8
    np.testing.assert_allclose(boxes, items[0].boxes * ev.letterbox_scale(0), rtol=1e-5)
    tr = ImageDataset(items, tile_size=512, train_size=256, augment=AugmentConfig(), seed=1)
    batch = collate([tr[i] for i in range(len(items))])
    assert batch.images.shape == (6, 1, 256, 256)
    assert float(batch.images.max()) <= 255.0
    valid = batch.boxes[batch.mask]
    assert ((valid >= 0) & (valid <= 256)).all()


def test_mosaic_samples_mix_images_until_closed(tmp_path: Path) -> None:
    from PIL import Image

    from sarvessel.evaluation.datasets import LabeledImage

    items = []
    for i in range(4):  # image i holds one ship of brightness 60 + 40 i
        img = np.full((96, 96), 10, np.uint8)
        img[40:56, 30:50] = 60 + 40 * i
        Image.fromarray(img).save(tmp_path / f"{i}.png")
        items.append(LabeledImage(tmp_path / f"{i}.png", 96, 96,
                                  np.array([[30, 40, 50, 56]], np.float32), np.array([0])))
    cfg = AugmentConfig(mosaic=1.0, jitter_p=0.0, speckle_p=0.0, scale_p=0.0)
    ds = ImageDataset(items, tile_size=96, train_size=96, augment=cfg)
    levels = set()
    for index in range(4):
        for epoch in range(3):
            ds.set_epoch(epoch)
            img, boxes, _ = ds[index]
            levels |= {int(v) for v in np.unique(img)} - {0, 10}
            assert ((boxes >= 0) & (boxes <= 96)).all()
    assert len(levels) >= 3  # ships of several images share samples
    ds.use_mosaic = False
    for index in range(4):
        img, boxes, _ = ds[index]
        assert {int(v) for v in np.unique(img)} - {0, 10} <= {60 + 40 * index}
        assert len(boxes) == 1


def test_input_scale_resamples_training_and_validation_images(tmp_path: Path) -> None:
    from PIL import Image

    from sarvessel.evaluation.datasets import LabeledImage

    img = np.full((60, 80), 10, np.uint8)
    img[20:30, 30:50] = 200
    Image.fromarray(img).save(tmp_path / "a.png")
    item = LabeledImage(tmp_path / "a.png", 80, 60, np.array([[30, 20, 50, 30]], np.float32),
                        np.array([0]))
    val = ImageDataset([item], tile_size=128, input_scale=1.5)
    tile, boxes, _ = val[0]
    assert val.letterbox_scale(0) == 1.5 and tile.shape == (1, 128, 128)
    np.testing.assert_allclose(boxes, [[45, 30, 75, 45]])
    assert tile[0, 37, 60] == 200 and tile[0, 95, 10] == 0  # 80 x 60 became 120 x 90
    assert ImageDataset([item], tile_size=64, input_scale=1.5).letterbox_scale(0) == 64 / 80
    cfg = AugmentConfig(jitter_p=0.0, speckle_p=0.0, scale_p=0.0, flip=0.0, rot90=0.0)
    train = ImageDataset([item], tile_size=128, train_size=128, augment=cfg, input_scale=1.5)
    _, boxes, _ = train[0]
    sides = boxes[0, 2:] - boxes[0, :2]
    np.testing.assert_allclose(sides, [30, 15])  # ship 20 x 10 at scale 1.5


def test_copy_paste_adds_labelled_ships_from_other_images(tmp_path: Path) -> None:
    from PIL import Image

    from sarvessel.evaluation.datasets import LabeledImage

    items = []
    for i in range(3):  # image i holds one ship of brightness 100 + 50 i on sea at 10
        img = np.full((160, 160), 10, np.uint8)
        img[40:56, 30:50] = 100 + 50 * i
        Image.fromarray(img).save(tmp_path / f"{i}.png")
        items.append(LabeledImage(tmp_path / f"{i}.png", 160, 160,
                                  np.array([[30, 40, 50, 56]], np.float32), np.array([0])))
    cfg = AugmentConfig(copy_paste=1.0, paste_n=(3, 3), jitter_p=0.0, speckle_p=0.0,
                        scale=(1.0, 1.0), flip=0.0, rot90=0.0)
    ds = ImageDataset(items, tile_size=160, train_size=160, augment=cfg)
    plain = ImageDataset(items, tile_size=160, train_size=160,
                         augment=AugmentConfig(jitter_p=0.0, speckle_p=0.0, scale_p=0.0,
                                               flip=0.0, rot90=0.0))
    n = 0
    for index in range(3):
        img, boxes, _ = ds[index]
        assert len(plain[index][1]) == 1 and len(boxes) >= 2
        n += len(boxes) - 1
        for x1, y1, x2, y2 in np.round(boxes).astype(int):
            inside = img[0, y1:y2, x1:x2]
            assert inside.min() >= 100 and len(np.unique(inside)) == 1  # a whole ship per box
        img2, boxes2, _ = ds[index]
        assert np.array_equal(img, img2) and np.array_equal(boxes, boxes2)  # deterministic
    assert n >= 6


def test_xview3_labels_boxes_and_classes(tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text(CSV_HEAD
                   + "s1,100,200,90,185,110,215,True,False,,HIGH\n"   # box from t/l/b/r: 30 px
                   + "s1,50,60,,,,,True,True,250.0,MEDIUM\n"         # from length: 25 px
                   + "s1,10,10,,,,,False,,,LOW\n"                    # min box 16 px
                   + "s2,1,1,,,,,True,,,HIGH\n")
    labels = read_xview3_labels(csv, "s1")
    assert [(lab.cls, lab.half) for lab in labels] == [(1, 15.0), (2, 12.5), (0, 8.0)]
    assert (labels[0].row, labels[0].col) == (100.0, 200.0)
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SarvesselError, match="missing columns"):
        read_xview3_labels(tmp_path / "bad.csv")


def test_scene_chips(tmp_path: Path) -> None:
    scene = tmp_path / "s1"
    scene.mkdir()
    vv = np.full((300, 400), -25.0, np.float32)
    vv[95:105, 190:210] = 5.0
    tifffile.imwrite(scene / "VV_dB.tif", vv)
    tifffile.imwrite(scene / "VH_dB.tif", vv - 8)
    img = load_scene(scene)
    assert img.shape == (2, 300, 400) and img.dtype == np.uint8
    assert img[0, 100, 200] == 200 and img[0, 0, 0] == 91
    csv = tmp_path / "labels.csv"
    csv.write_text(CSV_HEAD + "s1,100,200,,,,,True,False,,HIGH\n")
    ds = SceneChipDataset([(img, read_xview3_labels(csv, "s1"))], chip=128, negatives=2)
    assert len(ds) == 3
    chip, boxes, classes = ds[0]
    assert chip.shape == (2, 128, 128) and classes.tolist() == [1]
    x1, y1, x2, y2 = boxes[0]
    assert x2 - x1 == 16 and chip[0, int((y1 + y2) / 2), int((x1 + x2) / 2)] == 200
    aug = SceneChipDataset([(img, read_xview3_labels(csv, "s1"))], chip=128,
                           augment=AugmentConfig())
    assert aug[0][0].shape == (2, 128, 128)
    with pytest.raises(SarvesselError, match="VV_dB.tif"):
        load_scene(tmp_path)


@pytest.mark.parametrize("shrink, side", [(True, 10.0), (False, 20.0)])
def test_oversized_training_images_fit_the_tile_or_stay_native(tmp_path: Path, shrink: bool,
                                                               side: float) -> None:
    # a 128 px image on a 64 px tile: shrunk by 1/2 to fit (fit) or cropped at native pixels,
    # the scale the runtime's tiles show it at (native)
    from PIL import Image

    from sarvessel.evaluation.datasets import LabeledImage

    img = np.full((128, 128), 10, np.uint8)
    img[50:70, 40:60] = 200
    Image.fromarray(img).save(tmp_path / "a.png")
    item = LabeledImage(tmp_path / "a.png", 128, 128, np.array([[40, 50, 60, 70]], np.float32),
                        np.array([0]))
    cfg = AugmentConfig(jitter_p=0.0, speckle_p=0.0, scale_p=0.0, flip=0.0, rot90=0.0,
                        shrink_oversize=shrink)
    ds = ImageDataset([item], tile_size=64, train_size=64, augment=cfg)
    tile, boxes, _ = ds[0]
    assert ds.letterbox_scale(0) == (0.5 if shrink else 1.0) and tile.shape == (1, 64, 64)
    assert (boxes[0, 2:] - boxes[0, :2]).max() == pytest.approx(side)  # the crop may cut one side
    x0, y0, x1, y1 = np.round(boxes[0]).astype(int)
    assert tile[0, (y0 + y1) // 2, (x0 + x1) // 2] == 200
    # evaluation always letterboxes the whole image into the tile
    assert ImageDataset([item], tile_size=64).letterbox_scale(0) == 0.5
