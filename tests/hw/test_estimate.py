"""Estimate reports: numbers consistent with the per-layer analysis and the KV260 totals."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.finn


def _check_report(cfg) -> dict:
    from sarvessel.hw.estimate import load_report

    rdir = cfg.report_dir()
    data = json.loads((rdir / "estimate.json").read_text())
    rep = load_report(rdir / "estimate.json")
    worst = max(rep.layers, key=lambda ly: ly.cycles)
    assert rep.bottleneck == worst.name and rep.bottleneck_cycles == worst.cycles
    assert rep.tiles_per_s == pytest.approx(cfg.clock_hz() / worst.cycles)
    assert rep.scene_seconds == pytest.approx(cfg.tiles_per_scene() / rep.tiles_per_s)
    assert rep.tile_mpx_per_s == pytest.approx(rep.tiles_per_s * cfg.tile_size**2 / 1e6)
    assert rep.totals["LUT"] == pytest.approx(sum(ly.resources["LUT"] for ly in rep.layers))
    assert rep.shares["LUT"] == pytest.approx(rep.totals["LUT"] / 117_120)
    assert rep.shares["BRAM_18K"] == pytest.approx(rep.totals["BRAM_18K"] / 288)
    assert rep.shares["DSP"] == pytest.approx(rep.totals["DSP"] / 1_248)
    assert rep.totals["FF"] is None and rep.shares["FF"] is None
    assert (rdir / "estimate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    txt = (rdir / "estimate.txt").read_text()
    assert "bottleneck" in txt and rep.bottleneck in txt
    return data


def test_report_small(flow_64) -> None:
    cfg, _ = flow_64
    data = _check_report(cfg)
    assert data["tile_size"] == 64


@pytest.mark.slow
def test_contract_network_meets_the_scene_target_at_200mhz(flow_512) -> None:
    """The headline claim: a 700 MPx scene in <= 10 s within the 70/80/90 % budget."""
    cfg, _ = flow_512
    data = _check_report(cfg)
    assert data["tiles_per_scene"] == 3630
    assert data["meets_target"] and data["fits_budget"]
    assert data["scene_seconds"] <= 10.0
    assert data["shares"]["LUT"] <= 0.70
    assert data["shares"]["BRAM_18K"] <= 0.80
    assert data["shares"]["DSP"] <= 0.90


def test_over_budget_relaxes_the_target(small_qonnx, tmp_path) -> None:
    """A LUT budget the fastest folding cannot meet makes the folding relax its target."""
    from sarvessel.hw.config import HWConfig
    from sarvessel.hw.estimate import load_report
    from sarvessel.hw.flow import run_flow

    cfg = HWConfig(
        output_dir=tmp_path, tile_size=64, tile_overlap=8, target_tiles_per_s=200_000.0,
        lut_budget=0.02, max_folding_attempts=3,
    )
    run_flow(small_qonnx, cfg)
    rep = load_report(cfg.report_dir() / "estimate.json")
    assert rep.folding_target_cycles is not None
    assert rep.folding_target_cycles > cfg.target_cycles_per_tile()
    assert rep.meets_target is False
