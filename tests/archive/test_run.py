"""Archives on a real LocalCluster (2 worker processes on loopback): the same detections as
single ``detect`` runs, a worker killed mid-scene, bad scenes among good ones, reruns."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import tifffile

from sarvessel.cli import main
from tests.archive.conftest import BACKEND

pytest.importorskip("distributed")
pytestmark = pytest.mark.slow


def test_four_scenes_match_single_runs_and_a_rerun_skips_them(
        client, scene_dirs, single_runs, archive_root, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["detect-many", *map(str, scene_dirs), "--out", str(out), "--scheduler",
            client.scheduler.address, "--labels", str(archive_root / "labels.csv"), *BACKEND]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "4 done" in printed and "aggregate" in printed
    for scene in scene_dirs:  # each scene's file is what `detect` writes, byte for byte
        assert (out / f"{scene.name}.csv").read_text() == single_runs[scene.name]
    combined = _rows(out / "submission.csv")
    assert combined == [r for s in scene_dirs for r in _rows_of(single_runs[s.name])]
    assert len({tuple(r) for r in combined}) == len(combined)
    summary = _strict_json(out / "archive_summary.json")
    assert summary["scenes"] == {"total": 4, "done": 4, "skipped": 0, "failed": 0}
    assert summary["detections"] == len(combined) > 0
    assert summary["mpx_per_s"] > 0 and summary["score"]["loc_fscore"] > 0
    assert not list(out.glob("*.journal.jsonl")) and not list(out.glob("*.lock"))

    before = {p.name: p.stat().st_mtime_ns for p in out.glob("synth*")}
    assert main(args) == 0  # the rerun: nothing to do, no task, same outputs
    again = _strict_json(out / "archive_summary.json")
    assert again["scenes"] == {"total": 4, "done": 0, "skipped": 4, "failed": 0}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("synth*")} == before
    assert _rows(out / "submission.csv") == combined
    assert again["score"] == summary["score"]


def test_bad_scenes_fail_with_detects_message_and_the_others_finish(
        client, scene_dirs, single_runs, tmp_path, capsys):
    bad = _bad_scenes(tmp_path / "bad", scene_dirs[0])
    expected = {}
    for scene in bad:  # what `sarvessel detect` says of each
        assert main(["detect", str(scene), "--out", str(tmp_path / "single"), *BACKEND]) == 2
        err = capsys.readouterr().err.strip()
        expected[str(scene)] = err.removeprefix("sarvessel detect: error: ")
        assert expected[str(scene)] != err
    listing = tmp_path / "scenes.txt"  # scenes from a list file, relative paths, a comment
    listing.write_text("# two good, three bad\n" + "\n".join(
        os.path.relpath(p, tmp_path) for p in [scene_dirs[1], *bad, scene_dirs[2]]) + "\n")
    out = tmp_path / "out"
    rc = main(["detect-many", str(listing), "--out", str(out), "--scheduler",
               client.scheduler.address, *BACKEND])
    assert rc == 1
    printed = capsys.readouterr().out
    summary = _strict_json(out / "archive_summary.json")
    assert summary["scenes"] == {"total": 5, "done": 2, "skipped": 0, "failed": 3}
    assert {f["scene"]: f["message"] for f in summary["failures"]} == expected
    for scene in bad:
        assert scene.name in printed
    for scene in (scene_dirs[1], scene_dirs[2]):
        assert (out / f"{scene.name}.csv").read_text() == single_runs[scene.name]
    assert {r[0] for r in _rows(out / "submission.csv")} <= {scene_dirs[1].name,
                                                             scene_dirs[2].name}


def test_a_worker_killed_mid_scene_resumes_elsewhere_with_no_lost_or_doubled_detection(
        client, scene_dirs, slow_scene, single_runs, tmp_path):
    from sarvessel.archive.cluster import describe
    from sarvessel.archive.run import run_archive
    from sarvessel.archive.scenes import scan_scenes
    from sarvessel.archive.task import ArchiveJob, DetectorSpec, SceneStatus
    from sarvessel.runtime.backends import BackendKind

    out = tmp_path / "out"
    plans = scan_scenes([slow_scene, *scene_dirs[:2]])
    spec = DetectorSpec(BackendKind.ONNX, threads=1)
    det = spec.build()
    job = ArchiveJob(out_dir=str(out), detector=spec, row_delay_s=0.8)
    result: dict = {}

    def run() -> None:
        try:
            result["report"] = run_archive(
                plans, job, detector_name=det.name, detector_fingerprint=det.fingerprint,
                tile_size=det.tile_size,
                connect=lambda: nullcontext((client, describe(client, local=None))))
        except BaseException as exc:  # shown by the assertion below
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    sid = slow_scene.name
    journal = out / f"{sid}.journal.jsonl"
    deadline = time.monotonic() + 90
    while not (journal.exists() and journal.read_text().count("\n") >= 3):  # header + 2 rows
        assert time.monotonic() < deadline, "the slow scene never journaled two rows"
        time.sleep(0.1)
    (address,) = [w for w, keys in client.processing().items()
                  if any(str(k).startswith(f"detect-scene-{sid}-") for k in keys)]
    pid = client.run(os.getpid, workers=[address])[address]
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=120)
    assert not thread.is_alive() and "error" not in result, result.get("error")
    report = result["report"]
    assert [o.status for o in report.outcomes] == [SceneStatus.DONE] * 3
    slow = report.outcomes[0]
    assert slow.tiles_resumed >= 2 and slow.worker != address  # resumed, on another worker
    assert (out / f"{sid}.csv").read_text() == single_runs[sid]
    rows = _rows(out / "submission.csv")
    assert [r for r in rows if r[0] == sid] == _rows_of(single_runs[sid])
    assert len({tuple(r) for r in rows}) == len(rows)
    assert not journal.exists() and not list(out.glob("*.lock"))
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed one


def test_the_command_starts_its_own_cluster(scene_dirs, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "sarvessel", "detect-many", str(scene_dirs[0]),
         str(scene_dirs[3]), "--out", str(out), "--workers", "2", "--dashboard-port", "0",
         *BACKEND], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "LocalCluster" in proc.stdout and "Dask dashboard: http://" in proc.stdout
    summary = _strict_json(out / "archive_summary.json")
    assert summary["cluster"]["local"]["workers"] == 2
    assert summary["cluster"]["local"]["threads"] == 1
    assert summary["scenes"]["done"] == 2


# -- helpers ------------------------------------------------------------------------------


def _rows(path: Path) -> list[list[str]]:
    return _rows_of(path.read_text())


def _rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))[1:]


def _strict_json(path: Path) -> dict:
    def no_constants(name: str):
        raise AssertionError(f"{path}: {name} in JSON")

    return json.loads(path.read_text(), parse_constant=no_constants)


def _bad_scenes(root: Path, good: Path) -> list[Path]:
    """A scene without VH, one with a truncated VV TIFF, one in linear units, not dB."""
    missing, truncated, linear = (root / n for n in ("S1_missing", "S2_truncated",
                                                     "S3_linear"))
    for d in (missing, truncated, linear):
        d.mkdir(parents=True)
    vv = tifffile.imread(good / "VV_dB.tif")
    vh = tifffile.imread(good / "VH_dB.tif")
    tifffile.imwrite(missing / "VV_dB.tif", vv)
    for name, band in (("VV_dB", vv), ("VH_dB", vh)):
        tifffile.imwrite(truncated / f"{name}.tif", band, tile=(256, 256))
        lin = np.where(band > -1000, 10 ** (band / 10), band).astype(np.float32)
        tifffile.imwrite(linear / f"{name}.tif", lin)
    raw = (truncated / "VV_dB.tif").read_bytes()
    (truncated / "VV_dB.tif").write_bytes(raw[: len(raw) // 2])
    return [missing, truncated, linear]
