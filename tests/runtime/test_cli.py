"""The command line as users run it: a real subprocess, real files, the messages they see."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sarvessel", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for n in needles:
        assert n in proc.stderr, proc.stderr


def test_help_lists_the_commands():
    proc = run("--help")
    assert proc.returncode == 0
    for cmd in ("demo", "detect", "bench", "synth", "score"):
        assert cmd in proc.stdout


def test_demo_prints_score_and_throughput_and_writes_outputs(tmp_path):
    proc = run("demo", "--size", "1536", "--out", str(tmp_path / "demo"), "--backend", "cfar")
    assert proc.returncode == 0, proc.stderr
    assert "aggregate" in proc.stdout and "MPx/s" in proc.stdout
    (summary,) = (tmp_path / "demo").glob("*_summary.json")
    s = json.loads(summary.read_text())
    assert s["tiles_run"] > 0 and s["mpx_per_s"] > 0
    stem = summary.name.removesuffix("_summary.json")
    for suffix in (".csv", ".geojson", "_quicklook.png"):
        assert (tmp_path / "demo" / f"{stem}{suffix}").stat().st_size > 0
    assert not list((tmp_path / "demo").glob("*.journal.jsonl"))


def test_detect_missing_band(tmp_path):
    scene = tmp_path / "S1_v"
    scene.mkdir()
    tifffile.imwrite(scene / "VV_dB.tif", np.zeros((64, 64), np.float32))
    proc = run("detect", str(scene), "--out", str(tmp_path / "o"), "--backend", "cfar")
    assert_user_error(proc, "missing band VH_dB.tif", str(scene))
    assert not (tmp_path / "o" / "S1_v.csv").exists()


def test_detect_truncated_tiff(tmp_path):
    scene = tmp_path / "S2_v"
    scene.mkdir()
    for b in ("VV_dB", "VH_dB"):
        tifffile.imwrite(scene / f"{b}.tif", np.zeros((512, 512), np.float32), tile=(128, 128))
    raw = (scene / "VV_dB.tif").read_bytes()
    (scene / "VV_dB.tif").write_bytes(raw[:5000])
    proc = run("detect", str(scene), "--out", str(tmp_path / "o"), "--backend", "cfar")
    assert_user_error(proc, "VV_dB.tif")


def test_detect_all_nodata_scene_writes_nothing(tmp_path):
    scene = tmp_path / "S3_v"
    scene.mkdir()
    for b in ("VV_dB", "VH_dB"):
        tifffile.imwrite(scene / f"{b}.tif", np.full((300, 300), -32768, np.float32))
    proc = run("detect", str(scene), "--out", str(tmp_path / "o"), "--backend", "cfar")
    assert_user_error(proc, "no valid pixels")
    assert not (tmp_path / "o" / "S3_v.csv").exists()


def test_detect_nan_pixels_are_nodata(tmp_path):
    scene = tmp_path / "S4_v"
    scene.mkdir()
    vv = np.full((300, 300), -22.0, np.float32)
    vv[:, :150] = np.nan
    for b in ("VV_dB", "VH_dB"):
        tifffile.imwrite(scene / f"{b}.tif", vv)
    proc = run("detect", str(scene), "--out", str(tmp_path / "o"), "--backend", "cfar")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o" / "S4_v.csv").read_text().count("\n") == 1  # header, no detections


def test_score_with_missing_column(tmp_path):
    (tmp_path / "p.csv").write_text("scene_id,detect_scene_row\nA,1\n")
    (tmp_path / "l.csv").write_text("scene_id\nA\n")
    proc = run("score", str(tmp_path / "p.csv"), str(tmp_path / "l.csv"))
    assert_user_error(proc, "p.csv", "lacks column")


def test_unknown_backend_is_an_argparse_error(tmp_path):
    proc = run("detect", str(tmp_path), "--backend", "gpu")
    assert proc.returncode == 2 and "invalid BackendKind value" in proc.stderr


@pytest.mark.parametrize(("bad", "message"), [
    (["--overlap", "-3"], "--overlap must be between 0 and half the 512 px tile (256), got -3"),
    (["--overlap", "511"], "got 511"),  # once a 1 px step: ~263k tiles for 1 MPx
    (["--batch", "0"], "--batch must be >= 1, got 0"),
])
def test_bad_numbers(tmp_path, bad, message):
    scene = tmp_path / "S5_v"
    scene.mkdir()
    for b in ("VV_dB", "VH_dB"):
        tifffile.imwrite(scene / f"{b}.tif", np.zeros((64, 64), np.float32))
    proc = run("detect", str(scene), "--backend", "cfar", *bad)
    assert_user_error(proc, message)
    proc = run("bench", str(scene), "--backend", "cfar", *bad)
    assert_user_error(proc, message)


def test_bench_refuses_a_negative_repeat_and_a_folder_as_json(tmp_path):
    proc = run("bench", str(tmp_path), "--repeat", "-1")
    assert_user_error(proc, "--repeat must be >= 0, got -1")
    proc = run("bench", str(tmp_path), "--json", str(tmp_path))
    assert_user_error(proc, f"{tmp_path}: is a folder; an output file is written here")


def _small_scene(tmp_path: Path, name: str = "S6_v") -> Path:
    scene = tmp_path / name
    scene.mkdir()
    vv = np.full((300, 300), -22.0, np.float32)
    for b in ("VV_dB", "VH_dB"):
        tifffile.imwrite(scene / f"{b}.tif", vv)
    return scene


def test_unusable_outputs_are_refused_before_the_scene_runs(tmp_path):
    """Each once gave a traceback, two of them only after the whole scene had run."""
    scene = _small_scene(tmp_path)
    (tmp_path / "afile").write_text("x")
    proc = run("detect", str(scene), "--out", str(tmp_path / "afile"), "--backend", "cfar")
    assert_user_error(proc, "afile: exists and is not a folder")
    out = tmp_path / "o"
    (out / "S6_v.csv").mkdir(parents=True)
    proc = run("detect", str(scene), "--out", str(out), "--backend", "cfar")
    assert_user_error(proc, "S6_v.csv: is a folder; an output file is written here")
    assert not (out / "S6_v.journal.jsonl").exists()  # refused before any tile ran


def test_bad_labels_are_reported_before_the_scene_runs(tmp_path):
    scene = _small_scene(tmp_path)
    proc = run("detect", str(scene), "--out", str(tmp_path / "o"), "--backend", "cfar",
               "--labels", str(tmp_path / "nope.csv"))
    assert_user_error(proc, "nope.csv")
    assert not (tmp_path / "o" / "S6_v.csv").exists()  # once written, then the error


def test_detect_dot_and_stale_temporaries_of_a_killed_run(tmp_path):
    """``detect .`` once crashed after the whole run (scene id ""); a SIGKILL between writing
    and renaming an output left a temporary nothing removed."""
    scene = _small_scene(tmp_path)
    out = tmp_path / "o"
    out.mkdir()
    stale = out / ".S6_v.csv.999999999.tmp"  # no such pid
    stale.write_text("half a file")
    mine = out / ".other.csv.999999999.tmp"  # not one of this scene's outputs: kept
    mine.write_text("x")
    proc = run("detect", ".", "--out", str(out), "--backend", "cfar", cwd=scene)
    assert proc.returncode == 0, proc.stderr
    # no GeoJSON: the scene has no georeferencing (issue #34, 7), and the summary says so
    assert sorted(p.name for p in out.iterdir()) == [
        ".other.csv.999999999.tmp", "S6_v.csv", "S6_v_quicklook.png", "S6_v_summary.json"]
    summary = json.loads((out / "S6_v_summary.json").read_text())
    assert summary["scene_id"] == "S6_v"
    assert "no GeoJSON: the scene has no georeferencing" in summary["notes"][0]


def test_detect_labels_with_a_corrupt_shoreline_is_refused_before_the_scene_runs(tmp_path):
    """Once an UnpicklingError traceback, after the outputs were written (issue #34, 3)."""
    root = tmp_path / "scenes"
    root.mkdir()
    scene = _small_scene(root)
    (root / "shoreline").mkdir()
    (root / "shoreline" / "S6_v_shoreline.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    labels = root / "labels.csv"
    labels.write_text("scene_id,detect_scene_row,detect_scene_column,is_vessel,is_fishing,"
                      "vessel_length_m,confidence,distance_from_shore_km\n"
                      "S6_v,10,10,True,False,50,HIGH,1\n")
    out = tmp_path / "o"
    proc = run("detect", str(scene), "--out", str(out), "--backend", "cfar", "--labels",
               str(labels))
    assert_user_error(proc, "S6_v_shoreline.npy: cannot read shoreline contours")
    assert not out.exists() or not any(out.iterdir())  # refused before any output


@pytest.mark.parametrize(("args", "message"), [
    (["--backend", "cfar", "--model", "m.onnx"],
     "--model is for network backends; --backend cfar takes none"),
    (["--backend", "cfar", "--conf", "0.5"],
     "--conf is for network backends; --backend cfar has no score threshold"),
    (["--conf", "1.5"], "--conf must be in (0, 1), got 1.5"),
    (["--threads", "-3"], "--threads must be >= 1, got -3"),
])
def test_detect_refuses_options_that_would_be_ignored_or_mean_nothing(tmp_path, args, message):
    scene = _small_scene(tmp_path)
    proc = run("detect", str(scene), "--out", str(tmp_path / "o"), *args)
    assert_user_error(proc, message)
    assert not (tmp_path / "o" / "S6_v.csv").exists()


def test_scene_ids_are_printed_as_they_are_not_highlighted_or_read_as_markup(tmp_path):
    """rich coloured "0x8000" inside a scene id as a hex number, and a "[...]" in it would
    be read as markup (issue #34, 9)."""
    scene = _small_scene(tmp_path, name="S_0x8000_[v]")
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "sarvessel", "detect", str(scene), "--out",
                           str(tmp_path / "o"), "--backend", "cfar"], capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "S_0x8000_[v]" in proc.stdout, proc.stdout
