"""`sarvessel hw estimate` and `check-deploy` end to end, in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.finn
def test_estimate_command(small_qonnx: Path, tmp_path: Path, capsys) -> None:
    from sarvessel.cli import main

    cfg = tmp_path / "hw.yaml"
    cfg.write_text("tile_overlap: 8\ntarget_tiles_per_s: 5000\n")
    out = tmp_path / "out"
    rc = main(["hw", "estimate", str(small_qonnx), "--config", str(cfg), "--out", str(out),
               "--clock-mhz", "150", "--verify-tiles", "1"])
    assert rc == 0
    data = json.loads((out / "report" / "estimate.json").read_text())
    assert data["clock_mhz"] == 150.0 and data["tile_size"] == 64  # tile from the model input
    assert data["target_cycles_per_tile"] == 30_000
    verify = json.loads((out / "report" / "verify.json").read_text())
    assert verify["hw_exact"] is True
    assert "bottleneck" in capsys.readouterr().out


def test_swg_ram_style_option_overrides_the_config(tmp_path: Path, capsys) -> None:
    from sarvessel.cli import build_parser
    from sarvessel.hw.cli import _config

    cfg = tmp_path / "hw.yaml"
    cfg.write_text("swg_ram_style: distributed\n")
    parser = build_parser()
    for cmd in ("estimate", "build"):
        base = ["hw", cmd, str(tmp_path / "m.onnx"), "--config", str(cfg)]
        assert _config(parser.parse_args(base)).swg_ram_style == "distributed"
        args = parser.parse_args([*base, "--swg-ram-style", "block"])
        assert _config(args).swg_ram_style == "block"
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["hw", "estimate", "m.onnx", "--swg-ram-style", "ultra"])
    assert exc.value.code == 2 and "--swg-ram-style" in capsys.readouterr().err


def test_estimate_missing_model_exits_2(tmp_path: Path, capsys) -> None:
    from sarvessel.cli import main

    rc = main(["hw", "estimate", str(tmp_path / "nope.onnx"), "--out", str(tmp_path)])
    assert rc == 2
    assert "nope.onnx" in capsys.readouterr().err


def test_bad_config_exits_2(tmp_path: Path, capsys) -> None:
    from sarvessel.cli import main

    (tmp_path / "m.onnx").write_bytes(b"x")
    (tmp_path / "hw.json").write_text('{"clok_mhz": 1}')
    rc = main(["hw", "estimate", str(tmp_path / "m.onnx"), "--config", str(tmp_path / "hw.json")])
    assert rc == 2
    assert "unknown config key" in capsys.readouterr().err


def test_check_deploy_reports_problems(tmp_path: Path, capsys) -> None:
    from sarvessel.cli import main

    rc = main(["hw", "check-deploy", str(tmp_path)])
    assert rc == 2
    assert "driver_config.json" in capsys.readouterr().err
