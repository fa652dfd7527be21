"""``sarvessel export``: checkpoint → QONNX (FINN) and QCDQ ONNX (onnxruntime), checked.

Writes into ``--out``: ``<name>.onnx`` + ``<name>.json`` (QCDQ, the runtime model),
``<name>_qonnx.onnx`` + ``<name>_qonnx.json`` (for FINN), optionally ``<name>_int8.onnx`` +
``<name>_int8.json`` (the integer-fusable QCDQ, faster in onnxruntime, not bit-exact), and
``<name>_export.json`` with the export and equivalence reports. The equivalence check runs on
random uint8 tiles and fails the command (exit 2) when the exports disagree with Brevitas.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from enum import Enum
from pathlib import Path
from typing import Any

from sarvessel.runtime.contract import CONF_THRESHOLD, IOU_THRESHOLD
from sarvessel.runtime.io.outputs import write_json

log = logging.getLogger(__name__)


#: Share of last-conv accumulators where the float32 Brevitas forward may differ from the
#: exported integer graphs (rounding ties); measured ~0.3 % on the trained scene model.
BREVITAS_TIE_FRACTION = 0.01


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sarvessel export`` to the command line."""
    p = sub.add_parser(
        "export", help="export a checkpoint to QONNX (FINN) and QCDQ ONNX (onnxruntime)",
        description="Export a trained checkpoint: QONNX with a UINT8 input for FINN and QCDQ "
        "ONNX for the CPU runtime, each with its JSON metadata sidecar; then check both against "
        "the Brevitas forward on random tiles (integer-exact last-conv accumulators).",
    )
    p.add_argument("checkpoint", type=Path, help="sarvessel checkpoint (.pt)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--qonnx", action="store_true", help="write the QONNX export")
    p.add_argument("--qcdq", action="store_true", help="write the QCDQ export")
    p.add_argument("--int8", action="store_true",
                   help="also write the integer-fusable QCDQ (<name>_int8.onnx)")
    p.add_argument("--name", help="file stem (default: the model's name)")
    p.add_argument("--check-tiles", type=int, default=2,
                   help="random tiles for the equivalence check (default 2; 0 skips it)")
    p.add_argument("--conf", type=float, default=CONF_THRESHOLD,
                   help=f"conf_threshold in the metadata (default {CONF_THRESHOLD})")
    p.add_argument("--iou", type=float, default=IOU_THRESHOLD,
                   help=f"iou_threshold in the metadata (default {IOU_THRESHOLD})")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """Handler of ``sarvessel export``; with neither --qonnx nor --qcdq writes both."""
    import numpy as np

    from sarvessel.model.checkpoint import load_checkpoint
    from sarvessel.quantize.equivalence import check_equivalence
    from sarvessel.quantize.export import export_qcdq, export_qcdq_int8, export_qonnx

    model, state = load_checkpoint(args.checkpoint)
    cfg = model.cfg
    meta = cfg.sidecar(conf_threshold=args.conf, iou_threshold=args.iou)
    # images stretched to 8 bits in training are stretched alike wherever the model is evaluated
    meta["stretch"] = (state.get("train") or {}).get("stretch")
    name = args.name or cfg.name
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    both = not (args.qonnx or args.qcdq)
    kw: dict[str, Any] = dict(tile=cfg.tile_size, channels=cfg.in_channels, metadata=meta)
    reports: dict[str, Any] = {}
    if args.qonnx or both:
        reports["qonnx"] = export_qonnx(model, out / f"{name}_qonnx.onnx", **kw)
    if args.qcdq or both:
        reports["qcdq"] = export_qcdq(model, out / f"{name}.onnx", **kw)
    if args.int8:
        reports["qcdq-int8"] = export_qcdq_int8(model, out / f"{name}_int8.onnx", **kw)
    summary: dict[str, Any] = {k: _jsonable(dataclasses.asdict(r)) for k, r in reports.items()}
    if args.check_tiles > 0:
        rng = np.random.default_rng(0)
        tiles = rng.integers(0, 256, (args.check_tiles, cfg.in_channels, cfg.tile_size,
                                      cfg.tile_size), dtype=np.uint8)
        q = reports.get("qonnx")
        c = reports.get("qcdq")
        # QONNX and onnxruntime must agree exactly; the float32 Brevitas simulation may round
        # up to 1 % of accumulators differently at .5 ties (see check_equivalence).
        eq = check_equivalence(model, q.path if q else None, c.path if c else None, tiles,
                               atol=1e-4, brevitas_mismatch_fraction=BREVITAS_TIE_FRACTION)
        summary["equivalence"] = _jsonable(dataclasses.asdict(eq))
        if "qcdq-int8" in reports:
            # Not bit-exact by design (int32 bias rounding); held to a loose float tolerance.
            eq8 = check_equivalence(model, None, reports["qcdq-int8"].path, tiles, atol=0.5)
            summary["equivalence_int8"] = _jsonable(dataclasses.asdict(eq8))
        for p in eq.pairs:
            print(f"{p.a} vs {p.b}: max |diff| {p.max_abs_diff:.2e}, accumulator mismatches "
                  f"{p.code_mismatches}")
    write_json(out / f"{name}_export.json", summary)
    for key, r in reports.items():
        print(f"{key}: {r.path} ({r.file_bytes / 1e3:.0f} kB, {sum(r.op_counts.values())} nodes)")
    return 0


def _jsonable(obj: Any) -> Any:
    """Paths and enums to strings, recursively."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Enum):
        return obj.value
    return obj
