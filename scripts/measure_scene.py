#!/usr/bin/env python
"""Peak memory and wall time of `sarvessel detect` on a (generated) large scene.

Runs the detector in a child process and reads the child's peak RSS from getrusage, so the
figure is the whole process's high-water mark (what /usr/bin/time -v reports as "Maximum
resident set size"). Example (the issue's acceptance figure):

    python scripts/measure_scene.py --size 20000 --backend cfar --json out/bench/rss_20k.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# The child measures itself, so the scene generation (another child) does not count.
_CHILD = """
import resource, sys
from pathlib import Path
from sarvessel.cli import main
code = main(sys.argv[2:])
Path(sys.argv[1]).write_text(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
sys.exit(code)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=20000, help="scene side in px (default 20000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenes", type=Path, default=Path("out/bench/scenes"))
    ap.add_argument("--backend", default="cfar")
    ap.add_argument("--out", type=Path, default=Path("out/bench/detect"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    rss_file = args.out / "peak_rss_kib.txt"
    args.out.mkdir(parents=True, exist_ok=True)
    scene_id = f"synth{args.seed:04d}{args.size}x{args.size}v"
    scene = args.scenes / scene_id
    if not (scene / "VH_dB.tif").is_file():
        subprocess.run([sys.executable, "-m", "sarvessel", "synth", str(args.scenes), "--size",
                        f"{args.size}x{args.size}", "--seed", str(args.seed)], check=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(rss_file), "detect", str(scene),
                           "--out", str(args.out), "--backend", args.backend, "--no-resume"])
    wall = time.perf_counter() - t0
    peak_mb = int(rss_file.read_text()) / 1024  # ru_maxrss is in KiB on Linux
    summary = json.loads((args.out / f"{scene_id}_summary.json").read_text())
    result = {"scene": str(scene), "megapixels": args.size**2 / 1e6, "backend": args.backend,
              "exit_code": proc.returncode, "wall_s": wall, "peak_rss_mb": peak_mb,
              "pipeline_mpx_per_s": summary["mpx_per_s"], "detections": summary["detections"]}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
