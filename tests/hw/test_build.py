"""`sarvessel hw build`: fails fast without the Xilinx tools; builds with them."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from sarvessel.hw.build import check_tools
from sarvessel.hw.errors import ToolsMissingError


def test_missing_tools_are_named() -> None:
    with pytest.raises(ToolsMissingError) as info:
        check_tools({"PATH": ""})
    msg = str(info.value)
    assert "XILINX_VIVADO" in msg and "`vivado`" in msg and "`vitis_hls`" in msg
    assert "sarvessel hw estimate" in msg


def _tools(bindir: Path, *names: str) -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    for tool in names:
        f = bindir / tool
        f.write_text("#!/bin/sh\n")
        f.chmod(f.stat().st_mode | stat.S_IXUSR)


def test_tools_found(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    _tools(bindir, "vivado", "vitis_hls")
    viv = tmp_path / "Vivado" / "2024.2"
    viv.mkdir(parents=True)
    found = check_tools({"PATH": str(bindir), "XILINX_VIVADO": str(viv)})
    assert found["vivado"] == str(bindir / "vivado") and found["version"] == "2024.2"
    with pytest.raises(ToolsMissingError, match="folder does not exist"):
        check_tools({"PATH": str(bindir), "XILINX_VIVADO": str(tmp_path / "nope")})


@pytest.mark.parametrize("version", ["2023.2", "2023.1", "2025.1", "2022.1"])
def test_unsupported_tool_versions_are_refused(tmp_path: Path, version: str) -> None:
    """finn-plus 1.6.1 supports Vivado/Vitis 2022.2 and 2024.2 only."""
    bindir = tmp_path / "bin"
    _tools(bindir, "vivado", "vitis_hls", "vitis-run")
    viv = tmp_path / "Vivado" / version
    viv.mkdir(parents=True)
    with pytest.raises(ToolsMissingError, match=f"2022.2 or 2024.2.*is {version}"):
        check_tools({"PATH": str(bindir), "XILINX_VIVADO": str(viv)})


def test_hls_command_follows_finn_plus(tmp_path: Path) -> None:
    """finn-plus runs `vitis_hls` up to 2024.2 and `vitis-run` after it (finn/util/hls.py); it
    finds Vitis HLS under $XILINX_HLS/bin (2024.2 points that at Vitis/2024.2) or through
    FINN_TOOL_DIR_OVERRIDE."""
    from sarvessel.hw.build import hls_tool_name

    assert hls_tool_name((2022, 2)) == hls_tool_name((2024, 2)) == "vitis_hls"
    assert hls_tool_name((2025, 1)) == "vitis-run"
    viv = tmp_path / "Vivado" / "2024.2"
    _tools(viv / "bin", "vivado")
    _tools(tmp_path / "Vitis" / "2024.2" / "bin", "vitis_hls")
    env = {"PATH": str(viv / "bin"), "XILINX_VIVADO": str(viv),
           "XILINX_HLS": str(tmp_path / "Vitis" / "2024.2")}
    assert check_tools(env)["vitis_hls"].endswith("Vitis/2024.2/bin/vitis_hls")
    shim = tmp_path / "shim"
    _tools(shim, "vivado")
    with pytest.raises(ToolsMissingError, match="`vitis_hls` in FINN_TOOL_DIR_OVERRIDE"):
        check_tools({**env, "FINN_TOOL_DIR_OVERRIDE": str(shim)})


def test_offline_build_needs_the_prefetched_dependencies(tmp_path: Path) -> None:
    """With AUTOMATIC_DEPENDENCY_UPDATES=false (the image) a missing pre-fetched dependency
    stops the build before finn-plus starts, naming it."""
    viv = tmp_path / "Vivado" / "2022.2"
    _tools(viv / "bin", "vivado", "vitis_hls")
    env = {"PATH": str(viv / "bin"), "XILINX_VIVADO": str(viv),
           "AUTOMATIC_DEPENDENCY_UPDATES": "false"}
    with pytest.raises(ToolsMissingError, match="FINN_DEPS"):
        check_tools(env)
    with pytest.raises(ToolsMissingError, match="kv260-som-bdf"):
        check_tools({**env, "FINN_DEPS": str(tmp_path / "deps")})


def test_cli_build_without_tools_exits_2(tmp_path: Path, monkeypatch, capsys) -> None:
    from sarvessel.cli import main

    monkeypatch.delenv("XILINX_VIVADO", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    rc = main(["hw", "build", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "XILINX_VIVADO" in capsys.readouterr().err


@pytest.mark.vivado
@pytest.mark.finn
@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("XILINX_VIVADO") or shutil.which("vitis_hls") is None,
    reason="needs Vivado + Vitis HLS (XILINX_VIVADO, vitis_hls on PATH)",
)
def test_full_build_produces_a_valid_deploy_package(small_qonnx: Path, tmp_path: Path) -> None:
    from sarvessel.hw.build import build_accelerator
    from sarvessel.hw.config import HWConfig
    from sarvessel.hw.deploy import validate_deploy_package

    cfg = HWConfig(output_dir=tmp_path, tile_size=64, tile_overlap=8)
    pkg = build_accelerator(small_qonnx, cfg, model_metadata={
        "name": "contract_64", "tile_size": 64, "channels": 2, "stride": 8, "reg_max": 16, "nc": 3})
    data = validate_deploy_package(pkg)
    assert data["input"]["shape_normal"] == [1, 64, 64, 2]


@pytest.mark.finn
def test_finn_flow_config_and_wrapped_steps(small_qonnx: Path, tmp_path: Path) -> None:
    """Everything of the build that runs without Vivado: the finn-plus flow config parses, its
    custom steps import, and the wrapped front half produces the folded model and the parent
    graph where finn-plus' back end looks for them."""
    import importlib
    from types import SimpleNamespace

    from finn.builder.build_dataflow_config import (
        DataflowBuildConfig,
        default_build_dataflow_steps,
    )
    from qonnx.core.modelwrapper import ModelWrapper

    from sarvessel.hw.build import FRONT_STEPS, write_finn_flow_config
    from sarvessel.hw.config import HWConfig

    cfg = HWConfig(output_dir=tmp_path / "out", tile_size=64, tile_overlap=8)
    flow = write_finn_flow_config(cfg)
    fcfg = DataflowBuildConfig.construct_from(flow)
    assert fcfg.board == "KV260_SOM" and fcfg.fpga_part == "xck26-sfvc784-2LV-c"
    assert fcfg.synth_clk_period_ns == pytest.approx(1e3 / 150)
    custom, finn_steps = fcfg.steps[: len(FRONT_STEPS)], fcfg.steps[len(FRONT_STEPS) :]
    assert "step_synthesize_bitfile" in finn_steps and "step_make_driver" in finn_steps
    assert set(finn_steps) <= set(default_build_dataflow_steps)
    model = ModelWrapper(str(small_qonnx))
    for name in custom:
        mod, fn = name.rsplit(".", 1)
        step = getattr(importlib.import_module(mod), fn)
        model = step(model, SimpleNamespace(output_dir=str(flow.parent)))
    inner = HWConfig.from_file(flow.parent / "sarvessel_hw_config.json")
    assert (inner.intermediate_dir() / "minimize_bit_width.onnx").is_file()
    assert (flow.parent / "intermediate_models" / "dataflow_parent.onnx").is_file()
    assert all(n.domain.startswith("finn.custom_op.fpgadataflow.") for n in model.graph.node)


