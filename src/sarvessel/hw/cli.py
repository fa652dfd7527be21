"""``sarvessel hw ...`` commands: estimate, verify, build, check a deploy package.

finn, qonnx and torch are imported only inside the handlers, so ``sarvessel --help`` works where
they are not installed.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from sarvessel.runtime.io.outputs import write_json

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add ``hw`` and its sub-commands to the top-level parser."""
    hw = subparsers.add_parser(
        "hw", help="FINN flow for the Kria KV260: estimates, checks, bitstream build"
    )
    sub = hw.add_subparsers(dest="hw_command", metavar="HW_COMMAND")

    est = sub.add_parser(
        "estimate",
        help="convert a QONNX model to a folded FINN dataflow graph and report cycles/resources",
    )
    _common(est)
    est.add_argument(
        "--target-scene-s",
        type=float,
        default=None,
        help="target seconds per scene (overlap included); overrides the config",
    )
    est.add_argument(
        "--verify-tiles",
        type=int,
        default=0,
        metavar="N",
        help="also run N SAR-like uint8 tiles through the QONNX model and the HW graphs in "
        "Python and compare them (slow: ~40 s per 512 px tile)",
    )
    est.add_argument(
        "--verify-input",
        type=Path,
        default=None,
        metavar="NPY",
        help="uint8 tiles [N, C, T, T] (.npy) to verify with instead of synthetic ones",
    )
    est.set_defaults(func=cmd_estimate)

    bld = sub.add_parser(
        "build", help="full finn-plus build (needs Vivado + Vitis HLS) to a deploy package"
    )
    _common(bld)
    bld.set_defaults(func=cmd_build)

    pkg = sub.add_parser(
        "package",
        help="write a deploy package without Vivado: driver config, simulator graph, self-test "
        "tiles (a real build adds the bitstream)",
    )
    _common(pkg)
    pkg.add_argument("--intfloat", type=Path, required=True,
                     help="the model's integer-exact float graph (scripts/export_intfloat.py)")
    pkg.add_argument("--package-out", type=Path, required=True, metavar="DIR",
                     help="deploy package folder to write (replaced if it exists)")
    pkg.add_argument("--selftest-tiles", type=int, default=2, metavar="N",
                     help="SAR-like tiles stored with their expected accumulators (default 2)")
    pkg.set_defaults(func=cmd_package)

    chk = sub.add_parser("check-deploy", help="validate a deploy package folder")
    chk.add_argument("package", type=Path, help="deploy package folder")
    chk.set_defaults(func=cmd_check_deploy)
    hw.set_defaults(func=lambda args: _help(hw))


def cmd_estimate(args: argparse.Namespace) -> int:
    """Run the estimate flow, write reports and print the table."""
    from rich.console import Console

    cfg = _config(args)
    model = _model_path(args.model)
    t0 = time.perf_counter()
    from sarvessel.hw.estimate import load_report, render_table
    from sarvessel.hw.flow import run_flow

    if args.verify_tiles and not args.verify_input:
        cfg = cfg.replace(verify_tiles=args.verify_tiles)
    result = run_flow(model, cfg)
    report = load_report(cfg.report_dir() / "estimate.json")
    console = Console()
    if console.width < 140 and not console.is_terminal:  # a log file: do not truncate names
        console = Console(width=140)
    console.print(render_table(report))
    vr = result.verification
    if args.verify_input is not None:
        from sarvessel.hw.verify import verify_flow_outputs

        vr = verify_flow_outputs(model, cfg.output_dir, _load_tiles(args.verify_input))
        write_json((cfg.report_dir() / "verify.json"), vr.to_dict())
    if vr is not None:
        console.print(
            f"verification on {len(vr.tiles)} tile(s): HW graphs bit-exact: {vr.hw_exact}; "
            f"bit-exact vs QONNX: {vr.bit_exact} (worst mismatch share "
            f"{max(t.qonnx_mismatch for t in vr.tiles):.2%})"
        )
    console.print(f"reports in {cfg.report_dir()} ({time.perf_counter() - t0:.1f} s)")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """Check the tools, then run the full build."""
    from sarvessel.hw.build import build_accelerator, check_tools

    check_tools()
    cfg = _config(args)
    model = _model_path(args.model)
    pkg = build_accelerator(model, cfg, model_metadata=_sidecar(model))
    log.info("deploy package: %s", pkg)
    return 0


