"""``sarvessel bench`` as users run it: a real subprocess, real files, the messages they see."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sarvessel", *args], capture_output=True,
                          text=True, timeout=600)


def test_bench_scene_report(scene: Path, tmp_path: Path, peer_path: Path) -> None:
    out = tmp_path / "rep"
    proc = run("bench", str(scene), "--report", str(out), "--backends", "noop,cfar,gpu",
               "--peer", str(peer_path), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads((out / "bench.json").read_text())
    runs = {r["label"]: r for r in rep["backends"]}
    assert set(runs) == {"noop", "cfar", "gpu", "peer_64"}
    assert "not in this build" in runs["gpu"]["skipped"]
    assert runs["cfar"]["detections"] > 0 and runs["cfar"]["peak_rss_mb"] > 10
    assert rep["host"]["logical_cpus"] >= 1 and rep["mode"] == "scene"
    assert rep["peers"]["networks"]["peer_64"]["batch8"]["ms_per_tile_median"] > 0
    assert "published_dpu" in rep["fpga"]
    for png in ("throughput", "latency", "energy"):
        with Image.open(out / f"{png}.png") as im:
            assert im.format == "PNG"
    assert "| cfar |" in (out / "bench.md").read_text()
    assert "cfar" in proc.stdout


def test_bench_legacy_table_has_latency_and_rss(scene: Path, tmp_path: Path) -> None:
    proc = run("bench", str(scene), "--backend", "cfar", "--repeat", "1", "--json",
               str(tmp_path / "b.json"))
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "b.json").read_text())
    assert [r["run"] for r in s["runs"]] == ["cold", "warm1"]
    assert s["runs"][1]["latency_ms_per_tile"]["infer"]["samples"] > 0
    assert s["runs"][1]["peak_rss_mb"] > 10


def test_bench_argument_errors(scene: Path) -> None:
    for args, msg in ((["--quick", str(scene)], "generate their own scenes"),
                      (["--quick", "--full"], "choose one"),
                      ([], "give a SCENE"),
                      (["--quick", "--eval-seeds", "5"], "--eval-seeds must be >= 900")):
        proc = run("bench", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert msg in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
