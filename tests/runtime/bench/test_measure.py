"""One measured run, in this process and in a child, with and without a power sensor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sarvessel.runtime.bench.measure import (
    PEER,
    RunSpec,
    available_kinds,
    build_detector,
    measure_in_child,
    measure_scene,
)
from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.power import ReplaySensor
from sarvessel.runtime.tiling import tile_starts


def test_spec_parsing_and_names() -> None:
    s = RunSpec.parse("onnx:models/x.onnx", threads=2)
    assert (s.kind, s.model, s.threads, s.name, s.arg) == (
        "onnx", Path("models/x.onnx"), 2, "onnx-x", "onnx:models/x.onnx")
    assert RunSpec.parse("peer:/a/yolov8n_640.onnx").name == "yolov8n_640"
    assert RunSpec.parse("cfar", label="baseline").name == "baseline"
    assert RunSpec("onnx", overlap=200).config(128).overlap == 64  # at most half a tile
    assert {"noop", "cfar", "onnx"} <= set(available_kinds())
    kinds = available_kinds()
    assert "auto" not in kinds
    if "sim" in kinds:  # the paced simulator is benchmarked beside the functional one
        assert kinds[kinds.index("sim") + 1] == "sim-paced"
    assert RunSpec.parse("sim:/pkg/xview3_w4a4_sim").name == "sim-xview3_w4a4_sim"


def test_unknown_kind_and_peer_without_model_are_refused() -> None:
    with pytest.raises(SarvesselError, match="not in this build"):
        build_detector(RunSpec("gpu"))
    with pytest.raises(SarvesselError, match="peer run needs a model"):
        build_detector(RunSpec(PEER))


def test_measure_scene_in_process(scene: Path, tmp_path: Path, model_path: Path) -> None:
    run = measure_scene(scene, RunSpec("onnx", model=model_path, threads=1),
                        out_dir=tmp_path / "o")
    assert run["megapixels"] == pytest.approx(0.63)
    assert run["tiles_run"] == run["tiles_total"] > 50  # toy tiles are 64 px
    lat = run["latency_ms_per_tile"]
    assert set(lat) == {"read", "preprocess", "infer", "post", "merge", "write", "total"}
    rows, cols = tile_starts(700, 64, 32), tile_starts(900, 64, 32)  # overlap: half a tile
    assert lat["infer"]["samples"] == len(rows) * -(-len(cols) // 8)
    assert lat["read"]["samples"] == len(rows)
    assert run["peak_rss_mb"] > run["baseline_rss_mb"] > 10
    assert run["mpx_per_s"] > 0 and run["wall_s"] > 0
    assert run["timings_s"]["write"] > 0
    assert Path(run["outputs"]["csv"]).is_file()
    assert not list((tmp_path / "o").glob("*.journal.jsonl"))


def test_measure_in_child_with_a_replayed_sensor(scene: Path, tmp_path: Path) -> None:
    t = np.linspace(0.0, 1.0, 101)  # 100 Hz: the sampler reads at its 20 Hz cap
    sensor = ReplaySensor(t, np.full_like(t, 5.0), loop=True)
    run = measure_in_child(scene, RunSpec("cfar"), out_dir=tmp_path / "c", sensor=sensor,
                           timeout_s=300)
    assert not run.get("skipped"), run
    e = run["energy"]
    assert e["sensor"] == "replay" and e["samples"] >= 1
    duration = run["t_end"] - run["t_start"]
    assert e["joules"] == pytest.approx(5.0 * duration, rel=0.02)
    assert e["average_w"] == pytest.approx(5.0, rel=0.02)
    assert e["joules_per_mpx"] == pytest.approx(e["joules"] / run["megapixels"], rel=1e-3)
    assert run["detections"] > 0 and run["peak_rss_mb"] > 10


def test_child_failure_is_a_skip_with_the_reason(scene: Path, tmp_path: Path) -> None:
    run = measure_in_child(scene, RunSpec("fpga"), out_dir=tmp_path / "f", timeout_s=120)
    assert run["skipped"]  # no board here (or no fpga backend in this build): one line why
    run = measure_in_child(scene, RunSpec("cfar"), out_dir=tmp_path / "g", timeout_s=120)
    assert run["energy"] == {"sensor": "none", "note": "no power sensor on this host"}
