"""Error gallery: matching per image and the picture it draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sarvessel.evaluation.ap import ImageDetections, ImageTruth, threshold_matches
from sarvessel.evaluation.gallery import (
    FN_COLOUR,
    FP_COLOUR,
    TP_COLOUR,
    save_gallery,
)


def test_threshold_matches_greedily_by_score() -> None:
    gt = ImageTruth(boxes=[[10, 10, 30, 30], [50, 50, 70, 70], [80, 80, 90, 90]],
                    classes=[0, 0, 0], ignore=[False, False, True])
    det = ImageDetections(boxes=[[11, 11, 30, 30], [10, 10, 31, 31], [100, 0, 120, 20],
                                 [50, 50, 70, 70]],
                          scores=[0.5, 0.9, 0.8, 0.1], classes=[0, 0, 0, 0])
    ok, found = threshold_matches(det, gt, conf_threshold=0.25)
    # kept in index order: 0 (dup of the better-scored 1), 1 (match), 2 (false alarm)
    assert ok.tolist() == [False, True, False]
    # the 50..70 box is only detected under the threshold; the ignored box counts as found
    assert found.tolist() == [True, False, True]
    wrong_class = ImageDetections(boxes=[[10, 10, 30, 30]], scores=[0.9], classes=[1])
    ok, found = threshold_matches(wrong_class, gt, conf_threshold=0.25)
    assert ok.tolist() == [False] and found.tolist() == [False, False, True]


def test_gallery_draws_worst_images_first(tmp_path: Path) -> None:
    paths = []
    for k in range(3):
        p = tmp_path / f"im{k}.png"
        Image.fromarray(np.full((100, 200), 40, np.uint8)).save(p)
        paths.append(p)
    truths = [ImageTruth(boxes=[[20, 20, 60, 60]], classes=[0]) for _ in range(3)]
    dets = [ImageDetections(boxes=[[20, 20, 60, 60]], scores=[0.9], classes=[0]),  # perfect
            ImageDetections(boxes=[[120, 20, 160, 60]], scores=[0.9], classes=[0]),  # FN + FP
            ImageDetections(boxes=np.zeros((0, 4)), scores=[], classes=[])]  # FN
    out = save_gallery(paths, dets, truths, tmp_path / "g.png", conf_threshold=0.25, n=2,
                       columns=2, panel=200)
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == (220, 400, 3)
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert FN_COLOUR in colours and FP_COLOUR in colours
    assert TP_COLOUR not in colours  # the perfect image is not among the 2 worst
    left = {tuple(c) for c in img[:, :200].reshape(-1, 3)}
    assert FP_COLOUR in left  # worst (2 errors) first
    with pytest.raises(ValueError, match="order"):
        save_gallery(paths, dets, truths, tmp_path / "x.png", conf_threshold=0.25, order="best")
