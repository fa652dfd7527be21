"""The benchmark suite: presets, scenes, the peer export cache, accuracy, and whole runs."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from sarvessel.benchmark.accuracy import xview3_accuracy
from sarvessel.benchmark.peers import PeerUnavailable, check_architecture, export_peers
from sarvessel.benchmark.scenes import XVIEW3_SHAPE, scene_shape
from sarvessel.benchmark.suite import Mode, SuiteSettings, run_suite
from sarvessel.runtime.bench.measure import RunSpec
from sarvessel.runtime.errors import SarvesselError


def test_scene_shapes_keep_the_xview3_aspect() -> None:
    assert scene_shape(700) == XVIEW3_SHAPE == (24_400, 29_400)
    h, w = scene_shape(200)
    assert abs(h * w / 1e6 - 200) < 0.1 and abs(w / h - 29_400 / 24_400) < 1e-3
    with pytest.raises(ValueError):
        scene_shape(0)


def test_presets() -> None:
    q = SuiteSettings.preset("quick", batch=None, threads=3)
    assert q.mode is Mode.QUICK and q.sizes_mpx == (1.0, 2.0, 4.0) and q.threads == 3
    assert q.report == Path("out/bench/quick") and q.batch == 8
    f = SuiteSettings.preset(Mode.FULL)
    assert f.sizes_mpx == (10.0, 50.0, 200.0, 700.0) and f.scene_mpx == 50.0
    assert f.eval_seeds == tuple(range(900, 932)) and f.ssdd_images is None
    assert f.peer_tiles == (640, 512)
    assert f.hw_estimate.name == "estimate.json" and f.ssdd_model.name == "ssdd_w4a4.onnx"
    assert json.dumps(f.to_dict())


def _fake_peer(calls: list) -> types.ModuleType:
    mod = types.ModuleType("sarvessel.model.peer")

    def export_peer_onnx(path: Path, *, tile: int = 640) -> Path:
        calls.append(tile)
        Path(path).write_bytes(b"onnx")
        return Path(path)

    class Cost:
        params, gflops = 3_152_000, 8.8

    mod.export_peer_onnx = export_peer_onnx
    mod.yolov8n = lambda: object()
    mod.count_peer_cost = lambda model, tile=640: Cost()
    return mod


def test_peer_export_is_cached_and_checked(tmp_path: Path, monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setitem(sys.modules, "sarvessel.model.peer", _fake_peer(calls))
    e = export_peers(tmp_path, (640, 512))
    assert calls == [640, 512]
    assert e.paths == {"yolov8n-640": tmp_path / "yolov8n_640.onnx",
                       "yolov8n-512": tmp_path / "yolov8n_512.onnx"}
    assert e.architecture["ok"] is True and e.architecture["params"] == 3_152_000
    # a second run needs neither the module nor torch
    monkeypatch.setitem(sys.modules, "sarvessel.model.peer", None)
    assert export_peers(tmp_path, (640, 512)).paths == e.paths
    with pytest.raises(PeerUnavailable, match="sarvessel.model.peer"):
        export_peers(tmp_path, (320,))


def test_architecture_check_flags_a_wrong_network() -> None:
    mod = _fake_peer([])
    mod.count_peer_cost = lambda model, tile=640: types.SimpleNamespace(params=2_000_000,
                                                                        gflops=8.7)
    assert check_architecture(mod)["ok"] is False


def test_accuracy_refuses_training_seeds(tmp_path: Path) -> None:
    with pytest.raises(SarvesselError, match=">= 900"):
        xview3_accuracy([RunSpec("cfar")], root=tmp_path, seeds=[3], size=512)


def test_small_suite_in_process(tmp_path: Path) -> None:
    s = SuiteSettings.preset(
        Mode.QUICK, report=tmp_path / "rep", work=tmp_path / "work", sizes_mpx=(0.25, 0.5),
        scene_mpx=0.25, backends=["noop", "cfar", "onnx"], peer_tiles=(), threads=1,
        network_repeats=1, eval_seeds=(900,), eval_size=512, ssdd_images=2)
    report, paths = run_suite(s, command="test")
    assert [r["label"] for r in report["backends"]] == ["noop", "cfar", "onnx"]
    assert all(not r.get("skipped") for r in report["backends"])
    pts = report["scaling"]["points"]
    assert [round(p["megapixels"], 2) for p in pts] == [0.25, 0.5]
    assert report["scaling"]["headline"]["megapixels"] == pts[1]["megapixels"]
    xv = report["accuracy"]["xview3"]["results"]
    assert xv["noop"]["skipped"] and "aggregate" in xv["cfar"] and "aggregate" in xv["onnx"]
    ss = report["accuracy"]["ssdd"]
    assert ss.get("skipped") or "ap50" in ss["results"]["onnx"]
    assert report["fpga"]["estimate"]["tiles_per_s"] > 100
    assert {"json", "md", "throughput", "latency", "scaling", "energy"} <= set(paths)
    assert "## Scaling" in paths["md"].read_text()


@pytest.mark.slow
def test_quick_preset_end_to_end(tmp_path: Path) -> None:
    """What CI runs: ``sarvessel bench --quick`` (under 3 minutes on 2 cores)."""
    rep = tmp_path / "quick"
    proc = subprocess.run([sys.executable, "-m", "sarvessel", "bench", "--quick", "--work",
                           str(tmp_path / "work"), "--report", str(rep)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((rep / "bench.json").read_text())
    assert report["seconds"] < 600
    labels = [r["label"] for r in report["backends"]]
    assert {"noop", "cfar", "onnx"} <= set(labels)
    peers = report.get("peers", {})
    if peers.get("skipped"):  # no sarvessel.model.peer / torch here: said, not hidden
        assert "YOLOv8n peer skipped" in " ".join(report["notes"])
    else:
        assert {"yolov8n-640", "yolov8n-512"} <= set(labels)
        assert peers["architecture"]["ok"] is True
        assert peers["ratios"]["yolov8n-512"]["batch1"] > 1
    assert len(report["scaling"]["points"]) == 3
    assert (rep / "bench.md").is_file() and (rep / "scaling.png").is_file()
