"""``sarvessel hw build``: the full finn-plus build to a KV260 bitstream and deploy package.

finn-plus must be started through its own ``finn`` CLI, which initialises its settings, fetches
its HLS/RTL dependencies, builds the XSI simulator bridge for the loaded Vivado and sets the
tool paths (``finn build FLOW.yaml MODEL``). So the build writes a finn-plus flow config whose
front half is this package's own steps (QONNX → folded dataflow partition, exactly what
``sarvessel hw estimate`` reports), named as importable callables
``sarvessel.hw.build.finn_step_<name>``, followed by finn-plus' own back-end steps (HW generation
with FIFO sizing, stitched IP, Zynq shell synthesis for ``KV260_SOM``, driver, deployment
package). It then runs ``finn build`` and assembles a :mod:`sarvessel.hw.deploy` package.

This needs Vivado and Vitis HLS. :func:`check_tools` runs first and fails fast with a
:class:`ToolsMissingError` naming what is missing, before any model is touched.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sarvessel.hw.config import ESTIMATE_STEPS, HWConfig
from sarvessel.hw.errors import HWError, ToolsMissingError
from sarvessel.runtime.io.outputs import write_json

log = logging.getLogger(__name__)

#: finn-plus back-end steps skipped by the build (slow simulations that give no artefact).
SKIPPED_FINN_STEPS = ("step_measure_rtlsim_performance", "step_out_of_context_synthesis")
#: This package's steps run inside the finn-plus build (everything up to the folded model).
FRONT_STEPS: tuple[str, ...] = tuple(s for s in ESTIMATE_STEPS if s != "generate_estimates")
#: File (inside the finn-plus output dir) holding the HWConfig the wrapped steps use.
INNER_CONFIG_FILE = "sarvessel_hw_config.json"
#: Name of the generated finn-plus flow config (inside ``<output_dir>/finn_build``).
FLOW_CONFIG_FILE = "flow.json"
#: Verification tensors of the rtlsim steps (inside ``<output_dir>/finn_build``): uint8-valued
#: input tiles [N, C, T, T] and the QONNX model's outputs on them.
VERIFY_INPUT_FILE, VERIFY_EXPECTED_FILE = "verify_input.npy", "verify_expected_output.npy"


#: Vivado / Vitis versions finn-plus 1.6.1 supports (its package metadata: 2022.2 or 2024.2).
SUPPORTED_XILINX_VERSIONS: tuple[tuple[int, int], ...] = ((2022, 2), (2024, 2))


def xilinx_version(vivado_path: str) -> tuple[int, int] | None:
    """(year, release) parsed from an ``XILINX_VIVADO`` path as finn-plus does
    (``finn.util.basic.get_vivado_version``); None when the path names no version.

    >>> xilinx_version("/tools/Xilinx/Vivado/2024.2")
    (2024, 2)
    """
    m = re.search(r"\b(20\d{2})\.(1|2)\b", vivado_path)
    return (int(m.group(1)), int(m.group(2))) if m else None


def hls_tool_name(version: tuple[int, int]) -> str:
    """The HLS command finn-plus runs for a tool version (``finn.util.hls.HLSSynthIP.build``:
    ``vitis-run --mode hls`` for versions after 2024.2, ``vitis_hls`` up to 2024.2).

    >>> hls_tool_name((2024, 2)), hls_tool_name((2025, 1))
    ('vitis_hls', 'vitis-run')
    """
    return "vitis-run" if version > (2024, 2) else "vitis_hls"


def check_tools(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Locate Vivado and the HLS command finn-plus will call, check the tool version, and (when
    finn-plus' ``AUTOMATIC_DEPENDENCY_UPDATES`` is off, as in the build image) that every pinned
    finn-plus dependency is in ``$FINN_DEPS``; raise :class:`ToolsMissingError` listing every
    problem.

    ``env`` defaults to the process environment. The HLS command depends on the version
    (:func:`hls_tool_name`) and is looked up as finn-plus does: in ``FINN_TOOL_DIR_OVERRIDE``
    when set, else on ``PATH`` or in ``$XILINX_HLS/bin`` (which finn-plus adds to ``PATH``).
    Returns the tool paths found.
    """
    from sarvessel.hw.deps import auto_updates_enabled, missing_dependencies

    env = dict(os.environ if env is None else env)
    path = env.get("PATH", "")
    override = env.get("FINN_TOOL_DIR_OVERRIDE")
    missing = []
    found: dict[str, str] = {}
    viv = env.get("XILINX_VIVADO", "")
    version = xilinx_version(viv) if viv else None
    supported = " or ".join(f"{y}.{r}" for y, r in SUPPORTED_XILINX_VERSIONS)
    if not viv:
        missing.append("environment variable XILINX_VIVADO (the Vivado install folder)")
    elif not Path(viv).is_dir():
        missing.append(f"XILINX_VIVADO={viv} (folder does not exist)")
    elif version is None:
        missing.append(f"a tool version in XILINX_VIVADO={viv} (finn-plus reads it from the path)")
    elif version not in SUPPORTED_XILINX_VERSIONS:
        missing.append(f"Vivado/Vitis {supported} (XILINX_VIVADO={viv} is "
                       f"{version[0]}.{version[1]}, which finn-plus 1.6.1 does not support)")
    else:
        found["XILINX_VIVADO"] = viv
        found["version"] = f"{version[0]}.{version[1]}"
    hls = hls_tool_name(version) if version is not None else "vitis_hls"
    hls_dirs = [d for d in (env.get("XILINX_HLS"),) if d]
    hls_dirs += [d.replace("Vitis", "Vitis_HLS") for d in hls_dirs]  # finn-plus' 2024.2 fallback
    for tool in ("vivado", hls):
        if override:
            p = shutil.which(tool, path=override)
        else:
            extra = [str(Path(d) / "bin") for d in hls_dirs] if tool == hls else []
            p = shutil.which(tool, path=os.pathsep.join([path, *extra]))
        if p is None:
            where = f"in FINN_TOOL_DIR_OVERRIDE={override}" if override else "on PATH"
            missing.append(f"`{tool}` {where}")
        else:
            found[tool] = p
    finn_cli = Path(sys.executable).with_name("finn")
    if finn_cli.is_file():
        found["finn"] = str(finn_cli)
    elif shutil.which("finn", path=path):
        found["finn"] = str(shutil.which("finn", path=path))
    else:
        missing.append("the finn-plus `finn` command (pip install --no-deps finn-plus==1.6.1)")
    if not auto_updates_enabled(env):
        deps = env.get("FINN_DEPS")
        if not deps:
            missing.append("FINN_DEPS (AUTOMATIC_DEPENDENCY_UPDATES is off, so finn-plus must "
                           "find its pre-fetched dependencies there)")
        else:
            missing += [f"pre-fetched dependency {p} (python -m sarvessel.hw.deps fetch {deps})"
                        for p in missing_dependencies(Path(deps))]
    if missing:
        raise ToolsMissingError(
            f"sarvessel hw build needs the Xilinx tools (Vivado + Vitis HLS {supported}); "
            "missing: " + "; ".join(missing)
            + ". Source <Xilinx>/Vivado/<ver>/settings64.sh or use the Dockerfile at the repo "
            "root with the tools mounted; `sarvessel hw estimate` works without them."
        )
    return found


