#!/usr/bin/env python
"""Archive throughput of ``sarvessel detect-many`` on LocalClusters of different shapes.

Generates N synthetic scenes once (kept in --data for reruns), then runs the same archive on a
LocalCluster of each WORKERSxTHREADS shape (processes × onnxruntime threads each), into a fresh
output folder each time, and reports scenes/hour and MPx/s from the first task submitted to the
last outcome (cluster start reported apart). The shapes run round-robin --repeat times and the
median run of each counts, so a load that comes and goes on a shared machine hits every shape
alike. Example (the figures of docs/archive.md):

    python scripts/bench_archive.py --scenes 8 --size 2048x2048 --shapes 1x1,2x1,1x2 \
        --repeat 3 --json out/bench/archive.json
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from sarvessel.runtime.io.outputs import write_json


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=8, help="scenes in the archive (default 8)")
    ap.add_argument("--size", default="2048x2048", help="scene size HxW in px (default "
                    "2048x2048)")
    ap.add_argument("--shapes", default="1x1,2x1,1x2",
                    help="LocalCluster shapes WORKERSxTHREADS, comma-separated (default "
                    "1x1,2x1,1x2)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="round-robin rounds over the shapes; the median counts (default 3)")
    ap.add_argument("--backend", default="onnx", help="detector backend (default onnx)")
    ap.add_argument("--data", type=Path, default=Path("out/bench/archive_scenes"),
                    help="where the generated scenes are kept (default out/bench/archive_scenes)")
    ap.add_argument("--out", type=Path, default=Path("out/bench/archive_runs"),
                    help="output folders, one per shape, emptied first")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    try:
        h, w = (int(v) for v in args.size.lower().split("x"))
        shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes.split(",")]
        if args.scenes < 1 or args.repeat < 1 or any(len(s) != 2 or min(s) < 1
                                                      for s in shapes):
            raise ValueError
    except ValueError:
        print(f"bench_archive.py: error: bad --size {args.size!r}, --shapes {args.shapes!r}, "
              f"--scenes {args.scenes} or --repeat {args.repeat}", file=sys.stderr)
        return 2

    from rich.console import Console
    from rich.table import Table

    from sarvessel.archive.cluster import machine
    from sarvessel.archive.scenes import scan_scenes
    from sarvessel.archive.task import usable_cores
    from sarvessel.synth.generate import synthesize_scene

    scenes = []
    for k in range(args.scenes):
        sid = f"bench{k:03d}_{h}x{w}"
        if not (args.data / sid / "VH_dB.tif").is_file():
            synthesize_scene(args.data, scene_id=sid, height=h, width=w, seed=100 + k)
        scenes.append(args.data / sid)
    plans = scan_scenes(scenes)
    cores, memory = machine()
    runs: dict[tuple[int, int], list[dict]] = {shape: [] for shape in shapes}
    for _ in range(args.repeat):
        for workers, threads in shapes:
            r = _run_once(plans, args, workers, threads, cores, memory)
            if r is None:
                return 1
            runs[(workers, threads)].append(r)
    rows = []
    for (workers, threads), rs in runs.items():
        walls = sorted(r["wall_s"] for r in rs)
        med = sorted(rs, key=lambda r: r["wall_s"])[len(rs) // 2]
        rows.append({"workers": workers, "threads": threads, "scenes": len(plans),
                     "megapixels": med["megapixels"], "wall_s": med["wall_s"],
                     "wall_s_all": walls, "cluster_start_s": med["cluster_start_s"],
                     "scenes_per_hour": len(plans) * 3600 / med["wall_s"],
                     "mpx_per_s": med["megapixels"] / med["wall_s"],
                     "detections": med["detections"]})
    base = rows[0]["scenes_per_hour"]
    for r in rows:
        r["speedup_vs_first"] = r["scenes_per_hour"] / base
    result = {"size": [h, w], "backend": args.backend, "usable_cores": usable_cores(),
              "memory_bytes": memory, "repeat": args.repeat, "runs": rows,
              "note": "wall_s: median over the rounds, first task submitted to last outcome; "
                      "cluster start apart"}
    tab = Table(title=f"archive of {args.scenes} scenes of {h}x{w} px, backend {args.backend}, "
                f"{cores} usable cores")
    for col in ("workers x threads", "median wall s", "all runs s", "scenes/hour", "MPx/s",
                "speed-up", "cluster start s"):
        tab.add_column(col, justify="right")
    for r in rows:
        tab.add_row(f"{r['workers']} x {r['threads']}", f"{r['wall_s']:.1f}",
                    " ".join(f"{w:.1f}" for w in r["wall_s_all"]),
                    f"{r['scenes_per_hour']:.0f}", f"{r['mpx_per_s']:.2f}",
                    f"{r['speedup_vs_first']:.2f}", f"{r['cluster_start_s']:.1f}")
    Console().print(tab)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, result)
    return 0


def _run_once(plans, args, workers: int, threads: int, cores: int, memory: int) -> dict | None:
    """One archive run on a fresh LocalCluster of ``workers`` x ``threads``."""
    from sarvessel.archive.cluster import LocalPlan, open_cluster
    from sarvessel.archive.run import run_archive
    from sarvessel.archive.task import ArchiveJob, DetectorSpec

    out = args.out / f"{workers}x{threads}"
    shutil.rmtree(out, ignore_errors=True)
    spec = DetectorSpec(backend=args.backend, threads=threads)
    det = spec.build()
    plan = LocalPlan(workers, threads, cores, memory)
    job = ArchiveJob(out_dir=str(out.resolve()), detector=spec)
    report = run_archive(plans, job, detector_name=det.name,
                         detector_fingerprint=det.fingerprint, tile_size=det.tile_size,
                         connect=lambda: open_cluster(plan=plan, dashboard_address=None))
    d = report.as_dict()
    if d["scenes"]["failed"]:
        print(f"bench_archive.py: {d['scenes']['failed']} scenes failed: "
              f"{d['failures'][0]['message']}", file=sys.stderr)
        return None
    return {"megapixels": d["megapixels"]["detected_this_run"], "wall_s": d["wall_s"],
            "cluster_start_s": d["cluster_start_s"], "detections": d["detections"]}


if __name__ == "__main__":
    sys.exit(main())
