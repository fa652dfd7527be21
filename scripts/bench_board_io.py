"""Time the board's I/O path per 512² tile: pack the input, unpack the INT24 output, CPU tail.

Compares :mod:`sarvessel.runtime.board.packing` with finn-plus-driver's general
``packed_bytearray_to_finnpy`` / ``finnpy_to_packed_bytearray`` (when installed; they are in the
board environment, ``scripts/board_env.sh``). Shapes are the shipped scene model's: input UINT8
[1, 512, 512, 2] (host NCHW [1, 2, 512, 512]), output INT24 [1, 64, 64, 67] folded (67, 1).
The budget is the accelerator's rate: 548,864 cycles at 200 MHz = 2.74 ms per tile.

    PYTHONPATH=src python scripts/bench_board_io.py --repeat 20
    PYTHONPATH=src /tmp/venv310/bin/python scripts/bench_board_io.py --json out/bench_io.json
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sarvessel.runtime.board.packing import pack, pack_tiles, unpack
from sarvessel.runtime.board.tail import CpuTail
from sarvessel.runtime.io.outputs import write_json

#: Accelerator time per tile at the shipped model's estimate (ms): the budget of the ARM side.
BUDGET_MS = 548_864 / 200e6 * 1e3


def _time(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``fn`` in ms (one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20, help="timed calls per case (median)")
    ap.add_argument("--batch", type=int, default=1, help="tiles per call; ms are per tile")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    b = args.batch
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, size=(b, 2, 512, 512), dtype=np.uint8)
    acc = rng.integers(-(1 << 23), 1 << 23, size=(b, 64, 64, 67, 1), dtype=np.int32)
    obuf = pack(acc, "INT24")  # [b, 64, 64, 67, 3]: what the output DMA writes
    ibuf = np.empty((b, 512, 512, 2, 1), np.uint8)  # the input DMA buffer
    out = np.empty((b, 64, 64, 67, 1), np.int32)
    tail = CpuTail([0, 3, 1, 2], rng.random(67).tolist(), rng.random(67).tolist())
    res: dict[str, float] = {}

    def pack_input() -> None:
        pack_tiles(tiles, ibuf.reshape(b, 512, 512, 2))

    res["pack_input (NCHW->NHWC + UINT8 pack into the DMA buffer)"] = _time(pack_input,
                                                                            args.repeat)
    res["unpack_output INT24 (sarvessel)"] = _time(lambda: unpack(obuf, "INT24", 1, out=out),
                                                   args.repeat)
    head = np.empty((b, 67, 64, 64), np.float32)
    res["cpu_tail (scale, bias, NHWC->NCHW float32)"] = _time(
        lambda: tail(out.reshape(b, 64, 64, 67), out=head), args.repeat)
    try:
        from finn_plus_driver.packing import (
            finnpy_to_packed_bytearray,
            packed_bytearray_to_finnpy,
        )
        from qonnx.core.datatype import DataType
    except ImportError:
        print("finn-plus-driver not installed: its figures are left out")
    else:
        res["unpack_output INT24 (finn-plus-driver packed_bytearray_to_finnpy)"] = _time(
            lambda: packed_bytearray_to_finnpy(obuf, DataType["INT24"], (b, 64, 64, 67, 1),
                                               reverse_inner=True, reverse_endian=True),
            max(3, args.repeat // 4))
        res["pack_input (finn-plus-driver finnpy_to_packed_bytearray, uint8)"] = _time(
            lambda: np.copyto(ibuf, finnpy_to_packed_bytearray(
                tiles.transpose(0, 2, 3, 1).reshape(b, 512, 512, 2, 1), DataType["UINT8"],
                reverse_inner=True, reverse_endian=True)), args.repeat)
    per_tile = {k: v / b for k, v in res.items()}
    ours = sum(v for k, v in per_tile.items() if "finn-plus-driver" not in k)
    print(f"host: {platform.machine()} {platform.processor() or ''} numpy {np.__version__}, "
          f"batch {b}, median of {args.repeat}")
    for k, v in per_tile.items():
        print(f"  {v:8.3f} ms/tile  {k}")
    print(f"  {ours:8.3f} ms/tile  sarvessel I/O path total (budget {BUDGET_MS:.2f} ms/tile)")
    if args.json:
        write_json(args.json, {"ms_per_tile": per_tile, "total_ms": ours,
                               "budget_ms": BUDGET_MS, "batch": b, "numpy": np.__version__})


if __name__ == "__main__":
    main()