def write_finn_flow_config(cfg: HWConfig, model_path: Path | None = None) -> Path:
    """Write the finn-plus flow config (and the inner HWConfig) for ``cfg``; return its path.

    The front-half steps run with ``cfg`` but write into ``<output_dir>/flow``; finn-plus
    writes into ``<output_dir>/finn_build``. With ``cfg.verify_steps`` and ``model_path`` (the
    QONNX model) the config asks finn-plus to run those verification steps
    (``node_by_node_rtlsim``: each layer's generated IP in xsim after IP generation;
    ``stitched_ip_rtlsim``: the stitched accelerator with its FIFOs and width converters) on
    ``cfg.rtlsim_verify_tiles`` SAR-like tiles, against the QONNX model's outputs computed here
    in Python (:func:`write_verification_io`); finn-plus feeds them through the whole parent
    graph (CPU head and tail included) and writes ``verification_output/``.
    """
    from finn.builder.build_dataflow_config import default_build_dataflow_steps

    finn_out = (cfg.output_dir / "finn_build").resolve()
    finn_out.mkdir(parents=True, exist_ok=True)
    inner = cfg.replace(
        output_dir=(cfg.output_dir / "flow").resolve(), start_step=None, stop_step=None
    )
    write_json(finn_out / INNER_CONFIG_FILE, inner.to_dict())
    back = default_build_dataflow_steps[
        default_build_dataflow_steps.index("step_minimize_bit_width") + 1 :
    ]
    # finn-plus insists on a folding source; the folding is done by our set_folding step, so
    # hand it an empty config (step_apply_folding_config is not in the step list anyway)
    folding = finn_out / "folding_config_unused.json"
    write_json(folding, {"Defaults": {}})
    steps = [f"{__name__}.finn_step_{n}" for n in FRONT_STEPS]
    steps += [s for s in back if s not in SKIPPED_FINN_STEPS]
    flow = {
        "output_dir": str(finn_out),
        "synth_clk_period_ns": cfg.clock_period_ns(),
        "board": cfg.board.value,
        "shell_flow_type": cfg.shell_flow.value,
        "fpga_part": cfg.fpga_part,
        "mvau_wwidth_max": cfg.mvau_wwidth_max,
        "auto_fifo_depths": True,
        "folding_config_file": str(folding),
        "steps": steps,
        "generate_outputs": [
            "estimate_reports",
            "stitched_ip",
            "bitfile",
            "pynq_driver",
            "deployment_package",
        ],
    }
    if cfg.verify_steps and model_path is not None:
        inp, exp = write_verification_io(Path(model_path), cfg, finn_out)
        flow.update({
            "verify_steps": list(cfg.verify_steps),
            "verify_input_npy": str(inp),
            "verify_expected_output_npy": str(exp),
            "verify_save_full_context": False,
        })
    path = finn_out / FLOW_CONFIG_FILE
    write_json(path, flow)
    return path