@pytest.mark.finn
def test_build_requests_rtlsim_verification(small_qonnx: Path, tmp_path: Path) -> None:
    """The flow config `hw build` hands finn-plus asks for node-by-node and stitched-IP rtlsim
    on a tile of the model's size, with the expected output from the QONNX model's Python
    execution; finn-plus' own config class accepts it."""
    import numpy as np
    from finn.builder.build_dataflow_config import DataflowBuildConfig, VerificationStepType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    from sarvessel.hw.build import write_finn_flow_config
    from sarvessel.hw.config import HWConfig

    cfg = HWConfig(output_dir=tmp_path / "out", tile_size=64, tile_overlap=8)
    fcfg = DataflowBuildConfig.construct_from(write_finn_flow_config(cfg, small_qonnx))
    assert [VerificationStepType(s) for s in fcfg.verify_steps] == [
        VerificationStepType.NODE_BY_NODE_RTLSIM, VerificationStepType.STITCHED_IP_RTLSIM]
    inp, exp = fcfg._resolve_verification_io_pair()
    assert inp.shape == (1, 2, 64, 64) and inp.dtype == np.float32
    assert inp.min() >= 0 and inp.max() <= 255 and np.all(inp == np.round(inp))
    m = ModelWrapper(str(small_qonnx))
    ref = execute_onnx(m, {m.graph.input[0].name: inp})[m.graph.output[0].name]
    np.testing.assert_array_equal(exp, ref)
    assert exp.std() > 0  # not a degenerate constant output
    # without verify steps the config asks for none
    none = DataflowBuildConfig.construct_from(
        write_finn_flow_config(cfg.replace(verify_steps=()), small_qonnx))
    assert not none.verify_steps


def test_rtlsim_results_are_checked(tmp_path: Path) -> None:
    """finn-plus only logs a failed verification; the build reads its result files and stops."""
    from sarvessel.hw.build import rtlsim_verification_results
    from sarvessel.hw.config import HWConfig
    from sarvessel.hw.errors import VerificationError

    cfg = HWConfig(rtlsim_verify_tiles=1)
    vdir = tmp_path / "verification_output"
    vdir.mkdir()
    (vdir / "verify_node_by_node_rtlsim_0_SUCCESS.npy").write_bytes(b"")
    with pytest.raises(VerificationError, match="stitched_ip_rtlsim tile 0: MISSING"):
        rtlsim_verification_results(tmp_path, cfg)
    (vdir / "verify_stitched_ip_rtlsim_0_FAIL.npy").write_bytes(b"")
    with pytest.raises(VerificationError, match="stitched_ip_rtlsim tile 0: FAIL"):
        rtlsim_verification_results(tmp_path, cfg)
    (vdir / "verify_stitched_ip_rtlsim_0_FAIL.npy").rename(
        vdir / "verify_stitched_ip_rtlsim_0_SUCCESS.npy")
    assert rtlsim_verification_results(tmp_path, cfg) == {
        "node_by_node_rtlsim": ["SUCCESS"], "stitched_ip_rtlsim": ["SUCCESS"]}
