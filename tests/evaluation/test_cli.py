"""``sarvessel score`` and ``sarvessel eval`` given hostile options and paths (issue #34, 3 and 7):
one line and exit 2, before any work, never a traceback, nothing written."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PRED = ("scene_id,detect_scene_row,detect_scene_column,is_vessel,is_fishing,vessel_length_m,"
        "score\n")
LABELS = ("scene_id,detect_scene_row,detect_scene_column,is_vessel,is_fishing,vessel_length_m,"
          "confidence,distance_from_shore_km\n")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sarvessel", *args], capture_output=True,
                          text=True, timeout=300)


def assert_one_line(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in proc.stderr, proc.stderr


@pytest.fixture
def csvs(tmp_path: Path) -> tuple[Path, Path]:
    pred, labels = tmp_path / "p.csv", tmp_path / "l.csv"
    pred.write_text(PRED + "A,10,10,True,False,50,0.9\n")
    labels.write_text(LABELS + "A,11,10,True,False,60,HIGH,5\n")
    return pred, labels


def test_score_json_on_a_folder_or_under_a_file_is_refused_before_scoring(csvs, tmp_path):
    pred, labels = csvs
    proc = run("score", str(pred), str(labels), "--json", str(tmp_path))
    assert_one_line(proc, f"--json {tmp_path}: is a folder; an output file is written here")
    assert proc.stdout == ""  # refused before the score table
    proc = run("score", str(pred), str(labels), "--json", str(pred / "s.json"))
    assert_one_line(proc, f"--json {pred / 's.json'}: {pred} is a file, not a folder")
    proc = run("score", str(pred), str(labels), "--json", str(tmp_path / "new" / "s.json"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "new" / "s.json").is_file()


@pytest.mark.parametrize(("pred_row", "label_row", "needle"), [
    ("A,-3,10,True,False,50,0.9", "A,11,10,True,False,60,HIGH,5",
     "column detect_scene_row has '-3', expected a number >= 0"),
    ("A,10,10,True,False,-50,0.9", "A,11,10,True,False,60,HIGH,5",
     "column vessel_length_m has '-50', expected a number >= 0"),
    ("A,10,10,True,False,50,0.9", "A,11,-1,True,False,60,HIGH,5",
     "l.csv, line 2: column detect_scene_column has '-1', expected a number >= 0"),
])
def test_score_refuses_negative_positions_and_lengths(tmp_path, pred_row, label_row, needle):
    (tmp_path / "p.csv").write_text(PRED + pred_row + "\n")
    (tmp_path / "l.csv").write_text(LABELS + label_row + "\n")
    assert_one_line(run("score", str(tmp_path / "p.csv"), str(tmp_path / "l.csv")), needle)


@pytest.mark.parametrize(("option", "value", "needle"), [
    ("--distance-tolerance-m", "-5", "distance tolerance (m) must be a finite number > 0, "
                                     "got -5.0"),
    ("--distance-tolerance-m", "nan", "distance tolerance (m) must be a finite number > 0"),
    ("--shore-tolerance-km", "-1", "shore tolerance (km) must be a finite number >= 0"),
    ("--shore-tolerance-km", "nan", "shore tolerance (km) must be a finite number >= 0"),
])
def test_score_refuses_negative_or_nan_tolerances(csvs, option, value, needle):
    pred, labels = csvs
    assert_one_line(run("score", str(pred), str(labels), option, value), needle)


def _shoreline(tmp_path: Path, payload: bytes) -> Path:
    root = tmp_path / "shore"
    root.mkdir()
    (root / "A_shoreline.npy").write_bytes(payload)
    return root


def test_score_with_a_corrupt_or_hostile_shoreline_says_so_in_one_line(csvs, tmp_path):
    """A corrupt .npy once ended in an UnpicklingError traceback; a pickle that runs code
    (np.load(allow_pickle=True) would run it) is refused without running it."""
    pred, labels = csvs
    good = tmp_path / "good.npy"
    np.save(good, np.array([np.zeros((3, 2)), np.ones((2, 2))], dtype=object),
            allow_pickle=True)
    corrupt = good.read_bytes()[:-40] + b"\x00garbage" * 5
    root = _shoreline(tmp_path, corrupt)
    assert_one_line(run("score", str(pred), str(labels), "--shoreline-dir", str(root)),
                    "A_shoreline.npy: cannot read shoreline contours")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    header = good.read_bytes()[: good.read_bytes().index(b"\n") + 1]  # an object-array header
    (root / "A_shoreline.npy").write_bytes(header + pickle.dumps(Evil(), protocol=3))
    assert_one_line(run("score", str(pred), str(labels), "--shoreline-dir", str(root)),
                    "A_shoreline.npy: cannot read shoreline contours",
                    "is not allowed in a shoreline file")
    assert not marker.exists()
    (root / "A_shoreline.npy").write_bytes(good.read_bytes())
    proc = run("score", str(pred), str(labels), "--shoreline-dir", str(root))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("args", "needle"), [
    (["--iou", "2"], "--iou must be in [0, 1], got 2.0"),
    (["--overlap", "-5"], "--overlap must be >= 0, got -5"),
    (["--conf", "1.5"], "--conf must be in (0, 1), got 1.5"),
    (["--conf", "nan"], "--conf must be in (0, 1), got nan"),
    (["--eval-conf", "0"], "--eval-conf must be in (0, 1), got 0.0"),
    (["--threads", "-3"], "--threads must be >= 1, got -3"),
    (["--input-scale", "0"], "--input-scale must be in [0.1, 10], got 0.0"),
])
def test_eval_refuses_nonsense_options_before_loading_anything(tmp_path, args, needle):
    """The model and data do not exist: the option is what the one line must be about."""
    proc = run("eval", str(tmp_path / "none.onnx"), "--data", str(tmp_path / "nodata"), *args)
    assert_one_line(proc, needle)


@pytest.mark.parametrize("option", ["--json", "--pr-png", "--gallery"])
def test_eval_outputs_on_a_folder_or_under_a_file_are_refused_before_any_work(tmp_path,
                                                                              option):
    """``--pr-png DIR`` once wrote DIR.png; the others raised IsADirectoryError or
    FileExistsError after the whole evaluation."""
    folder = tmp_path / "dir"
    folder.mkdir()
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    base = ["eval", str(tmp_path / "none.onnx"), "--data", str(tmp_path / "nodata")]
    assert_one_line(run(*base, option, str(folder)),
                    f"{option} {folder}: is a folder; an output file is written here")
    assert not (tmp_path / "dir.png").exists()
    assert_one_line(run(*base, option, str(a_file / "x.png")),
                    f"{option} {a_file / 'x.png'}: {a_file} is a file, not a folder")


def test_pr_curve_is_written_to_exactly_the_path_given(tmp_path):
    from sarvessel.evaluation.ap import ImageDetections, ImageTruth, evaluate_ap, save_pr_curve

    rep = evaluate_ap([ImageDetections([[0, 0, 10, 10]], [0.9], [0])],
                      [ImageTruth([[0, 0, 10, 10]], [0])], nc=1)
    out = save_pr_curve(rep, tmp_path / "curve")  # no suffix: matplotlib would add .png
    assert out == tmp_path / "curve" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve"]


@pytest.mark.parametrize(("args", "needle"), [
    (["--threads", "0"], "--threads must be >= 1, got 0"),
    (["--json", "."], "--json .: is a folder; an output file is written here"),
])
def test_eval_proxy_checks_options_and_output_before_any_work(tmp_path, args, needle):
    proc = subprocess.run([sys.executable, "-m", "sarvessel", "eval-proxy",
                           str(tmp_path / "none.onnx"), *args], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert_one_line(proc, needle)
