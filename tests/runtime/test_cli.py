"""The command line as users run it: a real subprocess, real files, the messages they see."""

from __future__ import annotations

import json
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


@pytest.mark.parametrize("bad", [["--overlap", "-3"], ["--batch", "0"]])
def test_bad_numbers(tmp_path, bad):
    scene = tmp_path / "S5_v"
    scene.mkdir()
    for b in ("VV_dB", "VH_dB"):
        tifffile.imwrite(scene / f"{b}.tif", np.zeros((64, 64), np.float32))
    proc = run("detect", str(scene), "--backend", "cfar", *bad)
    assert_user_error(proc, "--overlap must be >= 0 and --batch >= 1")