def cmd_package(args: argparse.Namespace) -> int:
    """Run the estimate flow and write a simulator deploy package."""
    from sarvessel.hw.package import write_sim_package

    out = write_sim_package(_model_path(args.model), args.intfloat, args.package_out,
                            _config(args), selftest_tiles=args.selftest_tiles)
    log.info("deploy package (simulator, no bitstream): %s", out)
    return 0


def cmd_check_deploy(args: argparse.Namespace) -> int:
    """Validate a deploy package and print its I/O summary."""
    from sarvessel.hw.deploy import validate_deploy_package

    data = validate_deploy_package(args.package)
    log.info(
        "%s: OK, input %s %s, output %s %s",
        args.package,
        data["input"]["finn_datatype"],
        data["input"]["shape_normal"],
        data["output"]["finn_datatype"],
        data["output"]["shape_normal"],
    )
    return 0


# -- helpers --------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    from sarvessel.hw.config import SwgRamStyle  # no finn import: safe for --help

    p.add_argument("model", type=Path, help="cleaned QONNX model (.onnx / .qonnx)")
    p.add_argument("--config", type=Path, default=None, help="HW config (.json / .yaml)")
    p.add_argument("--out", type=Path, default=None, help="output folder (overrides the config)")
    p.add_argument("--clock-mhz", type=float, default=None, help="clock (MHz); overrides config")
    p.add_argument("--cycle-margin", type=float, default=None, metavar="SHARE",
                   help="share of the cycle target the folding keeps free (0.2 = 20 %%); "
                   "overrides the config")
    p.add_argument(
        "--swg-ram-style",
        choices=[s.value for s in SwgRamStyle],
        default=None,
        help="line-buffer memory of the sliding-window generators: LUTRAM (distributed), BRAM "
        "(block) or chosen per generator (auto); overrides the config",
    )


def _help(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def _config(args: argparse.Namespace) -> Any:
    from sarvessel.hw.config import HWConfig

    cfg = HWConfig.from_file(args.config) if args.config else HWConfig()
    changes: dict[str, Any] = {}
    if args.out is not None:
        changes["output_dir"] = args.out
    if getattr(args, "clock_mhz", None) is not None:
        changes["clock_mhz"] = args.clock_mhz
    if getattr(args, "cycle_margin", None) is not None:
        changes["cycle_margin"] = args.cycle_margin
    if getattr(args, "swg_ram_style", None) is not None:
        changes["swg_ram_style"] = args.swg_ram_style
    if getattr(args, "target_scene_s", None) is not None:
        changes["target_scene_seconds"] = args.target_scene_s
        changes["target_tiles_per_s"] = None
    tile = _input_tile_size(args.model)
    if tile is not None and tile != cfg.tile_size:
        log.info("tile_size %d taken from the model input", tile)
        changes["tile_size"] = tile
    return cfg.replace(**changes) if changes else cfg


def _input_tile_size(model: Path) -> int | None:
    """Tile edge from the model's input shape [B, C, T, T], or None if unreadable."""
    if not model.is_file():
        return None
    import onnx

    try:
        m = onnx.load(str(model), load_external_data=False)
        dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    except Exception:  # a bad file is reported by the flow with its own message
        return None
    return int(dims[-1]) if len(dims) == 4 and dims[-1] > 0 else None


def _model_path(path: Path) -> Path:
    from sarvessel.hw.errors import ConversionError

    if not path.is_file():
        raise ConversionError(f"{path}: model file not found")
    return path


def _sidecar(model: Path) -> dict[str, Any]:
    """The model's sidecar ``<name>.json`` read and validated through the runtime's contract
    (so the deploy package carries what the board will accept), or {} when there is none."""
    from sarvessel.runtime.contract import read_metadata, sidecar_path

    if not sidecar_path(model).is_file():
        return {}
    return read_metadata(model).to_dict()


def _load_tiles(path: Path) -> Any:
    import numpy as np

    from sarvessel.hw.errors import VerificationError

    try:
        return np.load(path)
    except (OSError, ValueError) as exc:
        raise VerificationError(f"{path}: cannot read tiles: {exc}") from exc
