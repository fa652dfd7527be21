#!/usr/bin/env python
"""Peak memory and wall time of `sarvessel detect` on a (generated) large scene.

Runs the detector in a child process and reads the child's peak RSS from getrusage, so the
figure is the whole process's high-water mark (what /usr/bin/time -v reports as "Maximum
resident set size"). Examples (the acceptance figure, then memory against scene width):

    python scripts/measure_scene.py --size 20000 --backend cfar --json out/bench/rss_20k.json
    python scripts/measure_scene.py --height 3000 --width 16000 --backend noop
    python scripts/measure_scene.py --height 16000 --width 3000 --backend noop
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from sarvessel.runtime.io.outputs import json_safe, write_json

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
    ap.add_argument("--height", type=int, help="scene height in px (default: --size)")
    ap.add_argument("--width", type=int, help="scene width in px (default: --size)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenes", type=Path, default=Path("out/bench/scenes"))
    ap.add_argument("--backend", default="cfar")
    ap.add_argument("--out", type=Path, default=Path("out/bench/detect"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    rss_file = args.out / "peak_rss_kib.txt"
    args.out.mkdir(parents=True, exist_ok=True)
    height, width = args.height or args.size, args.width or args.size
    scene_id = f"synth{args.seed:04d}{height}x{width}v"
    scene = args.scenes / scene_id
    if not (scene / "VH_dB.tif").is_file():
        subprocess.run([sys.executable, "-m", "sarvessel", "synth", str(args.scenes), "--size",
                        f"{height}x{width}", "--seed", str(args.seed)], check=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(rss_file), "detect", str(scene),
                           "--out", str(args.out), "--backend", args.backend, "--no-resume"])
    wall = time.perf_counter() - t0
    peak_mb = int(rss_file.read_text()) / 1024  # ru_maxrss is in KiB on Linux
    summary = json.loads((args.out / f"{scene_id}_summary.json").read_text())
    result = {"scene": str(scene), "height": height, "width": width,
              "megapixels": height * width / 1e6, "backend": args.backend,
              "exit_code": proc.returncode, "wall_s": wall, "peak_rss_mb": peak_mb,
              "pipeline_mpx_per_s": summary["mpx_per_s"], "detections": summary["detections"]}
    print(json.dumps(json_safe(result), indent=2, allow_nan=False))
    if args.json:
        write_json(args.json, result)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
