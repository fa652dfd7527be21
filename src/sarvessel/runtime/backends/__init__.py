"""Backends: a batch of uint8 tiles in, what the accelerator returns out (a head map, or
detections for CFAR and noop).

:func:`make_backend` builds one by name; :func:`sarvessel.runtime.detector.make_detector`
composes it with the post-processing stage. Heavy modules (onnxruntime, later pynq) are
imported only by the backend that needs them.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from sarvessel.runtime.backends.base import Backend, NoopBackend
from sarvessel.runtime.backends.tta import with_tta
from sarvessel.runtime.contract import TILE_SIZE
from sarvessel.runtime.errors import ModelError

#: Folder of the models shipped inside the package.
SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "models"
#: The scene model the demo and ``detect`` use by default: the integer-exact float graph of the
#: shipped W4A4 scene model (``quantize.intfloat``; the QCDQ export beside it gives the same
#: accumulators, slower).
DEFAULT_SCENE_MODEL = SHIPPED_MODELS / "xview3_w4a4_intfloat.onnx"
#: The shipped scene model's simulator deploy package (``--backend sim``).
DEFAULT_SIM_PACKAGE = SHIPPED_MODELS / "xview3_w4a4_sim"
#: Where ``sarvessel board flash`` installs a deploy package on a board (``--backend fpga``).
DEFAULT_BOARD_PACKAGE = Path("/opt/sarvessel/deploy")


class BackendKind(str, Enum):
    """Which engine runs the tiles."""

    NOOP = "noop"  #: no detections: measures the I/O path alone
    CFAR = "cfar"  #: two-parameter CFAR baseline (no model needed)
    ONNX = "onnx"  #: the quantised detector on the CPU with onnxruntime
    SIM = "sim"  #: the board simulated: a deploy package's buffers, packing and CPU tail
    FPGA = "fpga"  #: the KV260 accelerator through PYNQ (on the board)
    AUTO = "auto"  #: fpga on a board with a package, else the shipped model on the CPU, else CFAR


def make_backend(
    kind: BackendKind | str,
    *,
    model: Path | None = None,
    threads: int | None = None,
    tile_size: int | None = None,
    channels: int = 2,
    tta: int = 1,
    package: Path | None = None,
    paced: bool = False,
    batch_size: int = 1,
) -> Backend:
    """Build a backend. ``model`` is needed for ONNX (the default is the shipped scene model).

    ``tile_size``: for noop and CFAR (default :data:`~sarvessel.runtime.contract.TILE_SIZE`);
    a network's comes from its model. ``tta``: run each tile in 1 (default), 2, 4 or 8
    dihedral views and average the head maps (:class:`~sarvessel.runtime.backends.tta.
    DihedralTTA`; network backends only). ``package``: the deploy package of ``sim`` and
    ``fpga`` (defaults :data:`DEFAULT_SIM_PACKAGE`, :data:`DEFAULT_BOARD_PACKAGE`); ``paced``:
    hold each simulated transfer to the accelerator's estimated time; ``batch_size``: tiles per
    accelerator transfer.
    """
    kind = BackendKind(kind)
    if kind is BackendKind.AUTO:
        kind = _auto(model, package)
    if package is not None and kind not in (BackendKind.SIM, BackendKind.FPGA):
        raise ModelError(f"--package is for the sim and fpga backends, not {kind.value}")
    if model is not None and kind in (BackendKind.SIM, BackendKind.FPGA):
        raise ModelError(f"--backend {kind.value} runs a deploy package (--package), not --model")
    if kind is BackendKind.SIM:
        from sarvessel.runtime.backends.accelerator import sim_backend

        return with_tta(sim_backend(package or DEFAULT_SIM_PACKAGE, batch_size=batch_size,
                                    paced=paced, threads=threads), tta)
    if kind is BackendKind.FPGA:
        from sarvessel.runtime.backends.accelerator import fpga_backend

        return with_tta(fpga_backend(package or DEFAULT_BOARD_PACKAGE, batch_size=batch_size),
                        tta)
    if tta != 1 and kind is not BackendKind.ONNX:
        raise ModelError(f"--tta {tta} needs a network backend, not {kind.value}")
    if model is not None and kind in (BackendKind.NOOP, BackendKind.CFAR):
        raise ModelError(f"--model is for network backends; --backend {kind.value} takes none")
    tile = TILE_SIZE if tile_size is None else tile_size
    if kind is BackendKind.NOOP:
        return NoopBackend(channels=channels, tile_size=tile)
    if kind is BackendKind.CFAR:
        from sarvessel.runtime.backends.cfar import CFARBackend

        return CFARBackend(tile_size=tile)
    path = Path(model) if model else DEFAULT_SCENE_MODEL
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    from sarvessel.runtime.backends.onnx import OnnxBackend

    return with_tta(OnnxBackend(path, threads=threads), tta)


def _auto(model: Path | None, package: Path | None) -> BackendKind:
    """fpga on a KV260 with a package; else the ONNX model given or shipped; else CFAR."""
    from sarvessel.runtime.board.accelerator import board_present

    board_pkg = package or DEFAULT_BOARD_PACKAGE
    if model is None and board_present() and board_pkg.is_dir():
        return BackendKind.FPGA
    if package is not None:
        return BackendKind.SIM
    return BackendKind.ONNX if (model or DEFAULT_SCENE_MODEL.is_file()) else BackendKind.CFAR


__all__ = ["Backend", "BackendKind", "NoopBackend", "make_backend", "DEFAULT_SCENE_MODEL",
           "DEFAULT_SIM_PACKAGE", "DEFAULT_BOARD_PACKAGE", "SHIPPED_MODELS"]
