"""The xView3 metric: one hand-computed case per rule, bad inputs, the CLI, and a comparison with
a pandas re-statement of upstream's ``reference/metric.py`` on random cases.

Coordinates are (row, col) scene pixels of 10 m; the tolerance is 200 m = 20 px.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial import KDTree, distance_matrix

from sarvessel.evaluation.scoring import (
    LABEL_COLUMNS,
    PREDICTION_COLUMNS,
    read_labels_csv,
    read_predictions_csv,
    register_cli,
    score,
    score_csv,
)
from sarvessel.runtime.errors import LabelsError

NAN = math.nan


def _preds(*rows: tuple) -> dict[str, np.ndarray]:
    """Rows of (scene, row, col[, is_vessel, is_fishing, length])."""
    full = [r + (True, False, 100.0)[len(r) - 3:] for r in rows]
    cols = list(zip(*full, strict=True)) if full else [()] * 6
    return {name: np.array(c, dtype=object if i == 0 else float)
            for i, (name, c) in enumerate(zip(PREDICTION_COLUMNS, cols, strict=True))}


def _labels(*rows: tuple) -> dict[str, np.ndarray]:
    """Rows of (scene, row, col[, confidence, dist_shore_km, is_vessel, is_fishing, length])."""
    defaults = ("HIGH", 10.0, True, False, 100.0)
    full = [r + defaults[len(r) - 3:] for r in rows]
    scene, row, col, conf, dist, vessel, fishing, length = zip(*full, strict=True)
    return {
        "scene_id": np.array(scene, object), "detect_scene_row": np.array(row, float),
        "detect_scene_column": np.array(col, float), "is_vessel": np.array(vessel, float),
        "is_fishing": np.array(fishing, float), "vessel_length_m": np.array(length, float),
        "confidence": np.array(conf, object), "distance_from_shore_km": np.array(dist, float),
    }


def _save_shoreline(root: Path, scene_id: str, contours: list[np.ndarray]) -> None:
    arr = np.empty(len(contours), dtype=object)
    for i, c in enumerate(contours):
        arr[i] = np.asarray(c)
    np.save(root / f"{scene_id}_shoreline.npy", arr, allow_pickle=True)


# --- rule 1: labels only in scenes with predictions ------------------------------------------

def test_rule1_labels_restricted_to_scenes_with_predictions() -> None:
    preds = _preds(("A", 100, 100), ("C", 50, 50))
    labels = _labels(("A", 101, 100), ("B", 10, 10), ("B", 500, 500))
    s = score(preds, labels, shoreline_root=None)
    # B's two labels are not FN; C's prediction (scene without labels) is not FP either
    assert (s.tp, s.fp, s.fn) == (1, 0, 0)
    assert s.loc_fscore == 1.0
    assert s.n_predictions_ignored == 1
    assert [sc.scene_id for sc in s.scenes] == ["A"]


# --- rule 2: LOW-confidence labels ---------------------------------------------------------

def _low_case() -> tuple[dict, dict]:
    preds = _preds(("A", 101, 100), ("A", 301, 300), ("A", 900, 900))
    labels = _labels(("A", 100, 100, "HIGH"), ("A", 300, 300, "LOW"), ("A", 500, 500, "LOW"),
                     ("A", 700, 700, "MEDIUM"))
    return preds, labels


def test_rule2_predictions_matched_to_low_labels_are_dropped() -> None:
    s = score(*_low_case())
    # P2 (on the LOW label) removed; LOW labels gone; MEDIUM label missed
    assert (s.tp, s.fp, s.fn, s.n_low_dropped) == (1, 1, 1, 1)
    assert s.loc_fscore == pytest.approx(0.5)


def test_rule2_without_drop_low_the_low_match_is_a_false_positive() -> None:
    s = score(*_low_case(), drop_low=False)
    assert (s.tp, s.fp, s.fn) == (1, 2, 1)
    assert s.loc_fscore == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))  # 0.4


def test_rule2_all_confidences_scores_low_labels() -> None:
    s = score(*_low_case(), all_confidences=True)
    assert (s.tp, s.fp, s.fn) == (2, 1, 2)
    assert s.loc_fscore == pytest.approx(4 / 7)  # P 2/3, R 1/2


def test_rule2_low_match_uses_hungarian_over_all_labels() -> None:
    # one prediction, 50 m from a LOW label and 100 m from a HIGH one: the assignment pairs it
    # with the LOW label, so it is dropped and the HIGH label becomes a FN (upstream behaviour;
    # the now prediction-less scene counts its labels as FN instead of crashing)
    preds = _preds(("A", 0, 0))
    labels = _labels(("A", 0, 10, "HIGH"), ("A", 0, 5, "LOW"))
    s = score(preds, labels)
    assert (s.tp, s.fp, s.fn, s.n_low_dropped) == (0, 0, 1, 1)
    assert s.loc_fscore == 0.0
    assert s.aggregate == 0.0


# --- rule 3: matching ------------------------------------------------------------------------

@pytest.mark.parametrize(("d_col", "tp"), [(16.0, 0), (15.9, 1)])
def test_rule3_match_needs_distance_strictly_below_tolerance(d_col: float, tp: int) -> None:
    # offset (12, 16) px = 20 px = 200 m exactly: not a match; (12, 15.9) px = 199.2 m: a match
    s = score(_preds(("A", 112, 100 + d_col)), _labels(("A", 100, 100)))
    assert (s.tp, s.fp, s.fn) == (tp, 1 - tp, 1 - tp)
    assert s.loc_fscore == float(tp)


def _line_case() -> tuple[dict, dict]:
    # on one row: G2=79, P1=100, G1=119, P2=140 px. Plain costs: P1-G1 190 m + P2-G2 610 m = 800
    # versus P1-G2 210 m + P2-G1 210 m = 420, so the plain assignment takes two misses.
    preds = _preds(("A", 0, 100), ("A", 0, 140))
    labels = _labels(("A", 0, 119), ("A", 0, 79))
    return preds, labels


def test_rule3_costly_distance_changes_the_assignment() -> None:
    costly = score(*_line_case(), costly_dist=True)
    plain = score(*_line_case(), costly_dist=False)
    assert (costly.tp, costly.fp, costly.fn) == (1, 1, 1)
    assert costly.loc_fscore == pytest.approx(0.5)
    assert (plain.tp, plain.fp, plain.fn) == (0, 2, 2)
    assert plain.loc_fscore == 0.0


def _greedy_tp(pred: np.ndarray, gt: np.ndarray, tol_px: float) -> int:
    d = distance_matrix(pred, gt)
    pairs: list[tuple[int, int]] = []
    for flat in np.argsort(d, axis=None, kind="stable"):  # nearest pair first
        i, j = divmod(int(flat), d.shape[1])
        if all(i != a and j != b for a, b in pairs):
            pairs.append((i, j))
    return sum(1 for i, j in pairs if d[i, j] < tol_px)


def test_rule3_hungarian_beats_greedy() -> None:
    # P1=100, G1=105 (50 m), P2=114 (90 m to G1), G2=85 (150 m to P1, 290 m to P2).
    # Greedy takes P1-G1 first and leaves P2-G2 (290 m): 1 TP. Hungarian: P1-G2 + P2-G1, 2 TP.
    preds = _preds(("A", 0, 100), ("A", 0, 114))
    labels = _labels(("A", 0, 105), ("A", 0, 85))
    pts = lambda t: np.stack([t["detect_scene_row"], t["detect_scene_column"]], 1)  # noqa: E731
    assert _greedy_tp(pts(preds), pts(labels), 20.0) == 1
    s = score(preds, labels)
    assert (s.tp, s.fp, s.fn) == (2, 0, 0)
    assert s.loc_fscore == 1.0


def test_rule3_counts_summed_over_scenes_before_f1() -> None:
    # scene A: 1 TP; scene B: 1 TP, 3 FP. Pooled P = 2/5, R = 1 -> F1 = 4/7 (the mean of the
    # per-scene F1s would be (1 + 0.4) / 2 = 0.7)
    preds = _preds(("A", 0, 0), ("B", 0, 0), ("B", 100, 100), ("B", 200, 200), ("B", 300, 300))
    labels = _labels(("A", 0, 1), ("B", 1, 0))
    s = score(preds, labels)
    assert (s.tp, s.fp, s.fn) == (2, 3, 0)
    assert s.loc_fscore == pytest.approx(4 / 7)
    assert [(sc.scene_id, sc.tp, sc.fp) for sc in s.scenes] == [("A", 1, 0), ("B", 1, 3)]


# --- rule 4: close to shore ----------------------------------------------------------------

def _shore_case(root: Path) -> tuple[dict, dict]:
    # shoreline of S: points (0, 0..2000) plus an isolated point (5000, 5000)
    _save_shoreline(root, "S", [np.stack([np.zeros(2001), np.arange(2001)], 1),
                                np.array([[5000, 5000]])])
    # T: shoreline far from its prediction; U: near-shore prediction, no near-shore label
    _save_shoreline(root, "T", [np.array([[0, 0], [0, 10]])])
    _save_shoreline(root, "U", [np.array([[0, 0], [0, 10]])])
    preds = _preds(
        ("S", 101, 500),    # P1: 101 px from shore, matches the 1 km label -> shore TP
        ("S", 220, 1000),   # P2: exactly 220 px from shore -> near; no label -> shore FP
        ("S", 221, 1200),   # P3: 221 px -> not near shore (overall FP only)
        ("S", 1000, 501),   # P4: matches the offshore label (overall TP only)
        ("S", 5000, 5000),  # P5: ON a shoreline point: distance 0 counts as none -> not near
        ("T", 1000, 1000),  # T: no near-shore prediction
        ("U", 5, 5),        # U: near-shore prediction but U has no near-shore label
    )
    labels = _labels(
        ("S", 100, 500, "HIGH", 1.0),
        ("S", 150, 1500, "MEDIUM", 2.0),   # <= 2 km is near shore; unmatched -> shore FN
        ("S", 1000, 500, "HIGH", 10.0),
        ("S", 1200, 900, "HIGH", NAN),      # unknown distance: not near shore
        ("T", 50, 50, "HIGH", 0.5),         # near-shore label in a scene without near preds
        ("U", 3000, 3000, "HIGH", 5.0),
    )
    return preds, labels


def test_rule4_close_to_shore_f1(tmp_path: Path) -> None:
    s = score(*_shore_case(tmp_path), shoreline_root=tmp_path)
    # only S enters: TP P1, FP P2 (P3 beyond 220 px, P5 at distance 0), FN the 2 km label;
    # T's near label is not a FN (no near preds), U's near pred is not a FP (no near labels)
    assert s.shore_available
    assert (s.shore_tp, s.shore_fp, s.shore_fn) == (1, 1, 1)
    assert s.loc_fscore_shore == pytest.approx(0.5)
    by_id = {sc.scene_id: sc for sc in s.scenes}
    assert by_id["S"].shore_n_predictions == 2 and by_id["S"].shore_n_labels == 2
    assert by_id["S"].shore_scored and not by_id["T"].shore_scored
    assert not by_id["U"].shore_scored and by_id["U"].shore_n_predictions == 1
    # overall: TP P1, P4; FP P2, P3, P5, T, U; FN 2 km label, NaN-distance label, T, U labels
    assert (s.tp, s.fp, s.fn) == (2, 5, 4)


def test_rule4_zero_without_near_shore_labels(tmp_path: Path) -> None:
    _save_shoreline(tmp_path, "A", [np.array([[0, 0], [0, 100]])])
    preds = _preds(("A", 10, 10))  # near shore
    labels = _labels(("A", 10, 11, "HIGH", 3.0))
    s = score(preds, labels, shoreline_root=tmp_path)
    assert s.shore_available and s.loc_fscore_shore == 0.0
    assert s.loc_fscore == 1.0


def test_rule4_without_shoreline_folder_is_unavailable_and_warns(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    preds, labels = _shore_case(tmp_path)
    with caplog.at_level(logging.WARNING, logger="sarvessel.evaluation.scoring"):
        s = score(preds, labels, shoreline_root=None)
    assert not s.shore_available and s.loc_fscore_shore == 0.0
    assert "close-to-shore F1 is unavailable" in caplog.text


def test_rule4_missing_shoreline_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(LabelsError, match=r"A_shoreline\.npy: shoreline file not found"):
        score(_preds(("A", 0, 0)), _labels(("A", 0, 0)), shoreline_root=tmp_path)


# --- rules 5 and 6: classification over matched pairs ------------------------------------

def test_rule5_vessel_f1_skips_nan_labels() -> None:
    # pairs (label, prediction): T/T TP, T/F FN, F/T FP, NaN/F skipped, F/F TN,
    # T/NaN FN and F/NaN FP (a missing prediction is wrong either way); plus an unmatched
    # prediction (detection FP, not a vessel-task FP)
    rows = [(True, 1.0), (True, 0.0), (False, 1.0), (NAN, 0.0), (False, 0.0), (True, NAN),
            (False, NAN)]
    preds = _preds(*[("A", 100 * i, 0, p, 0.0, 100.0) for i, (_, p) in enumerate(rows)],
                   ("A", 5000, 5000, 1.0, 0.0, 100.0))
    labels = _labels(*[("A", 100 * i, 1, "HIGH", 10.0, g, 0.0, 100.0)
                       for i, (g, _) in enumerate(rows)])
    s = score(preds, labels)
    assert s.tp == 7
    assert s.vessel_counts == (1, 2, 2)
    assert s.vessel_fscore == pytest.approx(2 * (1 / 3) * (1 / 3) / (2 / 3))  # 1/3


def test_rule6_fishing_f1_only_over_vessel_labels() -> None:
    # (label is_vessel, label is_fishing, predicted is_fishing)
    rows = [(True, True, True),    # TP
            (True, False, True),   # FP
            (True, NAN, False),    # fishing unknown: skipped
            (False, True, False),  # not a vessel: skipped (would be a FN)
            (NAN, True, False),    # vessel unknown: skipped
            (True, True, False)]   # FN
    preds = _preds(*[("A", 100 * i, 0, 1.0, f, 100.0) for i, (_, _, f) in enumerate(rows)])
    labels = _labels(*[("A", 100 * i, 1, "HIGH", 10.0, v, f, 100.0)
                       for i, (v, f, _) in enumerate(rows)])
    s = score(preds, labels)
    assert s.fishing_counts == (1, 1, 1)
    assert s.fishing_fscore == pytest.approx(0.5)


# --- rule 7: length ------------------------------------------------------------------------

@pytest.mark.parametrize(("pairs", "expected", "n"), [
    # (label, prediction) metres: errors 0.1, |450-500|/500 = 0.1, |500-200|/200 = 1.5, NaN skip
    ([(100, 110), (600, 450), (200, 1000), (NAN, 50)], 1 - 1.7 / 3, 3),
    ([(10, 100)], 0.0, 1),        # mean error 9 is capped at 1
    ([(NAN, 100), (NAN, 5)], 0.0, 0),  # no label lengths: 0
    ([(700, 900)], 1.0, 1),       # both capped at 500: no error
])
def test_rule7_length_accuracy(pairs: list, expected: float, n: int) -> None:
    preds = _preds(*[("A", 100 * i, 0, 1.0, 0.0, p) for i, (_, p) in enumerate(pairs)])
    labels = _labels(*[("A", 100 * i, 0, "HIGH", 10.0, 1.0, 0.0, g)
                       for i, (g, _) in enumerate(pairs)])
    s = score(preds, labels)
    assert s.length_acc == pytest.approx(expected)
    assert s.n_length_pairs == n


def test_rule7_nan_predicted_length_gives_nan_as_upstream(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    with caplog.at_level(logging.WARNING, logger="sarvessel.evaluation.scoring"):
        s = score(_preds(("A", 0, 0, 1.0, 0.0, NAN)), _labels(("A", 0, 0)))
    assert math.isnan(s.length_acc) and math.isnan(s.aggregate)
    assert "no vessel_length_m" in caplog.text


# --- rule 8: aggregate -------------------------------------------------------------------

def test_rule8_aggregate(tmp_path: Path) -> None:
    _save_shoreline(tmp_path, "A", [np.stack([np.zeros(201), np.arange(201)], 1)])
    preds = _preds(("A", 100, 101, 1.0, 1.0, 120.0), ("A", 1000, 1001, 1.0, 1.0, 50.0),
                   ("A", 3000, 3000, 1.0, 0.0, 50.0))
    labels = _labels(("A", 100, 100, "HIGH", 1.0, 1.0, 1.0, 100.0),
                     ("A", 1000, 1000, "HIGH", 10.0, 1.0, 0.0, 50.0))
    s = score(preds, labels, shoreline_root=tmp_path)
    assert s.loc_fscore == pytest.approx(0.8)        # TP 2, FP 1
    assert s.loc_fscore_shore == pytest.approx(1.0)  # the 1 km label, the pred 100 px off shore
    assert s.vessel_fscore == pytest.approx(1.0)
    assert s.fishing_fscore == pytest.approx(2 / 3)  # TP 1, FP 1
    assert s.length_acc == pytest.approx(0.9)        # errors 0.2 and 0
    assert s.aggregate == pytest.approx(0.8 * (1 + 0.9 + 1 + 2 / 3 + 1) / 5)  # 0.730667
    assert s.as_dict()["aggregate"] == s.aggregate


def test_no_predictions_scores_zero() -> None:
    s = score(_preds(), _labels(("A", 0, 0)))
    assert (s.aggregate, s.loc_fscore, s.tp, s.fp, s.fn) == (0.0, 0.0, 0, 0, 0)


# --- CSV files and bad input ------------------------------------------------------------

def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r in rows:
            w.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in r])
    return path


def _pred_csv(path: Path, rows: list[list], extra: bool = True) -> Path:
    header = list(PREDICTION_COLUMNS) + (["score", "note"] if extra else [])
    return _write_csv(path, header, [r + ([0.9, "x"] if extra else []) for r in rows])


def _label_csv(path: Path, rows: list[list]) -> Path:
    return _write_csv(path, ["detect_id", *LABEL_COLUMNS], [["d", *r] for r in rows])


def test_csv_round_trip_matches_column_scoring(tmp_path: Path) -> None:
    pred = _pred_csv(tmp_path / "p.csv", [["A", 101, 100, "True", "False", 110],
                                          ["A", 900, 900, "False", "False", ""]])
    lab = _label_csv(tmp_path / "l.csv", [["A", 100, 100, "True", "", 100, "HIGH", 1.5],
                                          ["A", 500, 500, "False", "False", "", "LOW", ""]])
    cols = read_predictions_csv(pred)
    assert set(cols) == set(PREDICTION_COLUMNS) | {"score"}  # extra column ignored
    labels = read_labels_csv(lab)
    assert np.isnan(labels["is_fishing"][0]) and labels["is_vessel"][1] == 0.0
    s = score_csv(pred, lab)
    assert s.as_dict(scenes=False) == score(cols, labels).as_dict(scenes=False)
    assert (s.tp, s.fp, s.fn) == (1, 1, 0) and s.length_acc == pytest.approx(0.9)


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "p.csv", ["scene_id", "detect_scene_row", "detect_scene_column",
                                           "is_vessel", "vessel_length_m"], [["A", 1, 2, 1, 3]])
    with pytest.raises(LabelsError, match=r"p\.csv: predictions CSV lacks column\(s\) is_fishing"):
        read_predictions_csv(path)


def test_empty_labels(tmp_path: Path) -> None:
    header_only = _label_csv(tmp_path / "l.csv", [])
    with pytest.raises(LabelsError, match=r"l\.csv: no labels \(the file has only a header\)"):
        read_labels_csv(header_only)
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    with pytest.raises(LabelsError, match=r"blank\.csv: file is empty \(no header line\)"):
        read_labels_csv(blank)
    with pytest.raises(LabelsError, match=r"nope\.csv: no such file"):
        read_labels_csv(tmp_path / "nope.csv")


def test_non_numeric_value_names_line_and_column(tmp_path: Path) -> None:
    path = _pred_csv(tmp_path / "p.csv", [["A", 1, 2, "True", "False", 3],
                                          ["A", "abc", 2, "True", "False", 3]])
    with pytest.raises(LabelsError, match=r"p\.csv, line 3: column detect_scene_row has 'abc', "
                                          r"expected a finite number"):
        read_predictions_csv(path)


def test_bad_boolean_and_bad_field_count(tmp_path: Path) -> None:
    path = _pred_csv(tmp_path / "p.csv", [["A", 1, 2, "yes", "False", 3]])
    with pytest.raises(LabelsError, match=r"line 2: column is_vessel has 'yes', expected "
                                          r"True/False/1/0 or empty"):
        read_predictions_csv(path)
    bad = tmp_path / "q.csv"
    bad.write_text(",".join(PREDICTION_COLUMNS) + "\nA,1,2,True\n")
    with pytest.raises(LabelsError, match=r"q\.csv, line 2: 4 fields, the header has 6"):
        read_predictions_csv(bad)


def test_unknown_confidence(tmp_path: Path) -> None:
    path = _label_csv(tmp_path / "l.csv", [["A", 1, 2, "True", "False", 3, "VERY_HIGH", 1.0]])
    with pytest.raises(LabelsError, match=r"l\.csv, line 2: column confidence has 'VERY_HIGH', "
                                          r"expected one of HIGH, LOW, MEDIUM"):
        read_labels_csv(path)
    cols = _labels(("A", 0, 0, "high"))
    with pytest.raises(LabelsError, match="confidence has 'high'"):
        score(_preds(("A", 0, 0)), cols)


def test_cli_prints_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture
                                          ) -> None:
    pred = _pred_csv(tmp_path / "p.csv", [["A", 101, 100, "True", "False", 110]])
    lab = _label_csv(tmp_path / "l.csv", [["A", 100, 100, "True", "False", 100, "HIGH", 1.5]])
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    out = tmp_path / "out" / "s.json"
    args = parser.parse_args(["score", str(pred), str(lab), "--json", str(out)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "aggregate" in text and "unavailable" in text
    data = json.loads(out.read_text())
    assert data["loc_fscore"] == 1.0 and data["length_acc"] == pytest.approx(0.9)
    assert data["aggregate"] == pytest.approx(1.0 * (1 + 0.9 + 1 + 0 + 0) / 5)
    assert data["scenes"][0]["scene_id"] == "A" and data["shore_available"] is False


# --- comparison with upstream's algorithm (pandas) ---------------------------------------
# A re-statement, in pandas, of reference/metric.py (DIUx-xView/xview3-reference:
# evaluate_xview_metric → drop_low_confidence_preds → score), keeping its data flow: pandas
# read_csv dtypes, index labels after reset_index, .values/.tolist() indexing, isinstance NaN
# checks, Python min, dense KDTree distance matrix. The one change: a scene left without
# predictions returns no matches, where upstream's distance_matrix raises.

def _ref_match(p, g, tol, costly):
    if len(p) == 0:
        return []
    a = np.array(list(zip(p["detect_scene_row"], p["detect_scene_column"], strict=True)))
    b = np.array(list(zip(g["detect_scene_row"], g["detect_scene_column"], strict=True)))
    d = distance_matrix(a, b, p=2) * 10
    if costly:
        d[d > tol] = 9999999 * 10
    r, c = linear_sum_assignment(d)
    return [(p.index[i], g.index[j]) for i, j in zip(r, c, strict=True) if d[i, j] < tol]


def _ref_near_shore(df, root, scene_id, tol_km):
    contours = np.load(f"{root}/{scene_id}_shoreline.npy", allow_pickle=True)
    if len(contours) == 0 or len(df) == 0:
        return df.iloc[[]]
    t1 = KDTree(np.array(np.vstack(contours)))
    t2 = KDTree(np.array([df["detect_scene_row"], df["detect_scene_column"]]).transpose())
    dense = t1.sparse_distance_matrix(t2, tol_km * 1000 / 10, p=2).toarray()
    dense[dense == 0] = 9999999
    return df.iloc[np.where(np.min(dense, axis=0) != 9999999)]


def _ref_prf(tp, fp, fn):
    try:
        p = tp / (tp + fp)
    except ZeroDivisionError:
        p = 0
    try:
        r = tp / (tp + fn)
    except ZeroDivisionError:
        r = 0
    try:
        f = (2 * p * r) / (p + r)
    except ZeroDivisionError:
        f = 0
    return f


def _ref_class(pv, gv, pairs, vessel=None):
    tp = fp = fn = 0
    for pi, gi in pairs:
        if vessel is not None and not vessel[gi]:
            continue
        if isinstance(gv[gi], float) and np.isnan(gv[gi]):
            continue
        if pv[pi] == gv[gi]:
            tp += bool(gv[gi])
        elif gv[gi]:
            fn += 1
        elif gv[gi] == False:  # noqa: E712 (upstream's test)
            fp += 1
    return _ref_prf(tp, fp, fn)


def _reference(pred_csv, gt_csv, root, *, score_all=False, drop_low=True, costly=True,
               tol=200, shore_tol=2):
    pd = pytest.importorskip("pandas")
    inf = pd.read_csv(pred_csv, index_col=False)
    gt = pd.read_csv(gt_csv, index_col=False)
    gt = gt[gt["scene_id"].isin(inf["scene_id"].unique())].reset_index()
    if not score_all:
        if drop_low:
            low = []
            for sid in gt["scene_id"].unique():
                ps, gs = inf[inf["scene_id"] == sid], gt[gt["scene_id"] == sid]
                low_g = list(gs[gs["confidence"] == "LOW"].index)
                low += [pi for pi, gi in _ref_match(ps, gs, tol, costly) if gi in low_g]
            inf = inf.drop(index=low).reset_index()
        gt = gt[gt["confidence"].isin(["HIGH", "MEDIUM"])].reset_index()
    pairs, fp, fn = [], 0, 0
    for sid in gt["scene_id"].unique():
        ps, gs = inf[inf["scene_id"] == sid], gt[gt["scene_id"] == sid]
        m = _ref_match(ps, gs, tol, costly)
        pairs += m
        fp += len(ps) - len(m)
        fn += len(gs) - len(m)
    loc = _ref_prf(len(pairs), fp, fn)
    shore = 0
    if shore_tol and root:
        stp = sfp = sfn = 0
        for sid in gt["scene_id"].unique():
            ps = inf[inf["scene_id"] == sid]
            gs = gt[(gt["scene_id"] == sid) & (gt["distance_from_shore_km"] <= shore_tol)]
            ps = _ref_near_shore(ps, root, sid, shore_tol + tol / 1000)
            if len(gs) > 0 and len(ps) > 0:
                m = _ref_match(ps, gs, tol, costly)
                stp, sfp, sfn = stp + len(m), sfp + len(ps) - len(m), sfn + len(gs) - len(m)
        if len(gt[gt["scene_id"].isin(list(inf["scene_id"].unique()))
                  & (gt["distance_from_shore_km"] <= shore_tol)]) > 0:
            shore = _ref_prf(stp, sfp, sfn)
    vessel_inds = gt["is_vessel"].isin([True])
    vessel = _ref_class(inf["is_vessel"].values, gt["is_vessel"].values, pairs)
    fishing = _ref_class(inf["is_fishing"].values, gt["is_fishing"].values, pairs, vessel_inds)
    pl, gl = inf["vessel_length_m"].tolist(), gt["vessel_length_m"].tolist()
    err, n = 0.0, 0.0
    for pi, gi in pairs:
        if isinstance(gl[gi], float) and np.isnan(gl[gi]):
            continue
        g, p = min(gl[gi], 500), min(pl[pi], 500)
        err += np.abs(p - g) / g
        n += 1
    length = 0 if n == 0 else 1.0 - min(err / n, 1.0)
    agg = loc * (1 + length + vessel + fishing + shore) / 5
    return {"loc_fscore": loc, "loc_fscore_shore": shore, "vessel_fscore": vessel,
            "fishing_fscore": fishing, "length_acc": length, "aggregate": agg}


def _random_case(rng: np.random.Generator, root: Path, nan_lengths: bool
                 ) -> tuple[list[list], list[list]]:
    """Dense scenes (conflicting matches, distances straddling 200 m) with all label kinds."""
    bools = np.array(["True", "False", ""], object)
    preds, labels = [], []
    for k in range(4):
        sid = f"s{k}"
        n = int(rng.integers(3, 40))
        # clusters of points 0-80 px apart, clusters up to 1500 px apart: both conflicting
        # matches and scenes partly near, partly far from the shoreline
        centres = rng.integers(80, 1580, (5, 2))  # >= 80: jitter keeps positions >= 0
        pts = centres[rng.integers(0, 5, n)] + rng.integers(-40, 41, (n, 2))
        for r, c in pts:
            labels.append([sid, int(r), int(c), rng.choice(bools, p=[.5, .35, .15]),
                           rng.choice(bools, p=[.3, .5, .2]),
                           "" if rng.random() < .2 else float(rng.choice([0.5, 1]) *
                                                              rng.integers(10, 700)),
                           rng.choice(["HIGH", "MEDIUM", "LOW"], p=[.45, .25, .3]),
                           rng.choice(["", 2.0, float(rng.uniform(0, 4))], p=[.1, .1, .8])])
        hits = pts[rng.random(n) < .8]
        jitter = rng.choice([0, 0, 0, 3, 5, 12, 16, 19, 20, 21, 30], (len(hits), 2))
        extra = rng.integers(0, 1500, (int(rng.integers(0, 8)), 2))
        for r, c in np.concatenate([hits + jitter * rng.choice([-1, 1], (len(hits), 2)), extra]):
            # lengths near the labels' (10-600 m) so the mean error stays below its cap of 1
            length = ("" if nan_lengths and rng.random() < .05
                      else float(rng.integers(10, 600)) * rng.choice([1, 0.5]))
            preds.append([sid, int(r), int(c), rng.choice(["True", "False"]),
                          rng.choice(["True", "False", ""], p=[.45, .45, .1]), length])
        on_shore = [[int(r), int(c)] for _, r, c, *_ in preds[-3:]]  # distance-0 shoreline points
        contours = [rng.integers(-50, 700, (int(rng.integers(1, 40)), 2)) for _ in range(2)]
        if k == 3 and rng.random() < .5:
            contours = []  # a scene without shoreline
        _save_shoreline(root, sid, [*contours, np.array(on_shore)] if k % 2 else contours)
    labels.append(["unpredicted", 5, 5, "True", "True", 50.0, "HIGH", 1.0])
    preds.append(["unlabelled", 5, 5, "True", "True", 50.0])
    _save_shoreline(root, "empty", [])
    return preds, labels


@pytest.mark.parametrize("mode", [
    {}, {"drop_low": False}, {"all_confidences": True}, {"costly_dist": False},
    {"shore": False},
])
def test_matches_upstream_algorithm_on_random_cases(tmp_path: Path, mode: dict) -> None:
    mode = dict(mode)
    use_shore = mode.pop("shore", True)
    ref_kw = {"drop_low": mode.get("drop_low", True),
              "score_all": mode.get("all_confidences", False),
              "costly": mode.get("costly_dist", True)}
    checked = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        root = tmp_path / f"shore{seed}"
        root.mkdir()
        preds, labels = _random_case(rng, root, nan_lengths=seed % 4 == 3)
        p = _pred_csv(tmp_path / f"p{seed}.csv", preds, extra=seed % 2 == 0)
        g = _label_csv(tmp_path / f"g{seed}.csv", labels)
        shore_root = root if use_shore else None
        ref = _reference(p, g, shore_root, **ref_kw)
        ours = score_csv(p, g, shoreline_root=shore_root, **mode).as_dict()
        for key, value in ref.items():
            assert ours[key] == pytest.approx(value, rel=1e-12, abs=1e-12, nan_ok=True), \
                (seed, key)
        checked += ours["tp"] > 0 and ours["loc_fscore_shore"] > 0 or not use_shore
    assert checked >= 6  # the cases exercise matching and the shore metric
