"""The report: JSON, Markdown and PNG plots drawn from one dict; scaling fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from sarvessel.runtime.bench.fpga import fpga_side
from sarvessel.runtime.bench.report import render_markdown, scaling_summary, write_report


def _run(label: str, mpx: float, wall: float, rss: float, **kw: object) -> dict:
    lat = {s: {"p50_ms": 1.0, "p99_ms": 2.0, "mean_ms": 1.2, "samples": 3}
           for s in ("read", "preprocess", "infer", "post", "merge", "write", "total")}
    return {"label": label, "spec": label, "backend": label, "scene": "s", "scene_id": f"s{mpx}",
            "height": 1000, "width": int(mpx * 1000), "megapixels": mpx, "tile": 512,
            "overlap": 64, "batch": 8, "threads": 2, "tiles_run": 10, "detections": 3,
            "timings_s": {"read": 0.1, "preprocess": 0.1, "infer": 1.0, "post": 0.1,
                          "merge": 0.05, "write": 0.2, "total": 1.35},
            "wall_s": wall, "mpx_per_s": mpx / wall, "latency_ms_per_tile": lat,
            "peak_rss_mb": rss, "energy": {"sensor": "none", "note": "no power sensor on this "
                                           "host"}, **kw}


def test_scaling_summary_linear_and_flat() -> None:
    pts = [{"megapixels": m, "wall_s": 0.5 + 0.1 * m, "peak_rss_mb": 400.0, "width": 1000}
           for m in (10, 50, 200, 700)]
    s = scaling_summary(pts)
    assert s["seconds_per_mpx"] == pytest.approx(0.1)
    assert s["intercept_s"] == pytest.approx(0.5)
    assert s["r2"] == pytest.approx(1.0)
    assert s["peak_rss_mb_per_100_mpx"] == pytest.approx(0.0, abs=1e-6)
    assert s["within_rss_limit"] is True
    assert scaling_summary(pts[:1]) == {"points": 1}
    assert "peak_rss_mb_per_1000_columns" not in s  # one width: nothing to fit
    widths = [{"megapixels": m, "wall_s": m, "peak_rss_mb": 300 + 0.03 * w, "width": w}
              for m, w in ((10, 3000), (200, 15000), (700, 29000))]
    s = scaling_summary(widths)
    assert s["peak_rss_mb_per_1000_columns"] == pytest.approx(30.0)
    assert s["peak_rss_mb_at_zero_width"] == pytest.approx(300.0)


def test_write_report(tmp_path: Path) -> None:
    onnx = _run("onnx", 50.0, 5.0, 420.0, energy={"sensor": "rapl", "joules": 100.0,
                                                  "joules_per_mpx": 2.0})
    report = {
        "mode": "quick", "command": "sarvessel bench --quick",
        "host": {"cpu_model": "Test CPU", "logical_cpus": 2, "physical_cores": 2,
                 "simd": ["avx2"], "memory_gb": 16.0, "libraries": {"onnxruntime": "1.0"},
                 "load_average": [1.0, 1.0, 1.0]},
        "backends": [_run("noop", 50.0, 1.0, 300.0), onnx,
                     {"label": "sim", "spec": "sim", "skipped": "backend 'sim' is not in "
                      "this build"}],
        "peers": {"threads": 2, "reference": "ours", "architecture": {
            "params": 3151904, "gflops_640": 8.74, "ok": True},
            "networks": {"ours": {"tile": 512, "batch1": {"ms_per_tile_median": 40.0,
                                                          "ms_per_mpx_median": 150.0}},
                         "yolov8n-512": {"tile": 512, "batch1": {"ms_per_tile_median": 140.0,
                                                                 "ms_per_mpx_median": 530.0}}},
            "ratios": {"ours": {"batch1": 1.0, "per_mpx": 1.0},
                       "yolov8n-512": {"batch1": 3.5, "per_mpx": 3.53}}},
        "scaling": {"backend": "onnx", "points": [_run("onnx", m, 0.5 + 0.1 * m, 400.0)
                                                  for m in (10, 50, 200)],
                    "summary": scaling_summary([{"megapixels": m, "wall_s": 0.5 + 0.1 * m,
                                                 "peak_rss_mb": 400.0} for m in (10, 50, 200)])},
        "fpga": fpga_side(Path(__file__).resolve().parents[3] / "models" / "xview3_w4a4" /
                          "hw_estimate" / "estimate.json", host_ms_per_tile={"read": 1.0}),
        "accuracy": {"xview3": {"seeds": "900", "scenes": 1, "results": {
            "onnx": {"aggregate": 0.6, "loc_fscore": 0.8}, "noop": {"skipped": "no detector"}}},
            "ssdd": {"split": "test", "images": 16, "results": {"onnx": {"ap50": 0.95,
                                                                         "ap50_95": 0.6}}}},
        "notes": ["a note"],
    }
    paths = write_report(report, tmp_path)
    assert set(paths) == {"throughput", "latency", "scaling", "energy", "json", "md"}
    for k in ("throughput", "latency", "scaling", "energy"):
        with Image.open(paths[k]) as im:
            assert im.format == "PNG" and im.width >= 800
    back = json.loads(paths["json"].read_text())
    assert back["backends"][1]["energy"]["joules_per_mpx"] == 2.0
    md = paths["md"].read_text()
    assert md == render_markdown(back, plots={k: p.name for k, p in paths.items()
                                              if k not in ("json", "md")})
    assert "| onnx | 10.0 | 5.00 |" in md and "| noop | 50.0 | 1.00 | 0.20 |" in md
    assert "| sim | skipped: backend 'sim' is not in this build |" in md
    assert "| yolov8n-512 | 512 | 140 | 3.50 | 530 | 3.53 |" in md
    assert "matches the published architecture" in md
    assert "Time = 100.0 ms/MPx × MPx + 0.50 s" in md
    assert "arXiv 2507.04842" in md and "paper: < 10 W" in md
    assert "| onnx | 0.6000 | 0.8000 | 0.9500 | 0.6000 |" in md
    assert "![energy](energy.png)" in md and "- a note" in md
