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
def test_contract_network_fits_the_budget_at_150mhz(flow_512) -> None:
    """The default flow (150 MHz, 20 % cycle margin): the folding keeps the *expected* totals
    within the 70/80/90 % budget, relaxing the scene time where it must."""
    cfg, _ = flow_512
    data = _check_report(cfg)
    assert data["tiles_per_scene"] == 3630 and data["clock_mhz"] == 150
    assert data["fits_budget"]
    assert data["expected_shares"]["LUT"] <= 0.70
    assert data["expected_shares"]["BRAM_18K"] <= 0.80
    assert data["expected_shares"]["DSP"] <= 0.90


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


def test_expected_totals_add_dwcs_fifos_and_the_shell(flow_64) -> None:
    """Expected = pre-FIFO + FINN's models of the DWCs/FIFOs it inserts (on a copy) + the shell
    allowance; threshold tables are priced as configured, never FINN's uncounted "auto"."""
    import copy

    from qonnx.custom_op.registry import getCustomOp

    from sarvessel.hw.estimate import estimate_model, expected_resources, inserted_layers

    cfg, result = flow_64
    model = result.model
    styles = {getCustomOp(n).get_nodeattr("ram_style_thresholds") for n in model.graph.node
              if "ram_style_thresholds" in getCustomOp(n).get_nodeattr_types()}
    assert styles == {cfg.ram_style_thresholds.value}
    before = copy.deepcopy(model.model)
    inserted = inserted_layers(model, cfg)
    assert model.model == before  # estimated on a copy
    assert any(ly.op_type.startswith("StreamingFIFO") for ly in inserted)
    assert all(ly.op_type.startswith(("StreamingFIFO", "StreamingDataWidthConverter"))
               for ly in inserted)
    rep = estimate_model(model, cfg)
    added = sum(a["LUT"] for a in rep.additions.values())
    assert rep.expected_totals["LUT"] == pytest.approx(rep.totals["LUT"] + added)
    assert rep.expected_totals["LUT"] >= rep.totals["LUT"] + cfg.shell_allowance_lut
    assert rep.expected_totals["LUT"] == pytest.approx(expected_resources(model, cfg)["LUT"])
    assert rep.expected_shares["LUT"] == pytest.approx(rep.expected_totals["LUT"] / 117_120)
    assert rep.expected_totals["FF"] is None
    assert rep.cycle_margin == pytest.approx(1 - rep.bottleneck_cycles / rep.target_cycles_per_tile)
    assert rep.meets_target == (rep.cycle_margin >= cfg.cycle_margin - 1e-9)
    txt = (cfg.report_dir() / "estimate.txt").read_text()
    assert "pre-FIFO total" in txt and "expected total" in txt and "shell allowance" in txt


def test_folding_keeps_the_cycle_margin(small_qonnx, tmp_path) -> None:
    """Folded to target * (1 - margin): the bottleneck leaves at least the margin free."""
    from sarvessel.hw.config import HWConfig
    from sarvessel.hw.estimate import load_report
    from sarvessel.hw.flow import run_flow

    cfg = HWConfig(output_dir=tmp_path, tile_size=64, tile_overlap=8, cycle_margin=0.3,
                   target_tiles_per_s=2000.0, lut_budget=1.0)
    run_flow(small_qonnx, cfg)
    rep = load_report(cfg.report_dir() / "estimate.json")
    assert rep.folding_target_cycles == cfg.folding_target_cycles()
    assert rep.bottleneck_cycles <= cfg.folding_target_cycles()
    assert rep.cycle_margin >= 0.3 and rep.meets_target and rep.required_cycle_margin == 0.3


def test_thresholds_and_dsp_multipliers_are_set_explicitly(flow_64) -> None:
    from qonnx.custom_op.registry import getCustomOp

    from sarvessel.hw.steps import apply_memory_styles

    cfg, result = flow_64
    model = apply_memory_styles(result.model, cfg.replace(ram_style_thresholds="block",
                                                          mvau_dsp_min_bits=2))
    mvaus = [getCustomOp(n) for n in model.graph.node if n.op_type == "MVAU_hls"]
    assert mvaus and all(m.get_nodeattr("resType") == "dsp" for m in mvaus)
    assert all(m.get_nodeattr("ram_style_thresholds") == "block" for m in mvaus)
    model = apply_memory_styles(model, cfg.replace(mvau_dsp_min_bits=0))
    assert all(getCustomOp(n).get_nodeattr("resType") == "lut"
               for n in model.graph.node if n.op_type == "MVAU_hls")
