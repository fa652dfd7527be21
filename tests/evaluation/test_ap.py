"""AP tests with hand-computed values (perfect, one FP, missed GT, duplicates, IoU sweep,
classes, ignored boxes) for the interpolations, and the PR-curve PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sarvessel.evaluation import ap as ap_mod
from sarvessel.evaluation.ap import (
    ImageDetections,
    ImageTruth,
    average_precision,
    box_iou,
    evaluate_ap,
    match_image,
    save_pr_curve,
)

A = [0, 0, 10, 10]
B = [20, 20, 30, 30]
FAR = [50, 50, 60, 60]


def _dets(boxes: list, scores: list, classes: list | None = None) -> ImageDetections:
    return ImageDetections(boxes, scores, classes if classes is not None else [0] * len(scores))


def _gt(boxes: list, classes: list | None = None, ignore: list | None = None) -> ImageTruth:
    return ImageTruth(boxes, classes if classes is not None else [0] * len(boxes), ignore)


def _ap(dets: list[ImageDetections], gts: list[ImageTruth], interp: str, **kw: object):
    return evaluate_ap(dets, gts, nc=1, interpolation=interp, **kw)


@pytest.mark.parametrize("interp", ["coco101", "all_point"])
def test_perfect(interp: str) -> None:
    r = _ap([_dets([A, B], [0.9, 0.8])], [_gt([A, B])], interp)
    assert r.ap50 == pytest.approx(1.0) and r.ap50_95 == pytest.approx(1.0)
    assert (r.precision, r.recall, r.f1, r.tp, r.fp, r.fn) == (1.0, 1.0, 1.0, 2, 0, 0)


@pytest.mark.parametrize("interp, want", [("all_point", 0.5 + 0.5 * 2 / 3),
                                          ("coco101", (51 + 50 * 2 / 3) / 101)])
def test_one_false_positive_between_true_positives(interp: str, want: float) -> None:
    # ranked TP, FP, TP over 2 GT: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    r = _ap([_dets([A, FAR, B], [0.9, 0.8, 0.7])], [_gt([A, B])], interp)
    assert r.ap50 == pytest.approx(want)
    assert (r.tp, r.fp, r.fn) == (2, 1, 0)
    assert r.precision == pytest.approx(2 / 3) and r.recall == 1.0
    assert r.f1 == pytest.approx(0.8)


@pytest.mark.parametrize("interp", ["coco101", "all_point"])
def test_false_positive_ranked_first(interp: str) -> None:
    # FP, TP, TP: the envelope is 2/3 at every recall
    r = _ap([_dets([FAR, A, B], [0.9, 0.8, 0.7])], [_gt([A, B])], interp)
    assert r.ap50 == pytest.approx(2 / 3)


@pytest.mark.parametrize("interp, want", [("all_point", 0.5), ("coco101", 51 / 101)])
def test_missed_ground_truth(interp: str, want: float) -> None:
    r = _ap([_dets([A], [0.9])], [_gt([A, B])], interp)
    assert r.ap50 == pytest.approx(want)
    assert (r.tp, r.fp, r.fn, r.recall, r.precision) == (1, 0, 1, 0.5, 1.0)
    assert r.f1 == pytest.approx(2 / 3)
    assert r.max_recall == 0.5  # B is never found: AP50 cannot pass 0.5


@pytest.mark.parametrize("dets, gts, want", [
    # perfect: the end point (1, 0) takes half of the last 0.01 of recall (ultralytics' 0.995)
    ([_dets([A, B], [0.9, 0.8])], [_gt([A, B])], 0.995),
    # recall stops at 0.5: precision falls linearly from 1 to 0 between recall 0.5 and 1
    ([_dets([A], [0.9])], [_gt([A, B])], 0.5 + 0.25),
    # TP, FP, TP: envelope 1 up to recall 0.49, 2/3 from 0.5 to 0.99, 0 at 1
    ([_dets([A, FAR, B], [0.9, 0.8, 0.7])], [_gt([A, B])],
     0.49 + 0.01 * (1 + 2 / 3) / 2 + 0.49 * 2 / 3 + 0.01 * (2 / 3) / 2),
])
def test_ultralytics_interpolation(dets: list, gts: list, want: float) -> None:
    r = _ap(dets, gts, "ultralytics")
    assert r.ap50 == pytest.approx(want) and r.interpolation == "ultralytics"


def test_max_recall_counts_detections_below_the_threshold() -> None:
    # B is found only at 0.1, under the P/R threshold 0.25, but still within the AP's reach
    r = _ap([_dets([A, FAR, B], [0.9, 0.5, 0.1])], [_gt([A, B])], "coco101")
    assert r.recall == 0.5 and r.max_recall == 1.0
    assert r.ap50 < r.max_recall
    assert r.to_dict()["max_recall"] == 1.0


@pytest.mark.parametrize("interp", ["coco101", "all_point"])
def test_duplicate_is_a_false_positive_but_costs_no_ap_after_full_recall(interp: str) -> None:
    r = _ap([_dets([A, A], [0.9, 0.8])], [_gt([A])], interp)
    assert r.ap50 == pytest.approx(1.0)
    assert (r.tp, r.fp, r.precision) == (1, 1, 0.5)


def test_duplicate_ranked_before_second_object() -> None:
    # TP(A), dup(A)=FP, TP(B): same as one FP in the middle
    r = _ap([_dets([A, A, B], [0.9, 0.8, 0.7])], [_gt([A, B])], "all_point")
    assert r.ap50 == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_ap50_95_counts_thresholds_met() -> None:
    # IoU 0.72 passes 0.50 ... 0.70 (5 of 10 thresholds)
    r = _ap([_dets([[0, 0, 10, 7.2]], [0.9])], [_gt([A])], "coco101")
    assert box_iou(np.array([[0, 0, 10, 7.2]]), np.array([A]))[0, 0] == pytest.approx(0.72)
    assert r.ap50 == pytest.approx(1.0)
    assert r.ap50_95 == pytest.approx(0.5)
    assert r.ap_per_iou[0.7] == 1.0 and r.ap_per_iou[0.75] == 0.0


def test_confidence_threshold_filters_prf_but_not_ap() -> None:
    r = _ap([_dets([A, B], [0.9, 0.1])], [_gt([A, B])], "all_point", conf_threshold=0.5)
    assert r.ap50 == pytest.approx(1.0)
    assert (r.tp, r.fp, r.fn) == (1, 0, 1)


def test_multiple_images_are_pooled_by_score() -> None:
    # image 1: TP 0.9; image 2: FP 0.8, then its GT found at 0.7 -> TP, FP, TP over 2 GT
    r = _ap([_dets([A], [0.9]), _dets([FAR, B], [0.8, 0.7])], [_gt([A]), _gt([B])],
            "all_point")
    assert r.ap50 == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert r.images == 2 and r.n_det == 3 and r.n_gt == 2


def test_classes_must_agree_and_absent_classes_are_skipped() -> None:
    dets = [_dets([A, B], [0.9, 0.8], [0, 2])]
    gts = [_gt([A, B], [0, 1])]
    r = evaluate_ap(dets, gts, nc=3, interpolation="all_point")
    assert r.ap50_per_class[0] == 1.0
    assert r.ap50_per_class[1] == 0.0  # its GT was found only by a class-2 detection
    assert np.isnan(r.ap50_per_class[2])  # no GT of class 2: not in the mean
    assert r.ap50 == pytest.approx(0.5)
    assert (r.tp, r.fp, r.fn) == (1, 1, 1)


def test_ignored_ground_truth_is_neither_tp_nor_fp() -> None:
    r = _ap([_dets([A, B], [0.9, 0.8])], [_gt([A, B], ignore=[False, True])], "all_point")
    assert r.ap50 == 1.0 and (r.tp, r.fp, r.fn, r.n_gt) == (1, 0, 0, 1)


def test_no_detections_and_no_truth() -> None:
    r = _ap([_dets([], [])], [_gt([A])], "coco101")
    assert r.ap50 == 0.0 and r.recall == 0.0 and r.f1 == 0.0
    ap, curve = average_precision(np.zeros(0, bool), np.zeros(0), 0)
    assert np.isnan(ap) and len(curve.recall) == 0


def test_match_image_prefers_highest_iou_unmatched() -> None:
    gt = np.array([A, [0, 0, 10, 8]], float)
    tp, valid = match_image(np.array([[0, 0, 10, 8.5], [0, 0, 10, 10]]), np.array([0.9, 0.8]),
                            gt, iou_thresholds=(0.5, 0.9))
    # det 0 (IoU .85 with A, .94 with gt1) takes gt1; det 1 then takes A exactly
    assert tp.tolist() == [[True, True], [True, True]]
    assert valid.all()


@pytest.mark.parametrize("force_pillow", [False, True])
def test_pr_curve_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      force_pillow: bool) -> None:
    r = _ap([_dets([A, FAR, B], [0.9, 0.8, 0.7])], [_gt([A, B])], "coco101")
    if force_pillow:
        import builtins

        real_import = builtins.__import__

        def no_mpl(name: str, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            if name.startswith("matplotlib"):
                raise ImportError(name)
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_mpl)
    out = save_pr_curve(r, tmp_path / "sub" / "pr.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] >= 400
        # the curve is drawn: some non-grey coloured pixels
        arr = np.asarray(im.convert("RGB")).astype(int)
        assert (np.abs(arr[..., 0] - arr[..., 2]) > 60).sum() > 50


def test_report_to_dict_is_json_ready() -> None:
    import json

    r = _ap([_dets([A], [0.9])], [_gt([A])], "coco101")
    d = json.loads(json.dumps(r.to_dict()))
    assert d["ap50"] == 1.0 and d["interpolation"] == "coco101" and "curves" not in d
    assert ap_mod.COCO_IOUS[0] == 0.5 and ap_mod.COCO_IOUS[-1] == 0.95


def test_recall_by_size_bins_by_longest_side() -> None:
    from sarvessel.evaluation.ap import recall_by_size

    gt = ImageTruth(
        boxes=[[0, 0, 10, 4], [20, 20, 40, 30], [100, 100, 300, 150], [50, 50, 60, 60],
               [400, 400, 410, 410]],
        classes=[0, 0, 0, 0, 0], ignore=[False, False, False, False, True])
    det = ImageDetections(
        boxes=[[0, 0, 10, 4], [100, 100, 300, 150], [50, 50, 60, 60], [21, 21, 40, 30],
               [400, 400, 410, 410]],
        scores=[0.9, 0.8, 0.1, 0.7, 0.9],  # the 10 px box at (50, 50) is under the threshold
        classes=[0, 0, 0, 1, 0])  # the 20 px box is found with the wrong class
    out = recall_by_size([det], [gt], conf_threshold=0.25)
    assert list(out) == ["<16", "16-32", "32-64", "64-128", ">=128"]
    assert out["<16"] == {"n": 2, "recall": 0.5}  # the ignored 10 px box does not count
    assert out["16-32"] == {"n": 1, "recall": 0.0}
    assert out[">=128"] == {"n": 1, "recall": 1.0}
    assert out["32-64"]["n"] == 0 and np.isnan(out["32-64"]["recall"])
    # each detection matches at most one object: one box over two equal truths finds one
    two = ImageTruth(boxes=[[0, 0, 20, 20], [0, 0, 20, 20]], classes=[0, 0])
    one = ImageDetections(boxes=[[0, 0, 20, 20]], scores=[0.9], classes=[0])
    assert recall_by_size([one], [two])["16-32"] == {"n": 2, "recall": 0.5}
