"""Tile endpoint throughput: batches of 512² tiles over loopback vs the same backend in-process,
and the no-op backend's request rate (what the server alone can feed an accelerator).

Starts a real ``sarvessel serve`` on a free 127.0.0.1 port, then alternates in-process and
over-HTTP batches (so both see the same machine load), and stops the server. Usage::

    python scripts/bench_tile_server.py --backend onnx --batch 8 --batches 20 --json out.json

Figures: tiles/s in-process and over HTTP, their ratio (the issue's target is >= 90 %), and the
no-op backend's requests/s (1 tile each) and tiles/s (batches of ``--batch``).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sarvessel.runtime.detector import make_detector
from sarvessel.runtime.io.outputs import write_json
from sarvessel.runtime.io.scene import open_scene
from sarvessel.runtime.preprocess import preprocess
from sarvessel.runtime.server.client import ServerClient
from sarvessel.synth.generate import synthesize_scene

#: The shipped model's accelerator rate on the KV260 (tiles/s), for comparison.
ACCELERATOR_TILES_PER_S = 364.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="onnx", choices=["onnx", "sim", "cfar"],
                   help="backend compared in-process and over HTTP (default onnx)")
    p.add_argument("--batch", type=int, default=8, help="tiles per request (default 8)")
    p.add_argument("--batches", type=int, default=20,
                   help="timed batches per side (default 20)")
    p.add_argument("--noop-requests", type=int, default=300,
                   help="timed no-op requests (default 300)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="onnxruntime threads, both sides (default: all cores)")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    if min(args.batch, args.batches, args.noop_requests, args.threads) < 1:
        p.error("--batch, --batches, --noop-requests and --threads must be >= 1")

    with tempfile.TemporaryDirectory(prefix="bench-tile-server-") as tmp:
        tiles = _tiles(Path(tmp), args.batch)
        server = _start_server(Path(tmp) / "work", args.threads)
        try:
            figures = _measure(server[1], tiles, args)
        finally:
            server[0].send_signal(signal.SIGTERM)
            server[0].wait(60)
    figures.update(cpu_count=os.cpu_count(), batch=args.batch, backend=args.backend,
                   threads=args.threads)
    _print(figures)
    if args.json:
        write_json(args.json, figures)
    return 0


def _tiles(tmp: Path, n: int) -> np.ndarray:
    """``n`` uint8 tiles [n, 2, 512, 512] cut from a generated scene (sea, land, vessels)."""
    sid = "bench"
    synthesize_scene(tmp / "scenes", scene_id=sid, height=1024, width=512 * max(2, -(-n // 2)),
                     seed=7)
    with open_scene(tmp / "scenes" / sid) as scene:
        raw = scene.read_rows(0, 1024)
    out = [raw[:, r:r + 512, c:c + 512] for r in (0, 512) for c in range(0, raw.shape[2], 512)]
    return preprocess(np.stack(out[:n]).astype(np.float32))


def _start_server(work: Path, threads: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "sarvessel", "-q", "serve", "--port", str(port), "--work-dir",
           str(work), "--no-power-sensor", "--threads", str(threads)]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    t_end = time.monotonic() + 120
    with ServerClient(url, timeout=2.0) as c:
        while time.monotonic() < t_end:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}")
            try:
                if c.ready()["ready"]:
                    return proc, url
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.1)
    proc.kill()
    raise SystemExit("server not ready in 120 s")


def _measure(url: str, tiles: np.ndarray, args: argparse.Namespace) -> dict:
    det = make_detector(args.backend, threads=args.threads)
    n = len(tiles)
    with ServerClient(url, timeout=120) as c:
        for _ in range(3):  # warm both sides (sessions, allocators, the connection)
            det.detect(tiles)
            c.detect_tiles(tiles, backend=args.backend)
        local, remote = [], []
        for _ in range(args.batches):  # alternate so both see the same load
            t0 = time.perf_counter()
            det.detect(tiles)
            local.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            c.detect_tiles(tiles, backend=args.backend)
            remote.append(time.perf_counter() - t0)
        one = tiles[:1]
        for _ in range(20):
            c.detect_tiles(one, backend="noop")
        t0 = time.perf_counter()
        for _ in range(args.noop_requests):
            c.detect_tiles(one, backend="noop")
        noop_1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        k = max(1, args.noop_requests // n)
        for _ in range(k):
            c.detect_tiles(tiles, backend="noop")
        noop_b = time.perf_counter() - t0
    local_rate = n * len(local) / sum(local)
    remote_rate = n * len(remote) / sum(remote)
    return {
        "in_process_tiles_per_s": local_rate,
        "http_tiles_per_s": remote_rate,
        "http_share_of_in_process": remote_rate / local_rate,
        "in_process_batch_ms_median": 1e3 * statistics.median(local),
        "http_batch_ms_median": 1e3 * statistics.median(remote),
        "noop_requests_per_s_1_tile": args.noop_requests / noop_1,
        "noop_tiles_per_s_batched": n * k / noop_b,
        "accelerator_tiles_per_s": ACCELERATOR_TILES_PER_S,
    }


def _print(f: dict) -> None:
    print(f"tile server, backend {f['backend']}, batches of {f['batch']} 512² tiles, "
          f"{f['threads']} threads, {f['cpu_count']} cores")
    print(f"  in-process   {f['in_process_tiles_per_s']:8.1f} tiles/s  "
          f"(median batch {f['in_process_batch_ms_median']:.1f} ms)")
    print(f"  over HTTP    {f['http_tiles_per_s']:8.1f} tiles/s  "
          f"(median batch {f['http_batch_ms_median']:.1f} ms)  = "
          f"{100 * f['http_share_of_in_process']:.1f} % of in-process")
    print(f"  noop         {f['noop_requests_per_s_1_tile']:8.1f} requests/s of 1 tile, "
          f"{f['noop_tiles_per_s_batched']:.1f} tiles/s in batches of {f['batch']} "
          f"(the accelerator runs ~{f['accelerator_tiles_per_s']:.0f} tiles/s)")


if __name__ == "__main__":
    sys.exit(main())
