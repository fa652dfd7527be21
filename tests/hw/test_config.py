"""HWConfig: derived numbers, loading, validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sarvessel.hw.config import ESTIMATE_STEPS, KV260_FABRIC, Board, HWConfig, SwgRamStyle
from sarvessel.hw.errors import HWConfigError
from sarvessel.runtime.errors import SarvesselError


def test_defaults_derive_the_scene_target() -> None:
    cfg = HWConfig()
    # 24,400 rows -> 55 tile rows, 29,400 cols -> 66 tile cols at 512 px / 64 px overlap
    assert cfg.tiles_per_scene() == 55 * 66 == 3630
    assert cfg.required_tiles_per_s() == pytest.approx(363.0)
    assert cfg.clock_mhz == 150.0 and cfg.cycle_margin == 0.2
    assert cfg.target_cycles_per_tile() == int(150e6 / 363.0)
    assert cfg.folding_target_cycles() == int(int(150e6 / 363.0) * 0.8)
    assert cfg.clock_period_ns() == pytest.approx(1e3 / 150)
    assert cfg.scene_megapixels() == pytest.approx(717.36)
    assert cfg.budgets() == {"LUT": 0.7, "BRAM_18K": 0.8, "URAM": 0.8, "DSP": 0.9}
    assert KV260_FABRIC.totals()["BRAM_18K"] == 288


@pytest.mark.parametrize(("change", "msg"), [
    ({"cycle_margin": 1.0}, "cycle_margin"), ({"cycle_margin": -0.1}, "cycle_margin"),
    ({"verify_steps": ["cppsim"]}, "verify_steps"), ({"ram_style_thresholds": "auto"},
                                                     "ram_style_thresholds"),
    ({"shell_allowance_lut": -1}, "shell allowances"), ({"rtlsim_verify_tiles": 0}, "rtlsim"),
])
def test_new_fields_are_validated(change: dict, msg: str) -> None:
    with pytest.raises(HWConfigError, match=msg):
        HWConfig.from_dict(change)


def test_tiles_per_s_overrides_scene_seconds() -> None:
    cfg = HWConfig(target_tiles_per_s=100.0, clock_mhz=250)
    assert cfg.target_cycles_per_tile() == 2_500_000


def test_json_roundtrip_and_relative_paths(tmp_path: Path) -> None:
    sub = tmp_path / "cfgs"
    sub.mkdir()
    f = sub / "hw.json"
    f.write_text(json.dumps({"clock_mhz": 150, "output_dir": "out/x", "board": "KV260_SOM"}))
    cfg = HWConfig.from_file(f)
    assert cfg.clock_mhz == 150.0 and isinstance(cfg.clock_mhz, float)
    assert cfg.output_dir == (sub / "out" / "x").resolve()
    assert cfg.board is Board.KV260_SOM
    again = HWConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_yaml_loads(tmp_path: Path) -> None:
    f = tmp_path / "hw.yaml"
    f.write_text("tile_size: 256\ntile_overlap: 32\nsteps: [tidy_up, qonnx_to_finn]\n")
    cfg = HWConfig.from_file(f)
    assert cfg.tile_size == 256 and cfg.steps == ("tidy_up", "qonnx_to_finn")


def test_swg_ram_style_defaults_to_lutram_and_round_trips(tmp_path: Path) -> None:
    assert HWConfig().swg_ram_style == SwgRamStyle.DISTRIBUTED == "distributed"
    f = tmp_path / "hw.yaml"
    f.write_text("swg_ram_style: block\n")
    cfg = HWConfig.from_file(f)
    assert cfg.swg_ram_style is SwgRamStyle.BLOCK
    assert cfg.to_dict()["swg_ram_style"] == "block"
    assert HWConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.replace(swg_ram_style="distributed").swg_ram_style is SwgRamStyle.DISTRIBUTED


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"clock": 200}, "unknown config key"),
        ({"board": "ZCU104"}, "board must be one of"),
        ({"clock_mhz": "fast"}, "clock_mhz must be a number"),
        ({"fpga_part": "xczu7ev-ffvc1156-2-e"}, "does not match board"),
        ({"lut_budget": 1.5}, "lut_budget"),
        ({"tile_overlap": 512}, "tile_overlap"),
        ({"target_scene_seconds": None}, "set target_scene_seconds"),
        ({"stop_step": "nope"}, "stop_step"),
        ({"steps": "tidy_up"}, "steps must be a list"),
        ({"start_step": "set_folding", "stop_step": "tidy_up"}, "comes before"),
        ({"swg_ram_style": "ultra"}, r"swg_ram_style must be one of \['auto', 'distributed', "
                                     r"'block'\], got 'ultra'"),
        ({"swg_ram_style": 1}, "swg_ram_style must be one of"),
        ({"swg_ram_style": None}, "swg_ram_style must be one of"),
    ],
)
def test_invalid_configs_are_rejected(data: dict, match: str) -> None:
    with pytest.raises(HWConfigError, match=match):
        HWConfig.from_dict(data)


def test_bad_file_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.json"
    f.write_text('{"nope": 1}')
    with pytest.raises(SarvesselError, match="bad.json"):
        HWConfig.from_file(f)
    with pytest.raises(HWConfigError, match="cannot read"):
        HWConfig.from_file(tmp_path / "missing.json")
    (tmp_path / "x.toml").write_text("")
    with pytest.raises(HWConfigError, match="must be .json"):
        HWConfig.from_file(tmp_path / "x.toml")


def test_estimate_steps_are_registered() -> None:
    pytest.importorskip("finn")
    from sarvessel.hw.steps import STEP_REGISTRY

    assert set(ESTIMATE_STEPS) <= set(STEP_REGISTRY)