def write_verification_io(model_path: Path, cfg: HWConfig, out_dir: Path) -> tuple[Path, Path]:
    """Write the rtlsim verification pair: ``cfg.rtlsim_verify_tiles`` SAR-like tiles
    (:func:`sarvessel.hw.verify.synthetic_sar_tiles`, float32 holding uint8 values, as the
    graph input) and the QONNX model's outputs on them (qonnx Python execution, tile by tile)."""
    import numpy as np
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    from sarvessel.hw.verify import synthetic_sar_tiles

    model = ModelWrapper(str(model_path))
    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    tiles = synthetic_sar_tiles(cfg.rtlsim_verify_tiles, channels=int(dims[1]),
                                tile=int(dims[-1])).astype(np.float32)
    expected = np.concatenate(
        [execute_onnx(model, {iname: t[None]})[oname] for t in tiles]).astype(np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    inp, exp = out_dir / VERIFY_INPUT_FILE, out_dir / VERIFY_EXPECTED_FILE
    np.save(inp, tiles)
    np.save(exp, expected)
    return inp, exp


def build_accelerator(
    model_path: Path,
    cfg: HWConfig,
    *,
    model_metadata: dict[str, Any] | None = None,
    finn_cli: Path | None = None,
) -> Path:
    """Build the bitstream for ``model_path`` (cleaned QONNX) with ``finn build`` and return the
    deploy package folder ``<output_dir>/deploy``.

    ``finn_cli`` is the finn-plus command; the default is the ``finn`` beside this Python.
    """
    tools = check_tools()
    from qonnx.core.modelwrapper import ModelWrapper

    from sarvessel.hw.deploy import make_driver_config, write_deploy_package
    from sarvessel.hw.estimate import estimate_model

    flow = write_finn_flow_config(cfg, model_path)
    finn_out = flow.parent
    cli = finn_cli or Path(tools.get("finn", "finn"))
    cmd = [
        str(cli), "build", str(flow), str(Path(model_path).resolve()), "--batch",
        "--build-path", str((cfg.output_dir / "finn_tmp").resolve()),
        "--num-default-workers", str(cfg.vivado_jobs),
    ]
    log.info("running %s (hours for a first build)", " ".join(cmd))
    with (finn_out / "finn_build.log").open("w") as logf:
        rc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, check=False).returncode
    bits = sorted(finn_out.rglob("*.bit"))
    if rc != 0 or not bits:
        raise HWError(
            f"finn-plus build failed (exit {rc}, bitfile {'found' if bits else 'missing'}); "
            f"see {finn_out / 'finn_build.log'}"
        )
    verification = rtlsim_verification_results(finn_out, cfg) if cfg.verify_steps else {}
    hwh = _find_one(finn_out, "*.hwh")
    settings = next(iter(sorted(finn_out.rglob("settings.json"))), None)
    inner = HWConfig.from_file(finn_out / INNER_CONFIG_FILE)
    folded = ModelWrapper(str(inner.intermediate_dir() / "minimize_bit_width.onnx"))
    parent_path = inner.output_dir / "dataflow_parent.onnx"
    if not parent_path.is_file():
        raise HWError(f"{parent_path} missing after the build")
    est = estimate_model(folded, cfg)
    driver = make_driver_config(
        folded,
        ModelWrapper(str(parent_path)),
        board=cfg.board.value,
        fpga_part=cfg.fpga_part,
        clock_mhz=cfg.clock_mhz,
        model_metadata=model_metadata,
        estimate={"tiles_per_s": est.tiles_per_s, "scene_seconds": est.scene_seconds},
    )
    rw = next(iter(sorted(finn_out.rglob("runtime_weights"))), None)
    pkg = write_deploy_package(
        cfg.output_dir / "deploy",
        driver,
        bitfile=bits[0],
        hwh=hwh,
        runtime_weights_dir=rw,
        finn_settings=settings,
    )
    write_json(pkg / "build_config.json", cfg.to_dict())
    if verification:
        write_json(pkg / "rtlsim_verification.json", verification)
    log.info("deploy package written to %s", pkg)
    return pkg


