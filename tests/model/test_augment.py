"""Augmentation keeps boxes on the pixels they label."""

from __future__ import annotations

import numpy as np
import pytest

from sarvessel.model.augment import (
    AugmentConfig,
    augment,
    augment_mosaic,
    crop_or_pad,
    cut_patch,
    db_jitter,
    flip,
    letterbox,
    mosaic,
    paste_patches,
    resize,
    rot90,
    speckle,
)


def _scene(h: int = 60, w: int = 90) -> tuple[np.ndarray, np.ndarray]:
    img = np.zeros((1, h, w), np.uint8)
    img[0, 10:20, 30:45] = 200  # box x 30..45, y 10..20
    return img, np.array([[30.0, 10.0, 45.0, 20.0]], np.float32)


def _bright_box(img: np.ndarray, thr: int = 100) -> list[float]:
    ys, xs = np.nonzero(img[0] > thr)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


@pytest.mark.parametrize("horizontal", [True, False])
def test_flip(horizontal: bool) -> None:
    img, boxes = _scene()
    out, b = flip(img, boxes, horizontal=horizontal)
    assert _bright_box(out) == b[0].tolist()


@pytest.mark.parametrize("k", [0, 1, 2, 3, 5])
def test_rot90(k: int) -> None:
    img, boxes = _scene()
    out, b = rot90(img, boxes, k)
    assert out.shape[1:] == (img.shape[1:] if k % 2 == 0 else img.shape[:0:-1])
    assert _bright_box(out) == b[0].tolist()


def test_resize_scales_boxes() -> None:
    img, boxes = _scene()
    out, b = resize(img, boxes, 2.0)
    assert out.shape == (1, 120, 180)
    np.testing.assert_allclose(b, boxes * 2)
    np.testing.assert_allclose(_bright_box(out), b[0], atol=1)


def test_crop_or_pad_clips_and_drops() -> None:
    img, boxes = _scene()
    boxes = np.concatenate([boxes, [[80.0, 50.0, 90.0, 60.0]]]).astype(np.float32)
    classes = np.array([0, 1])
    out, b, c = crop_or_pad(img, boxes, classes, 64, x0=20, y0=-4)
    assert out.shape == (1, 64, 64)
    # the second box keeps 4 x 10 of its 10 x 10 px: 40 %, exactly the default minimum
    assert b.tolist() == [[10.0, 14.0, 25.0, 24.0], [60.0, 54.0, 64.0, 64.0]]
    assert c.tolist() == [0, 1]
    assert _bright_box(out) == b[0].tolist()
    # the first box keeps 5 of 15 px width (33 %): dropped; the second is whole
    _, b2, c2 = crop_or_pad(img, boxes, classes, 64, x0=40, y0=0)
    assert b2.tolist() == [[40.0, 50.0, 50.0, 60.0]] and c2.tolist() == [1]


def test_letterbox_shrinks_only_large_images() -> None:
    img, boxes = _scene()
    out, b, s = letterbox(img, boxes, 128)
    assert s == 1.0 and out.shape == (1, 128, 128) and b.tolist() == boxes.tolist()
    out, b, s = letterbox(img, boxes, 45)
    assert s == pytest.approx(0.5) and out.shape == (1, 45, 45)
    np.testing.assert_allclose(b, boxes * 0.5)


def test_radiometric_keep_nodata_and_statistics() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(60, 200, (1, 64, 64)).astype(np.uint8)
    img[0, :8] = 0  # nodata rows
    j = db_jitter(img, 1.0, 10.0)
    assert (j[0, :8] == 0).all()
    assert float(j[0, 8:].mean()) == pytest.approx(float(img[0, 8:].mean()) + 10, abs=0.5)
    sp = speckle(img, 8.0, rng)
    assert (sp[0, :8] == 0).all()
    diff = sp[0, 8:].astype(float) - img[0, 8:]
    # Gamma(L,1/L) speckle: mean 10log10 g is negative, spread ~1.6 dB for L=8 (5.7 levels)
    assert -3.0 < diff.mean() < 0.0 and 3.5 < diff.std() < 8.0


def test_augment_is_deterministic_and_consistent() -> None:
    img = np.zeros((2, 100, 140), np.uint8)
    boxes = np.array([[20, 30, 40, 38], [90, 60, 120, 90]], np.float32)
    for x1, y1, x2, y2 in boxes.astype(int):
        img[:, y1:y2, x1:x2] = 250
    cfg = AugmentConfig(jitter_p=0.0, speckle_p=0.0, scale_p=0.0)
    for seed in range(12):
        out, b, c = augment(img, boxes, np.array([0, 1]), 96, np.random.default_rng(seed), cfg)
        out2, b2, _ = augment(img, boxes, np.array([0, 1]), 96, np.random.default_rng(seed), cfg)
        assert np.array_equal(out, out2) and np.array_equal(b, b2)
        assert out.shape == (2, 96, 96)
        for box in b:
            x1, y1, x2, y2 = np.round(box).astype(int)
            assert out[0, y1:y2, x1:x2].min() == 250  # box interior is the bright object


def _tile_with_boxes(value: int, boxes: np.ndarray, size: int = 96) -> np.ndarray:
    img = np.full((1, size, size), 20, np.uint8)
    for x1, y1, x2, y2 in boxes.astype(int):
        img[:, y1:y2, x1:x2] = value
    return img


