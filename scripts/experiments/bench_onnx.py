"""Benchmark the onnxruntime CPU backend: plain QCDQ vs the integer-fusable QCDQ (int8 + Clip).

Exports the network twice (``export_qcdq`` and ``export_qcdq_int8``), then times onnxruntime on
batches of random uint8 tiles, and the decode of realistic raw maps, per tile. Without
``--checkpoint`` a randomly initialised network of the chosen config is used (the speed of the
graph does not depend on the weights; the decode time is measured on synthetic raw maps with a
given number of cells above the threshold).

    .venv/bin/python scripts/bench_onnx.py --config scene --tile 512 --threads 1 --batch 4
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from sarvessel.runtime.io.outputs import json_safe

log = logging.getLogger("bench_onnx")


def _model(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    import torch

    from sarvessel.model.checkpoint import load_checkpoint
    from sarvessel.model.config import scene_config, ssdd_config
    from sarvessel.model.network import build_model

    if args.checkpoint:
        model, _ = load_checkpoint(args.checkpoint)
        return model
    cfg = (scene_config if args.config == "scene" else ssdd_config)(tile_size=args.tile)
    model = build_model(cfg)
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():  # collect activation statistics so the scales are not degenerate
        for _ in range(2):
            model(torch.randint(0, 256, (2, cfg.in_channels, 128, 128)).float())
    return model.eval()


def _time_infer(paths: dict[str, Path], batch: np.ndarray, *, threads: int, repeats: int
                ) -> dict[str, dict[str, float]]:
    """Per-tile inference time of each model; runs alternate between the models so that a
    shared, loaded machine slows them alike."""
    from sarvessel.runtime.backends.onnx import OnnxBackend

    backends = {name: OnnxBackend(path, threads=threads) for name, path in paths.items()}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for b in backends.values():
        b.infer(batch)  # warm-up
    for _ in range(repeats):
        for name, b in backends.items():
            t0 = time.perf_counter()
            b.infer(batch)
            times[name].append((time.perf_counter() - t0) / len(batch))
    return {name: {"ms_per_tile_median": float(np.median(t) * 1e3),
                   "ms_per_tile_min": float(np.min(t) * 1e3)} for name, t in times.items()}


def _time_decode(*, tile: int, stride: int, reg_max: int, nc: int, vessels: int,
                 repeats: int) -> dict:
    """Decode time per tile for raw maps with ``vessels`` objects lighting 3x3 cells each
    (cells of one object predict the same box, as a trained head does)."""
    from sarvessel.runtime.post.decode import decode

    rng = np.random.default_rng(0)
    h = tile // stride
    raw = rng.normal(0, 1, (8, 4 * reg_max + nc, h, h)).astype(np.float32)
    raw[:, 4 * reg_max:] = rng.normal(-8, 1, (8, nc, h, h))
    for b in range(8):
        for _ in range(vessels):
            # one 32 x 48 px object (whole strides from every anchor); the 3x3 cells around its
            # centre all predict its box
            y, x = rng.integers(1, h - 1, 2)
            cy, cx = (y + 0.5) * stride, (x + 0.5) * stride
            top, left, bottom, right = cy - 16, cx - 24, cy + 16, cx + 24
            for yy in range(y - 1, y + 2):
                for xx in range(x - 1, x + 2):
                    ay, ax = (yy + 0.5) * stride, (xx + 0.5) * stride
                    dists = np.array([ax - left, ay - top, right - ax, bottom - ay]) / stride
                    bins = np.clip(np.rint(dists), 0, reg_max - 1).astype(int)
                    logits = np.full((4, reg_max), -5.0, np.float32)
                    logits[np.arange(4), bins] = 5.0
                    raw[b, :4 * reg_max, yy, xx] = logits.reshape(-1)
                    raw[b, 4 * reg_max, yy, xx] = rng.normal(2, 1)
    kw = dict(stride=stride, reg_max=reg_max, conf_threshold=0.25, iou_threshold=0.5)
    dets = decode(raw, **kw)
    t0 = time.perf_counter()
    for _ in range(repeats):
        decode(raw, **kw)
    dt = (time.perf_counter() - t0) / repeats / len(raw)
    cells = int((raw[:, 4 * reg_max:].max(1) > np.log(0.25 / 0.75)).sum() / len(raw))
    return {"vessels_per_tile": vessels, "cells_above_threshold_per_tile": cells,
            "detections_per_tile": float(np.mean([len(d) for d in dets])),
            "ms_per_tile": dt * 1e3}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a sarvessel checkpoint (default: random)")
    parser.add_argument("--config", choices=["scene", "ssdd"], default="scene")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from sarvessel.quantize.export import export_qcdq, export_qcdq_int8

    model = _model(args)
    cfg = model.cfg
    tile = cfg.tile_size if args.checkpoint else args.tile
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (args.batch, cfg.in_channels, tile, tile), dtype=np.uint8)
    results: dict = {"tile": tile, "channels": cfg.in_channels, "batch": args.batch,
                     "threads": args.threads, "formats": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, fn in (("qcdq", export_qcdq), ("qcdq-int8", export_qcdq_int8)):
            paths[name] = Path(tmp) / f"{name}.onnx"
            fn(model, paths[name], tile=tile, channels=cfg.in_channels)
        results["formats"] = _time_infer(paths, batch, threads=args.threads,
                                         repeats=args.repeats)
        for name, row in results["formats"].items():
            log.info("%-10s %s", name, row)
    results["decode"] = [
        _time_decode(tile=tile, stride=cfg.stride, reg_max=cfg.reg_max, nc=cfg.nc, vessels=v,
                     repeats=args.repeats * 5)
        for v in (0, 5, 20)
    ]
    for row in results["decode"]:
        log.info("decode %s", row)
    text = json.dumps(json_safe(results), indent=2, allow_nan=False)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