def rtlsim_verification_results(finn_out: Path, cfg: HWConfig) -> dict[str, list[str]]:
    """The outcome of each requested verification step per tile, read from finn-plus'
    ``verification_output/verify_<step>_<tile>_<SUCCESS|FAIL>.npy`` files (finn-plus only logs a
    failure and carries on); raise :class:`VerificationError` unless every step passed on every
    tile."""
    from sarvessel.hw.errors import VerificationError

    vdir = finn_out / "verification_output"
    results: dict[str, list[str]] = {}
    problems = []
    for step in cfg.verify_steps:
        results[step] = []
        for b in range(cfg.rtlsim_verify_tiles):
            hits = sorted(vdir.glob(f"verify_{step}_{b}_*.npy"))
            outcome = hits[0].stem.rsplit("_", 1)[-1] if hits else "MISSING"
            results[step].append(outcome)
            if outcome != "SUCCESS":
                problems.append(f"{step} tile {b}: {outcome}")
    if problems:
        raise VerificationError(
            f"rtlsim verification failed ({'; '.join(problems)}); see {vdir} and "
            f"{finn_out / 'finn_build.log'}")
    log.info("rtlsim verification passed: %s", results)
    return results


def _find_one(root: Path, pattern: str) -> Path:
    hits = sorted(root.rglob(pattern))
    if not hits:
        raise HWError(f"the finn-plus build left no {pattern} under {root}")
    return hits[0]


def _finn_step(name: str) -> Callable[[Any, Any], Any]:
    """A finn-plus build step running this package's step ``name`` with the inner HWConfig
    stored beside the finn-plus outputs (qonnx/finn are imported only when it runs)."""
    def finn_step(model: Any, fcfg: Any) -> Any:
        from sarvessel.hw.steps import PARENT_MODEL_PROP, resolve_step

        _, fn = resolve_step(name)
        cfg = HWConfig.from_file(Path(fcfg.output_dir) / INNER_CONFIG_FILE)
        cfg.output_dir.mkdir(parents=True, exist_ok=True)
        model = fn(model, cfg)
        cfg.intermediate_dir().mkdir(parents=True, exist_ok=True)
        model.save(str(cfg.intermediate_dir() / f"{name}.onnx"))
        parent = model.get_metadata_prop(PARENT_MODEL_PROP)
        if name == "create_dataflow_partition" and parent:
            # finn-plus' later steps look for the parent graph here
            dst = Path(fcfg.output_dir) / "intermediate_models" / "dataflow_parent.onnx"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(parent, dst)
        return model

    finn_step.__name__ = finn_step.__qualname__ = f"finn_step_{name}"
    finn_step.__doc__ = f"sarvessel step {name!r} as a finn-plus build step."
    return finn_step


finn_step_tidy_up = _finn_step("tidy_up")
finn_step_qonnx_to_finn = _finn_step("qonnx_to_finn")
finn_step_streamline = _finn_step("streamline")
finn_step_convert_to_hw = _finn_step("convert_to_hw")
finn_step_minimize_bit_width_initial = _finn_step("minimize_bit_width_initial")
finn_step_create_dataflow_partition = _finn_step("create_dataflow_partition")
finn_step_specialize_layers = _finn_step("specialize_layers")
finn_step_set_folding = _finn_step("set_folding")
finn_step_minimize_bit_width = _finn_step("minimize_bit_width")
