"""The stock YOLOv8n peer, exported to ONNX at the benchmark's tile sizes and checked against
the published architecture, cached so a later run needs neither torch nor the export.

The network is :mod:`sarvessel.model.peer` (ultralytics' ``yolov8n.yaml`` written out in plain
PyTorch; ultralytics itself cannot be imported here). Published reference (ultralytics YOLOv8
docs, "Performance" table): 3.2 M parameters (3,151,904 with BatchNorm folded), 8.7 GFLOPs at
640². The acceptance check is ±1 % parameters and ±3 % GFLOPs.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sarvessel.runtime.io.outputs import write_json

log = logging.getLogger(__name__)

__all__ = ["PUBLISHED", "PeerExport", "PeerUnavailable", "check_architecture", "export_peers"]

#: Published YOLOv8n figures the peer is checked against.
PUBLISHED = {"params": 3_151_904, "gflops_640": 8.7, "params_tolerance": 0.01,
             "gflops_tolerance": 0.03,
             "source": "ultralytics YOLOv8 docs, Performance table (yolov8n: 3.2 M params, "
                       "8.7 GFLOPs at 640); 3,151,904 parameters fused"}


class PeerUnavailable(Exception):
    """The peer cannot be exported here (module or torch missing); the message says why."""


@dataclass
class PeerExport:
    """Exported peer models by label (``yolov8n-<tile>``) and the architecture check."""

    paths: dict[str, Path] = field(default_factory=dict)
    architecture: dict[str, Any] = field(default_factory=dict)


def export_peers(cache: Path, tiles: Sequence[int]) -> PeerExport:
    """The peer at each tile size in ``tiles`` under ``cache`` (``yolov8n_<tile>.onnx``, made
    if missing), and its architecture check (``yolov8n.json``, made if missing).

    Raises :class:`PeerUnavailable` when a file is missing and ``sarvessel.model.peer`` (or
    torch) cannot be imported to make it.
    """
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    out = PeerExport()
    arch_path = cache / "yolov8n.json"
    todo = [t for t in tiles if not (cache / f"yolov8n_{t}.onnx").is_file()]
    if todo or not arch_path.is_file():
        peer = _peer_module()
        for t in todo:
            path = cache / f"yolov8n_{t}.onnx"
            log.info("exporting the YOLOv8n peer at %d px to %s", t, path)
            _export(peer, path, t)
        if not arch_path.is_file():
            write_json(arch_path, check_architecture(peer))
    for t in tiles:
        out.paths[f"yolov8n-{t}"] = cache / f"yolov8n_{t}.onnx"
    out.architecture = json.loads(arch_path.read_text())
    return out


def check_architecture(peer: Any) -> dict[str, Any]:
    """Parameters (BatchNorm folded) and GFLOPs at 640² of the peer against :data:`PUBLISHED`."""
    if not hasattr(peer, "count_peer_cost"):
        return {"name": "YOLOv8n", "ok": None,
                "note": "sarvessel.model.peer has no count_peer_cost: architecture not checked"}
    cost = peer.count_peer_cost(peer.yolov8n(), tile=640)
    p_err = cost.params / PUBLISHED["params"] - 1
    g_err = cost.gflops / PUBLISHED["gflops_640"] - 1
    ok = abs(p_err) <= PUBLISHED["params_tolerance"] and abs(g_err) <= PUBLISHED["gflops_tolerance"]
    if not ok:
        log.warning("the peer does not match the published YOLOv8n: %d params (%+.1f %%), "
                    "%.2f GFLOPs (%+.1f %%)", cost.params, 100 * p_err, cost.gflops, 100 * g_err)
    return {"name": "YOLOv8n (yolov8n.yaml, nc 80, 3 channels, random weights)",
            "params": int(cost.params), "params_reference": PUBLISHED["params"],
            "params_error": round(p_err, 5), "gflops_640": round(cost.gflops, 4),
            "gflops_error": round(g_err, 5), "ok": bool(ok), "reference": PUBLISHED["source"]}


def _peer_module() -> Any:
    try:  # import_module looks in sys.modules first, as `from package import name` does not
        peer = importlib.import_module("sarvessel.model.peer")
    except ImportError as exc:  # torch (a host tool) is not installed
        raise PeerUnavailable(
            f"the YOLOv8n peer needs sarvessel.model.peer and torch ({exc.name or exc} is not "
            "importable here): install the host tools (`make test`'s .venv) on a checkout that "
            "has the peer") from exc
    return peer


def _export(peer: Any, path: Path, tile: int) -> None:
    if hasattr(peer, "export_peer_onnx"):
        peer.export_peer_onnx(path, tile=tile)
    elif hasattr(peer, "export_yolov8n_onnx"):
        peer.export_yolov8n_onnx(path, tile)
    else:
        raise PeerUnavailable("sarvessel.model.peer has neither export_peer_onnx nor "
                              "export_yolov8n_onnx")
