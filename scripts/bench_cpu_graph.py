#!/usr/bin/env python
"""Per-tile CPU time of the shipped scene model's graphs against the stock YOLOv8n, in one run.

    python scripts/bench_cpu_graph.py                       # batch 1 and 8, 2 threads, 512²
    python scripts/bench_cpu_graph.py --profile docs_profile.json --rounds 20

Times, on the same random 512² tiles and with the runtime's session options (full graph
optimisation, sequential, ``--threads`` intra-op threads): the QCDQ graph the runtime loads
today (``xview3_w4a4.onnx``), the integer-exact float graph (``xview3_w4a4_intfloat.onnx``)
and the stock YOLOv8n (:mod:`sarvessel.model.peer`, exported once into ``--cache``). The
models run round-robin, one batch each per round, so a shared machine's load falls on all of
them alike; the table gives the median ms per tile and the peer / model ratio. ``--profile``
adds onnxruntime's per-operator time for both scene graphs at batch 1.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sarvessel.runtime.io.outputs import write_json

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "src" / "sarvessel" / "runtime" / "models"


def session(path: Path, threads: int, *, profile: str | None = None):
    """An onnxruntime session with the runtime's options (optionally profiling)."""
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    o.inter_op_num_threads = 1
    o.intra_op_num_threads = threads
    o.log_severity_level = 3
    if profile:
        o.enable_profiling = True
        o.profile_file_prefix = profile
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def op_profile(path: Path, channels: int, threads: int, runs: int = 5) -> dict[str, float]:
    """Mean ms per batch-1 run by operator type (onnxruntime's kernel times)."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = session(path, threads, profile=str(Path(tmp) / "p"))
        x = np.random.default_rng(0).integers(0, 256, (1, channels, 512, 512)).astype(np.float32)
        name = sess.get_inputs()[0].name
        sess.run(None, {name: x})
        for _ in range(runs):
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    by_op: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"] / 1e3 / (runs + 1)
    return dict(sorted(by_op.items(), key=lambda kv: -kv[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    p.add_argument("--batches", default="1,8", help="batch sizes (default 1,8)")
    p.add_argument("--rounds", type=int, default=10, help="timed rounds (default 10)")
    p.add_argument("--tile", type=int, default=512, help="tile side (default 512)")
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "bench",
                   help="where the YOLOv8n ONNX is written once (default runs/bench)")
    p.add_argument("--profile", type=Path, help="also write per-operator times (JSON)")
    p.add_argument("--json", type=Path, help="write the figures as JSON")
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    peer = args.cache / f"yolov8n_{args.tile}.onnx"
    if not peer.is_file():
        from sarvessel.model.peer import export_peer_onnx

        export_peer_onnx(peer, tile=args.tile)
    models = {"qcdq": (MODELS / "xview3_w4a4.onnx", 2),
              "intfloat": (MODELS / "xview3_w4a4_intfloat.onnx", 2),
              "yolov8n": (peer, 3)}
    rng = np.random.default_rng(0)
    sessions = {k: session(path, args.threads) for k, (path, _) in models.items()}
    inputs = {(k, b): rng.integers(0, 256, (b, c, args.tile, args.tile)).astype(np.float32)
              for k, (_, c) in models.items() for b in batches}
    times: dict[tuple[str, int], list[float]] = collections.defaultdict(list)
    for k, sess in sessions.items():  # warm-up
        for b in batches:
            sess.run(None, {sess.get_inputs()[0].name: inputs[k, b]})
    for _ in range(args.rounds):
        for b in batches:
            for k, sess in sessions.items():
                t0 = time.perf_counter()
                sess.run(None, {sess.get_inputs()[0].name: inputs[k, b]})
                times[k, b].append((time.perf_counter() - t0) * 1e3 / b)
    import onnxruntime as ort

    result = {"host": {"cpu": _cpu(), "python": platform.python_version(),
                       "onnxruntime": ort.__version__, "threads": args.threads},
              "tile": args.tile, "rounds": args.rounds, "ms_per_tile": {}, "peer_ratio": {}}
    print(f"{_cpu()}, onnxruntime {ort.__version__}, {args.threads} threads, "
          f"{args.tile}² tiles, median of {args.rounds} round-robin rounds")
    print(f"{'batch':>5} " + " ".join(f"{k:>10}" for k in models) + "   yolov8n/qcdq "
          "yolov8n/intfloat qcdq/intfloat")
    for b in batches:
        med = {k: float(np.median(times[k, b])) for k in models}
        result["ms_per_tile"][b] = med
        ratio = {k: med["yolov8n"] / med[k] for k in ("qcdq", "intfloat")}
        result["peer_ratio"][b] = ratio
        print(f"{b:>5} " + " ".join(f"{med[k]:>8.1f}ms" for k in models)
              + f"   {ratio['qcdq']:>11.2f}x {ratio['intfloat']:>15.2f}x "
              f"{med['qcdq'] / med['intfloat']:>13.2f}x")
    if args.profile:
        prof = {k: op_profile(models[k][0], 2, args.threads) for k in ("qcdq", "intfloat")}
        write_json(args.profile, prof)
        for k, ops in prof.items():
            total = sum(ops.values())
            top = ", ".join(f"{op} {ms:.1f} ({100 * ms / total:.0f} %)"
                            for op, ms in list(ops.items())[:6])
            print(f"profile {k}: {total:.1f} ms in kernels per tile: {top}")
    if args.json:
        write_json(args.json, result)
    return 0


def _cpu() -> str:
    """CPU model and the SIMD flags that decide onnxruntime's kernels."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), "unknown CPU")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines()
                  if line.startswith("flags")), [])
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile")
            if f in flags]
    return f"{name} ({' '.join(simd)})"


if __name__ == "__main__":
    sys.exit(main())
