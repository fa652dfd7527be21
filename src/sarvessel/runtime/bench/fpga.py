"""The FPGA side of a benchmark: our accelerator's hardware estimate, what a board would see
given the host-side costs measured here, and the published DPU system beside it.

- Our accelerator: the FINN estimate written by ``sarvessel hw estimate`` (``estimate.json``:
  tiles/s at the build clock, seconds per 29,400 × 24,400 scene). No bitstream has been built,
  so these are estimates.
- The board's end-to-end scene time: the accelerator time per tile beside the host-side stages
  (read, preprocess, post, merge, write) per tile measured by this benchmark's CPU run. With the
  stages overlapped (accelerator busy while the CPU works on the neighbouring rows) a tile costs
  the slower of the two; without overlap, their sum. The host costs are this machine's, not the
  board's Cortex-A53s, which are slower: a lower bound for the board.
- The published system (:data:`PUBLISHED_DPU`): Laganier, Fletcher, Kwan, Walters, Nockles,
  "Efficient SAR Vessel Detection for FPGA-Based On-Satellite Sensing", arXiv 2507.04842
  (SEC '25): YOLOv8n on a Vitis AI DPU (B4096 at 325 MHz) on the same KV260, < 60 s per ~700 MPx
  scene at < 10 W; per 800 × 800 chip 71 / 33 / 41 ms pre-processing / DPU / post-processing.
- Power: :func:`~sarvessel.runtime.power.model.project_scene` with the published-figure KV260
  model (:data:`~sarvessel.runtime.power.KV260_PUBLISHED`, an estimate) at the estimated tile
  rate, and at the host-bound rate when the host stages are the slower side (idle power is paid
  for the whole, longer scene), beside the paper's claim.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sarvessel.runtime.power import KV260_PUBLISHED, project_scene
from sarvessel.runtime.power.model import format_projection, tiles_in_scene

log = logging.getLogger(__name__)

__all__ = ["HOST_STAGES", "PUBLISHED_DPU", "board_projection", "fpga_side", "read_estimate"]

#: The published DPU system (arXiv 2507.04842; see the module docstring).
PUBLISHED_DPU: dict[str, Any] = {
    "source": "Laganier et al., Efficient SAR Vessel Detection for FPGA-Based On-Satellite "
              "Sensing, arXiv 2507.04842 (SEC '25)",
    "accelerator": "Vitis AI DPU B4096 @ 325 MHz, Kria KV260",
    "model": "YOLOv8n (INT8), 800 x 800 x 3 chips",
    "scene_mpx": 700.0,
    "scene_seconds_below": 60.0,
    "watts_below": 10.0,
    "chip": 800,
    "pre_ms": 71.0,
    "accel_ms": 33.0,
    "post_ms": 41.0,
}
#: Pipeline stages that run on the host (the board's ARM cores) around the accelerator.
HOST_STAGES = ("read", "preprocess", "post", "merge", "write")
#: The average xView3 scene (px), the scene the estimate is quoted for.
XVIEW3_SCENE = (24_400, 29_400)


def read_estimate(path: Path | str) -> dict[str, Any]:
    """The figures of a ``sarvessel hw estimate`` report (``estimate.json``) a benchmark
    quotes: board, clock, tile, tiles/s, scene seconds and MPx/s, bottleneck, LUT/BRAM share."""
    d = json.loads(Path(path).read_text())
    keep = ("board", "clock_mhz", "tile_size", "tile_overlap", "scene_height", "scene_width",
            "tiles_per_scene", "bottleneck", "bottleneck_cycles", "tiles_per_s",
            "scene_mpx_per_s", "scene_seconds", "fits_budget", "shares")
    out = {k: d[k] for k in keep if k in d}
    out["ms_per_tile"] = 1e3 / d["tiles_per_s"] if d.get("tiles_per_s") else None
    out["source"] = str(path)
    return out


def board_projection(accel_ms_per_tile: float, host_ms_per_tile: Mapping[str, float], *,
                     tiles: int, write_s_per_scene: float | None = None) -> dict[str, Any]:
    """Scene seconds a board would need: accelerator ms/tile beside host-stage ms/tile
    (mean per tile run), overlapped (the slower of the two) and serial (their sum).

    write_s_per_scene: the output writing of one scene (s). Writing costs about the same for
    any scene (the quicklook has a fixed size), so it is shared over this scene's ``tiles``
    rather than taken per tile from a small benchmark scene; the default (None) takes
    ``host_ms_per_tile["write"]`` as it is.
    """
    per_tile = {s: float(host_ms_per_tile.get(s, 0.0)) for s in HOST_STAGES}
    if write_s_per_scene is not None:
        per_tile["write"] = 1e3 * write_s_per_scene / max(1, tiles)
    host = sum(per_tile.values())
    overlapped = max(accel_ms_per_tile, host)
    return {
        "tiles": tiles,
        "accel_ms_per_tile": round(accel_ms_per_tile, 3),
        "host_ms_per_tile": {s: round(v, 3) for s, v in per_tile.items()},
        "host_ms_per_tile_total": round(host, 3),
        "bound_by": "accelerator" if accel_ms_per_tile >= host else "host",
        "scene_s_overlapped": round(tiles * overlapped / 1e3, 2),
        "scene_s_serial": round(tiles * (accel_ms_per_tile + host) / 1e3, 2),
        "accel_share_overlapped": round(accel_ms_per_tile / overlapped, 3) if overlapped else None,
    }


def fpga_side(
    estimate: Path | str | None,
    *,
    host_ms_per_tile: Mapping[str, float] | None = None,
    write_s_per_scene: float | None = None,
    host_label: str = "",
    sim_run: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the report says about the board: the estimate, the projected end-to-end
    scene time from this machine's host costs, the paced simulator's run when there is one, the
    published DPU system per chip and per MPx, and the power projection.

    estimate: an ``estimate.json``; None or a missing file leaves our accelerator out.
    host_ms_per_tile: mean ms per tile by host stage from the CPU run (see
    :func:`board_projection`), and write_s_per_scene the run's output writing (s).
    sim_run: a measured ``sim`` backend run, when that backend exists.
    """
    dpu = dict(PUBLISHED_DPU)
    chip_mpx = dpu["chip"] ** 2 / 1e6
    dpu["ms_per_mpx"] = {k: round(dpu[f"{k}_ms"] / chip_mpx, 1) for k in ("pre", "accel", "post")}
    dpu["chips_per_scene"] = tiles_in_scene(*XVIEW3_SCENE, tile=dpu["chip"], overlap=0)
    dpu["scene_s_serial_from_chip_ms"] = round(
        dpu["chips_per_scene"] * (dpu["pre_ms"] + dpu["accel_ms"] + dpu["post_ms"]) / 1e3, 1)
    out: dict[str, Any] = {"published_dpu": dpu}
    if estimate is None or not Path(estimate).is_file():
        out["estimate"] = None
        out["note"] = (f"no hardware estimate at {estimate}" if estimate else
                       "no hardware estimate given")
        return out
    est = read_estimate(estimate)
    out["estimate"] = est
    tiles = int(est.get("tiles_per_scene") or tiles_in_scene(*XVIEW3_SCENE))
    if host_ms_per_tile and est.get("ms_per_tile"):
        proj = board_projection(est["ms_per_tile"], host_ms_per_tile, tiles=tiles,
                                write_s_per_scene=write_s_per_scene)
        proj["host"] = host_label
        out["board_projection"] = proj
    if sim_run and not sim_run.get("skipped"):
        mpx = sim_run["megapixels"]
        out["sim"] = {"label": sim_run["label"], "megapixels": mpx, "wall_s": sim_run["wall_s"],
                      "mpx_per_s": sim_run["mpx_per_s"],
                      "scene_s_at_this_rate": round(
                          XVIEW3_SCENE[0] * XVIEW3_SCENE[1] / 1e6 / sim_run["mpx_per_s"], 2)
                      if sim_run.get("mpx_per_s") else None}
    if est.get("tiles_per_s"):
        p = project_scene(KV260_PUBLISHED, est["tiles_per_s"],
                          scene_mpx=XVIEW3_SCENE[0] * XVIEW3_SCENE[1] / 1e6,
                          tile=int(est.get("tile_size", 512)),
                          overlap=int(est.get("tile_overlap", 64)))
        out["power_projection"] = {**p.to_dict(), "line": format_projection(p),
                                   "model": KV260_PUBLISHED.to_dict()}
        bp = out.get("board_projection")
        if bp and bp["bound_by"] == "host":  # the board runs at the host stages' pace
            rate = bp["tiles"] / bp["scene_s_overlapped"]
            q = project_scene(KV260_PUBLISHED, rate,
                              scene_mpx=XVIEW3_SCENE[0] * XVIEW3_SCENE[1] / 1e6,
                              tile=int(est.get("tile_size", 512)),
                              overlap=int(est.get("tile_overlap", 64)))
            out["power_projection_host_bound"] = {**q.to_dict(), "line": format_projection(q)}
    return out
