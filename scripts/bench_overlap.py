#!/usr/bin/env python
"""How much of the accelerator's rate the scene pipeline keeps, with and without overlapping its
stages: the ``sim`` backend paced to the deploy package's estimated cycles per tile, timing
only (a fixed open-sea output, so this CPU need not emulate the fabric in time), on a generated
scene of >= 400 MPx. The host side runs as on the board: read, preprocess, pack, unpack, CPU
tail, decode, merge.

    python scripts/bench_overlap.py --size 20480 --json out/bench_overlap/overlap.json
    python scripts/bench_overlap.py --size 20480 --clock-mhz 200   # the pre-margin 200 MHz pace

The fraction reported is the accelerator-bound time (tiles run x seconds per tile) over the
wall time of the run: 1.0 means the accelerator never waited for the host.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from sarvessel.runtime.backends import DEFAULT_SIM_PACKAGE
from sarvessel.runtime.backends.accelerator import AcceleratorBackend
from sarvessel.runtime.board.accelerator import SimAccelerator
from sarvessel.runtime.detector import compose
from sarvessel.runtime.io.outputs import json_safe, write_json
from sarvessel.runtime.io.scene import open_scene
from sarvessel.runtime.pipeline import PipelineConfig, run_scene


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=20480, help="scene side in px (default 20480: "
                    "419 MPx)")
    ap.add_argument("--seed", type=int, default=4242, help="scene seed (default 4242)")
    ap.add_argument("--root", type=Path, default=Path("out/bench_overlap"),
                    help="where the scene is generated and kept (default out/bench_overlap)")
    ap.add_argument("--package", type=Path, default=DEFAULT_SIM_PACKAGE,
                    help="deploy package (default: the shipped scene model's simulator package)")
    ap.add_argument("--clock-mhz", type=float, default=None,
                    help="pace at this clock instead of the package's")
    ap.add_argument("--batch", type=int, default=8, help="tiles per accelerator call (default 8)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)

    from sarvessel.synth.generate import synthesize_scene

    sid = f"synth{args.seed:04d}{args.size}x{args.size}v"
    scene_dir = args.root / "scenes" / sid
    if not (scene_dir / "VH_dB.tif").is_file():
        t0 = time.perf_counter()
        synthesize_scene(args.root / "scenes", height=args.size, width=args.size, seed=args.seed)
        print(f"generated {sid} in {time.perf_counter() - t0:.0f} s", flush=True)
    core = SimAccelerator(args.package, batch_size=args.batch, timing_only=True)
    cycles = core.package.config["estimate"]["cycles_per_tile"]
    clock = args.clock_mhz or core.package.clock_mhz
    core.seconds_per_tile = cycles / (clock * 1e6)
    detector = compose(AcceleratorBackend(core))
    runs = {}
    for name, concurrent in (("sequential", False), ("overlapped", True)):
        core.paced_wait_s = 0.0
        cfg = PipelineConfig(batch_size=args.batch, concurrent=concurrent)
        with open_scene(scene_dir) as scene:
            res = run_scene(scene, detector, config=cfg)
        t = res.timings
        bound = res.tiles_run * core.seconds_per_tile
        per_tile = {k: 1e3 * v / max(res.tiles_run, 1) for k, v in t.as_dict().items()}
        # the infer stage's own host work: packing, unpacking and the CPU tail
        per_tile["pack_unpack_tail"] = 1e3 * (t.infer - core.paced_wait_s) / max(res.tiles_run, 1)
        runs[name] = {"wall_s": t.total, "tiles_run": res.tiles_run,
                      "accelerator_bound_s": bound, "fraction_of_accelerator_rate": bound / t.total,
                      "scene_mpx": res.megapixels, "mpx_per_s": res.mpx_per_s,
                      "ms_per_tile": per_tile}
        print(f"{name:10s}: {t.total:6.2f} s for {res.tiles_run} tiles, accelerator-bound "
              f"{bound:.2f} s -> {bound / t.total:.3f} of the accelerator's rate", flush=True)
    out = {"scene": str(scene_dir), "package": str(args.package), "clock_mhz": clock,
           "cycles_per_tile": cycles, "ms_per_tile_accelerator": 1e3 * core.seconds_per_tile,
           "batch": args.batch, "runs": runs,
           "host": {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": sys.version.split()[0],
                    "numpy": np.__version__, "machine": platform.machine()}}
    print(json.dumps(json_safe(out["runs"]["overlapped"]["ms_per_tile"]), indent=1,
                     allow_nan=False))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, out)
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
