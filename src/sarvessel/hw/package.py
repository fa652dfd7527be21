"""A deploy package without Vivado: everything the board runtime reads except the bitstream,
plus what the ``sim`` backend needs to stand in for the accelerator.

What a real build writes into ``<out>/deploy`` (``hw build``) is written here from the same flow
(the FINN estimate steps run without Vivado): ``driver_config.json`` from the folded dataflow
partition and its parent graph (:func:`~sarvessel.hw.deploy.make_driver_config`), with

- ``sim``: the integer-exact float graph of the model (:mod:`sarvessel.quantize.intfloat`)
  without its tail, which outputs the accelerator's integer accumulators: what the simulator
  runs in place of the fabric;
- ``selftest``: host tiles and the accumulators the accelerator must return for them, which
  ``sarvessel board check`` compares on the board;
- ``estimate``: cycles per tile at the clock, so a paced simulator runs at the accelerator's rate;
- ``MANIFEST.sha256`` over every file, which ``sarvessel board flash`` verifies on arrival.

A real build later adds ``accelerator.bit`` and ``.hwh`` to a package like this one. The tail
the runtime applies (``cpu_tail``) comes from FINN's parent graph; it is checked here against the
intfloat graph's own tail (equal within 1e-6) and written with the intfloat graph's float32
values, so the simulator, the hardware path and the CPU graph end in the same head map.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from sarvessel.hw.config import HWConfig
from sarvessel.hw.errors import HWError
from sarvessel.runtime.io.outputs import write_json

log = logging.getLogger(__name__)

#: Where the simulator graph and the self-test files go inside a package.
SIM_MODEL = "sim/accumulators.onnx"
SELFTEST_INPUTS, SELFTEST_EXPECTED = "selftest/inputs.npy", "selftest/expected_acc.npy"


def write_sim_package(
    qonnx_path: Path | str,
    intfloat_path: Path | str,
    out_dir: Path | str,
    cfg: HWConfig,
    *,
    selftest_tiles: int = 2,
    model_metadata: dict[str, Any] | None = None,
) -> Path:
    """Run the estimate flow on ``qonnx_path`` and write a simulator deploy package to
    ``out_dir`` (replaced if it exists); returns its folder.

    intfloat_path: the model's intfloat graph (``scripts/export_intfloat.py``); the sim graph
    is its tail-less form. selftest_tiles: SAR-like tiles whose expected accumulators are
    stored (their inputs from :func:`~sarvessel.hw.verify.synthetic_sar_tiles`); the default
    is 2. model_metadata: the model's sidecar (the default reads the intfloat graph's).
    """
    from qonnx.core.modelwrapper import ModelWrapper

    from sarvessel.hw.deploy import make_driver_config
    from sarvessel.hw.estimate import estimate_model
    from sarvessel.hw.flow import run_flow
    from sarvessel.hw.steps import PARENT_MODEL_PROP
    from sarvessel.hw.verify import synthetic_sar_tiles
    from sarvessel.quantize.intfloat import accumulator_model, tail_of
    from sarvessel.runtime.board.package import load_package, write_manifest
    from sarvessel.runtime.contract import DRIVER_CONFIG, read_metadata

    out = Path(out_dir)
    flow = run_flow(Path(qonnx_path), cfg)
    folded = flow.model
    parent_path = folded.get_metadata_prop(PARENT_MODEL_PROP)
    if not parent_path or not Path(parent_path).is_file():
        raise HWError(f"the flow left no parent graph ({parent_path!r})")
    est = estimate_model(folded, cfg)
    meta = model_metadata if model_metadata is not None else read_metadata(intfloat_path).to_dict()
    meta = {k: v for k, v in meta.items() if k != "graph"}
    driver = make_driver_config(
        folded, ModelWrapper(parent_path), board=cfg.board.value, fpga_part=cfg.fpga_part,
        clock_mhz=cfg.clock_mhz, model_metadata=meta,
        estimate={"cycles_per_tile": int(est.bottleneck_cycles), "tiles_per_s": est.tiles_per_s,
                  "scene_seconds": est.scene_seconds, "clock_mhz": cfg.clock_mhz})
    scale, bias = tail_of(intfloat_path)
    _check_tail(driver["cpu_tail"], scale, bias, intfloat_path)
    # the same float32 numbers as the CPU graph's tail, so sim and onnx give identical scores
    driver["cpu_tail"]["scale"] = [float(v) for v in scale]
    driver["cpu_tail"]["bias"] = [float(v) for v in bias]
    if out.exists():
        shutil.rmtree(out)
    (out / "sim").mkdir(parents=True)
    import onnx

    onnx.save(accumulator_model(intfloat_path), str(out / SIM_MODEL))
    driver["sim"] = {"model": SIM_MODEL, "input_layout": "NCHW", "output_layout": "NCHW"}
    if selftest_tiles > 0:
        tiles = synthetic_sar_tiles(selftest_tiles, channels=int(meta["channels"]),
                                    tile=int(meta["tile_size"]), seed=2026)
        (out / "selftest").mkdir()
        np.save(out / SELFTEST_INPUTS, tiles)
        np.save(out / SELFTEST_EXPECTED, _accumulators(out / SIM_MODEL, tiles))
        driver["selftest"] = {"inputs": SELFTEST_INPUTS, "expected_acc": SELFTEST_EXPECTED}
    driver["build"] = {"flow": "estimate (no bitstream)", "source_model": Path(qonnx_path).name,
                       **_versions()}
    write_json(out / DRIVER_CONFIG, driver)
    load_package(out)
    write_manifest(out)
    log.info("simulator package written to %s (%.0f cycles per tile at %g MHz)", out,
             est.bottleneck_cycles, cfg.clock_mhz)
    return out


def _accumulators(sim_model: Path, tiles: np.ndarray) -> np.ndarray:
    """The simulator graph's accumulators of ``tiles`` as int32 NHWC (the accelerator's
    output layout)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(sim_model), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    acc = np.concatenate([sess.run(None, {name: t[None].astype(np.float32)})[0] for t in tiles])
    return np.rint(acc).astype(np.int32).transpose(0, 2, 3, 1).copy()


def _check_tail(tail: dict[str, Any], scale: np.ndarray, bias: np.ndarray, path: Path | str
                ) -> None:
    """FINN's CPU tail and the intfloat graph's must map accumulators to the same head map."""
    s = np.broadcast_to(np.asarray(tail["scale"], np.float32), scale.shape)
    b = np.broadcast_to(np.asarray(tail["bias"], np.float32), bias.shape)
    if not (np.allclose(s, scale, rtol=1e-6, atol=0) and np.allclose(b, bias, rtol=1e-6,
                                                                     atol=1e-6)):
        raise HWError(f"{path}: its tail (scale, bias) differs from the FINN parent graph's "
                      "CPU tail; the simulator would not match the accelerator")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("finn-plus", "qonnx", "onnxruntime"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out
