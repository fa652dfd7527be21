"""Peers through the pipeline, per-tile network timing and ratios, and the FPGA side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sarvessel.runtime.bench.fpga import PUBLISHED_DPU, board_projection, fpga_side
from sarvessel.runtime.bench.measure import PEER, RunSpec, measure_scene
from sarvessel.runtime.bench.networks import PeerBackend, network_ratios, time_networks
from sarvessel.runtime.errors import ModelError

REPO = Path(__file__).resolve().parents[3]
ESTIMATE = REPO / "models" / "xview3_w4a4" / "hw_estimate" / "estimate.json"


def test_peer_backend_feeds_vv_vh_vv_in_0_1(peer_path: Path) -> None:
    peer = PeerBackend(peer_path, threads=1)
    assert (peer.tile_size, peer.channels, peer.input_channels) == (64, 2, 3)
    batch = np.zeros((2, 2, 64, 64), np.uint8)
    batch[:, 0] = 255
    y = peer.forward(batch)
    # the toy sums 0.1 x the three channel means: VV (1.0) twice, VH (0) once
    np.testing.assert_allclose(y, 0.2, rtol=1e-6)
    assert y.shape == (2, 84, 64)
    assert [len(d) for d in peer.infer(batch)] == [0, 0]
    assert peer.fingerprint.startswith("peer:") and peer.name == "peer_64"


def test_peer_backend_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="peer model not found"):
        PeerBackend(tmp_path / "none.onnx")


def test_peer_runs_through_the_pipeline(scene: Path, peer_path: Path, tmp_path: Path) -> None:
    run = measure_scene(scene, RunSpec(PEER, model=peer_path, threads=1), out_dir=tmp_path)
    assert run["label"] == "peer_64" and run["tile"] == 64 and run["detections"] == 0
    assert run["latency_ms_per_tile"]["infer"]["samples"] > 0


def test_time_networks_and_ratios(peer_path: Path, model_path: Path) -> None:
    from sarvessel.runtime.backends.onnx import OnnxBackend

    nets = {"ours": OnnxBackend(model_path, threads=1), "peer": PeerBackend(peer_path)}
    t = time_networks(nets, batch_sizes=(1, 4), repeats=2)
    for k in nets:
        assert t[k]["tile"] == 64
        for b in ("batch1", "batch4"):
            assert t[k][b]["ms_per_tile_median"] > 0 and t[k][b]["repeats"] == 2
    fake = {"ours": {"tile": 512, "batch1": {"ms_per_tile_median": 40, "ms_per_mpx_median": 150},
                     "batch8": {"ms_per_tile_median": 20, "ms_per_mpx_median": 75}},
            "p512": {"tile": 512, "batch1": {"ms_per_tile_median": 120, "ms_per_mpx_median": 450},
                     "batch8": {"ms_per_tile_median": 80, "ms_per_mpx_median": 300}},
            "p640": {"tile": 640, "batch1": {"ms_per_tile_median": 200, "ms_per_mpx_median": 480},
                     "batch8": {"ms_per_tile_median": 130, "ms_per_mpx_median": 310}}}
    r = network_ratios(fake, "ours")
    assert r["ours"] == {"batch1": 1.0, "batch8": 1.0, "per_mpx": 1.0}
    assert r["p512"] == {"batch1": 3.0, "batch8": 4.0, "per_mpx": 4.0}
    assert r["p640"] == {"per_mpx": pytest.approx(310 / 75, abs=1e-3)}  # other tile: per MPx
    assert network_ratios(fake, "missing") == {}


def test_board_projection_overlapped_and_serial() -> None:
    p = board_projection(2.74, {"read": 1.0, "preprocess": 0.5, "post": 0.3, "merge": 0.2,
                                "write": 99.0}, tiles=1000, write_s_per_scene=0.5)
    assert p["host_ms_per_tile"]["write"] == pytest.approx(0.5)
    assert p["host_ms_per_tile_total"] == pytest.approx(2.5)
    assert p["bound_by"] == "accelerator"
    assert p["scene_s_overlapped"] == pytest.approx(2.74)
    assert p["scene_s_serial"] == pytest.approx(5.24)


def test_fpga_side_from_the_shipped_estimate() -> None:
    f = fpga_side(ESTIMATE, host_ms_per_tile={"read": 5.0}, write_s_per_scene=1.0,
                  host_label="onnx run")
    est, raw = f["estimate"], json.loads(ESTIMATE.read_text())
    assert est["tiles_per_s"] == raw["tiles_per_s"] > 100
    assert est["scene_seconds"] == raw["scene_seconds"]
    assert est["ms_per_tile"] == pytest.approx(1e3 / raw["tiles_per_s"])
    assert f["board_projection"]["bound_by"] == "host"
    assert "paper: < 10 W" in f["power_projection"]["line"]
    hb = f["power_projection_host_bound"]  # idle power over the longer, host-bound scene
    assert hb["tiles_per_s"] < f["power_projection"]["tiles_per_s"]
    assert hb["joules"] > f["power_projection"]["joules"]
    dpu = f["published_dpu"]
    assert (dpu["pre_ms"], dpu["accel_ms"], dpu["post_ms"]) == (71.0, 33.0, 41.0)
    assert dpu["chips_per_scene"] == 31 * 37
    assert "2507.04842" in PUBLISHED_DPU["source"]
    missing = fpga_side(None)
    assert missing["estimate"] is None and "published_dpu" in missing