def test_mosaic_keeps_boxes_on_their_pixels_and_mixes_all_four_samples() -> None:
    size = 96
    values = (100, 140, 180, 220)  # one brightness per source sample
    boxes = np.array([[10, 12, 22, 20], [50, 40, 64, 52], [70, 70, 80, 90]], np.float32)
    pieces = [(_tile_with_boxes(v, boxes), boxes, np.full(3, i)) for i, v in enumerate(values)]
    seen = set()
    for seed in range(20):
        out, b, c = mosaic(pieces, size, np.random.default_rng(seed))
        assert out.shape == (1, size, size) and len(b) == len(c)
        assert ((b >= 0) & (b <= size)).all()
        for box, k in zip(b, c, strict=True):
            x1, y1, x2, y2 = np.round(box).astype(int)
            # a kept box covers only pixels of its own source sample's ships
            assert (out[0, y1:y2, x1:x2] == values[k]).all()
            seen.add(int(k))
        # every bright pixel of the mosaic lies in some kept or cut box: only boxes with
        # < 40 % visible are dropped, so at least half of the bright pixels are labelled
        labelled = np.zeros((size, size), bool)
        for x1, y1, x2, y2 in np.round(b).astype(int):
            labelled[y1:y2, x1:x2] = True
        bright = out[0] > 20
        assert labelled[bright].mean() >= 0.5
    assert seen == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="4 samples"):
        mosaic(pieces[:3], size, np.random.default_rng(0))


def test_augment_mosaic_is_deterministic() -> None:
    boxes = np.array([[30, 30, 50, 44]], np.float32)
    items = [(_tile_with_boxes(200, boxes, 120), boxes, np.zeros(1, np.int64), 1.0)] * 4
    cfg = AugmentConfig(mosaic=1.0)
    a = augment_mosaic(items, 96, np.random.default_rng(3), cfg)
    b = augment_mosaic(items, 96, np.random.default_rng(3), cfg)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert a[0].shape == (1, 96, 96) and len(a[1]) >= 1


def test_cut_patch_keeps_margin_and_relative_box() -> None:
    img, boxes = _scene()
    patch, rel = cut_patch(img, boxes[0], margin=3)
    assert patch.shape == (1, 16, 21)
    np.testing.assert_allclose(rel, [3, 3, 18, 13])
    assert _bright_box(patch) == rel.tolist()
    edge, rel = cut_patch(img, np.array([0, 2, 5, 6], np.float32), margin=3)  # clipped at x = 0
    assert edge.shape == (1, 9, 8) and rel.tolist() == [0, 2, 5, 6]


def test_paste_patches_labels_pasted_ships_on_free_sea_only() -> None:
    img, boxes = _scene(96, 128)
    img[0][img[0] == 0] = 20  # sea at level 20, ship at 200 (box x 30..45, y 10..20)
    img[0, :, 100:] = 0  # padding on the right: never pasted into
    ship = np.full((1, 14, 20), 25, np.uint8)  # its own sea is a little brighter
    ship[0, 3:11, 3:17] = 230
    rel = np.array([3, 3, 17, 11], np.float32)
    classes = np.array([0])
    for seed in range(10):
        out, b, c = paste_patches(img, boxes, classes, [(ship, rel, 1)] * 3,
                                  np.random.default_rng(seed))
        assert len(b) == len(c) and len(b) >= 2 and c[0] == 0 and (c[1:] == 1).all()
        np.testing.assert_array_equal(b[0], boxes[0])
        assert (out[0, 10:20, 30:45] == 200).all()  # the original ship is untouched
        for x1, y1, x2, y2 in b[1:].astype(int):
            assert (x2 + 3) - 100 <= 0.25 * 20  # at most a quarter of the window in padding
            assert (out[0, y1:y2, x1:x2] == 230).all()  # the box holds the pasted ship
            ring = out[0, max(y1 - 3, 0):y2 + 3, max(x1 - 3, 0):x2 + 3]
            assert np.isin(ring, (0, 20, 230)).all()  # only the ship moved, not its old sea
        pasted = out[0] == 230
        labelled = np.zeros_like(pasted)
        for x1, y1, x2, y2 in b[1:].astype(int):
            labelled[y1:y2, x1:x2] = True
        # every pasted pixel is labelled and boxes do not overlap
        assert (pasted == labelled)[:, :100].all()


def test_paste_patches_skips_bright_land_and_shipless_patches() -> None:
    land = np.full((1, 64, 64), 180, np.uint8)
    ship = np.full((1, 14, 20), 20, np.uint8)
    ship[0, 3:11, 3:17] = 230
    rel = np.array([3, 3, 17, 11], np.float32)
    none = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    out, b, _ = paste_patches(land, *none, [(ship, rel, 0)], np.random.default_rng(0))
    assert len(b) == 0 and np.array_equal(out, land)  # would hide in the land
    flat = np.full((1, 14, 20), 20, np.uint8)  # nothing above its own background
    out, b, _ = paste_patches(np.full((1, 64, 64), 20, np.uint8), *none, [(flat, rel, 0)],
                              np.random.default_rng(0))
    assert len(b) == 0
