"""The accelerator cores of the ``fpga`` and ``sim`` backends: uint8 tiles in, head map out.

Both run one code path, :meth:`PackedAccelerator.infer`::

    tiles uint8 [B, C, T, T] (NCHW) --pack_tiles--> input DMA buffer (UINT8 NHWC, packed)
      --accelerator--> output DMA buffer (INT24 NHWC, packed) --unpack--> int32 accumulators
      --CpuTail--> float32 head map [B, C_out, T/s, T/s], what the ONNX graph returns

and differ only in the accelerator step: :class:`FpgaAccelerator` drives the KV260's overlay
through finn-plus-driver (``pynq`` and ``finn_plus_driver`` are imported in its constructor
only), :class:`SimAccelerator` unpacks the input buffer, runs the package's simulator graph
(an ONNX file that outputs the pre-tail accumulators) with onnxruntime, packs the result into
the output buffer and, when ``paced``, waits out the package's estimated accelerator time per
tile on an injectable clock (the power room's
:class:`~sarvessel.runtime.power.clock.Clock`). The ``fpga`` core reports a missing board, a
package that does not validate and a bitstream that does not match its package before any tile
runs.

TODO(restructure): wrap these as ``runtime/backends/fpga.py`` and ``sim.py`` (name, channels,
tile_size, fingerprint, ``infer``), with ``auto`` choosing ``fpga`` when :func:`board_present`.
"""

from __future__ import annotations

import logging
import platform as _platform
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from sarvessel.runtime.board.errors import BoardError, NoBoardError, PackageError
from sarvessel.runtime.board.overlay import OverlayArgs, overlay_args
from sarvessel.runtime.board.package import DeployPackage, load_package
from sarvessel.runtime.board.packing import pack, pack_tiles, parse_datatype, unpack
from sarvessel.runtime.board.tail import CpuTail
from sarvessel.runtime.power.clock import Clock, SystemClock

log = logging.getLogger(__name__)

__all__ = [
    "AcceleratorKind", "PackedAccelerator", "FpgaAccelerator",
    "SimAccelerator", "board_present", "require_board", "open_accelerator", "FPGA_MANAGER",
]

#: Where the Linux FPGA manager shows itself (present on Kria images, which load bitstreams
#: through it).
FPGA_MANAGER = Path("/sys/class/fpga_manager")
#: ``platform.machine()`` of the KV260's Cortex-A53 cores.
BOARD_MACHINE = "aarch64"

#: onnxruntime input element types and the numpy dtype the unpacked input is cast to.
_ORT_INPUT_DTYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
}


class AcceleratorKind(str, Enum):
    """Which accelerator runs the tiles."""

    FPGA = "fpga"  #: the KV260's programmable logic through PYNQ and finn-plus-driver
    SIM = "sim"  #: software producing the same accumulators (CI, hosts without a board)


def board_present(*, machine: str | None = None, fpga_manager: Path = FPGA_MANAGER) -> bool:
    """Whether this is a board the ``fpga`` backend can drive: aarch64 with an FPGA manager.

    machine: the default is :func:`platform.machine`. fpga_manager: the sysfs folder to look
    for (the default is :data:`FPGA_MANAGER`); a board has at least one ``fpga*`` entry there.
    """
    machine = _platform.machine() if machine is None else machine
    if machine != BOARD_MACHINE:
        return False
    try:
        return any(p.name.startswith("fpga") for p in Path(fpga_manager).iterdir())
    except OSError:
        return False


def require_board(*, machine: str | None = None, fpga_manager: Path = FPGA_MANAGER) -> None:
    """Raise :class:`NoBoardError` with one line saying why unless :func:`board_present`."""
    machine = _platform.machine() if machine is None else machine
    if machine != BOARD_MACHINE:
        raise NoBoardError(f"no FPGA board here: this is {machine or 'an unknown machine'}, "
                           f"the KV260 is {BOARD_MACHINE} (use --backend sim or onnx)")
    if not board_present(machine=machine, fpga_manager=fpga_manager):
        raise NoBoardError(f"no FPGA board here: no FPGA manager under {fpga_manager} "
                           "(use --backend sim or onnx)")


class PackedAccelerator:
    """The shared path: pack → accelerator (:meth:`_run`, per subclass) → unpack → CPU tail.

    Built from a validated :class:`DeployPackage`. ``batch_size`` tiles go through the
    accelerator at a time; :meth:`infer` takes any number and splits them.
    """

    kind: AcceleratorKind

    def __init__(self, package: DeployPackage, *, batch_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.package = package
        self.batch_size = int(batch_size)
        cfg = package.config
        inp, out = cfg["input"], cfg["output"]
        self._in_perm = inp.get("transpose_from_host")
        _, th, tw, c = inp["shape_normal"]
        if th != tw:
            raise PackageError(f"{package.root}: tiles must be square, input is {th}x{tw}")
        #: Side of the square tiles (px) and their channels (bands), as the runtime makes them.
        self.tile_size, self.channels = int(th), int(c)
        self._in_packed = tuple(inp["shape_packed"][1:])
        self._out_normal = tuple(out["shape_normal"][1:])
        self._out_folded = tuple(out["shape_folded"][1:])
        self._out_packed = tuple(out["shape_packed"][1:])
        self._odt = parse_datatype(out["finn_datatype"])
        self._idt = parse_datatype(inp["finn_datatype"])
        self.tail = CpuTail.from_config(cfg["cpu_tail"])
        self._acc = np.empty((self.batch_size, *self._out_folded), self._odt.container)

    @property
    def name(self) -> str:
        return self.kind.value

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Shape of one tile's head map (after the CPU tail)."""
        h, w, c = self._out_normal
        shape = np.empty((1, h, w, c), np.int8).transpose(self.tail.perm or (0, 1, 2, 3)).shape
        return tuple(shape[1:])

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Head maps of ``batch`` (``uint8 [B, C, T, T]``): ``float32 [B, C_out, H, W]``."""
        out = np.empty((len(batch), *self.out_shape), np.float32)
        for start, acc in self._chunks(batch):
            n = len(acc)
            self.tail(acc.reshape(n, *self._out_normal), out=out[start:start + n])
        return out

    def accumulators(self, batch: np.ndarray) -> np.ndarray:
        """The accelerator's integer output for ``batch``, before the CPU tail:
        ``[B, H, W, C_out]`` (NHWC, int32), what the self-test compares."""
        out = np.empty((len(batch), *self._out_normal), self._odt.container)
        for start, acc in self._chunks(batch):
            out[start:start + len(acc)] = acc.reshape(len(acc), *self._out_normal)
        return out

    def close(self) -> None:
        """Release the accelerator (no-op unless a subclass holds hardware)."""

    def __enter__(self) -> PackedAccelerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _chunks(self, batch: np.ndarray):  # type: ignore[no-untyped-def]
        """Yield ``(start, accumulators [n, *folded])`` for each accelerator-sized chunk."""
        batch = np.asarray(batch)
        want = (self.channels, self.tile_size, self.tile_size)
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != want:
            raise BoardError(f"{self.name}: tiles must be uint8 [B, {want[0]}, {want[1]}, "
                             f"{want[2]}], got {batch.dtype} {list(batch.shape)}")
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start:start + self.batch_size]
            n = len(chunk)
            ibuf = self._input_buffer(n)
            if self._in_perm is None:
                np.copyto(ibuf.reshape(chunk.shape), chunk)
            else:
                pack_tiles(chunk, ibuf.reshape(n, self.tile_size, self.tile_size, self.channels))
            obuf = self._run(n)
            acc = unpack(obuf, self._odt, self._out_folded[-1], out=self._acc[:n])
            yield start, acc

    def _input_buffer(self, n: int) -> np.ndarray:
        """The packed input buffer for ``n`` tiles (``uint8 [n, *shape_packed[1:]]``)."""
        raise NotImplementedError

    def _run(self, n: int) -> np.ndarray:
        """Run the accelerator on the first ``n`` tiles of the input buffer; return the packed
        output ``uint8 [n, *shape_packed[1:]]``."""
        raise NotImplementedError


class FpgaAccelerator(PackedAccelerator):
    """The KV260's accelerator through PYNQ and finn-plus-driver's ``FINNDMAOverlay``.

    package: deploy package folder (bitstream, ``.hwh``, ``driver_config.json``).
    batch_size: tiles per DMA transfer (default 1). download: program the bitstream (default
    True; False attaches to one already loaded). board_check: raises :class:`NoBoardError`
    when there is no board (default :func:`require_board`; a test passes its own).
    Raises, in this order and before any tile runs: :class:`NoBoardError`,
    :class:`PackageError` (does not validate), :class:`ChecksumError` (bitstream vs package),
    :class:`NoBoardError` (pynq / finn-plus-driver not installed).
    """

    kind = AcceleratorKind.FPGA

    def __init__(self, package: Path | str, *, batch_size: int = 1, download: bool = True,
                 board_check: Callable[[], None] = require_board) -> None:
        board_check()
        pkg = load_package(package, need_bitstream=True)
        #: SHA-256 of the loaded bitstream (checked against the package).
        self.bitstream_sha256 = pkg.check_bitstream()
        super().__init__(pkg, batch_size=batch_size)
        try:
            import finn_plus_driver
            import pynq  # noqa: F401  (the overlay's base; fail here with a clear line)
        except ImportError as exc:
            raise NoBoardError(f"the fpga backend needs pynq and finn-plus-driver "
                               f"(pip install pynq==4.0.0 finn-plus-driver==1.6.1): {exc}"
                               ) from exc
        self.args: OverlayArgs = overlay_args(pkg, batch_size=self.batch_size,
                                              download=download)
        cls = finn_plus_driver.get_driver_class(self.args.driver_type)
        log.info("loading %s (%s, batch %d)", pkg.bitfile, self.args.driver_type,
                 self.batch_size)
        self.overlay: Any = cls(self.args.bitfile, **self.args.kwargs)

    @property
    def clock_mhz(self) -> float:
        """The fabric clock the overlay reports (from the ``.hwh``), else the package's."""
        return float(getattr(self.overlay, "fclk_mhz_actual", self.package.clock_mhz))

    def _input_buffer(self, n: int) -> np.ndarray:
        # pack straight into the DMA buffer: no host-side copy (the driver's execute() has two)
        return self.overlay.ibuf_packed_device[0][:n]

    def _run(self, n: int) -> np.ndarray:
        ov = self.overlay
        ov.ibuf_packed_device[0].flush()
        ov.execute_on_buffers(asynch=False, batch_size=n)
        obuf = ov.obuf_packed_device[0]
        obuf.invalidate()
        return obuf[:n]

    def close(self) -> None:
        ov = getattr(self, "overlay", None)
        for buf in (getattr(ov, "ibuf_packed_device", None) or []) + (
                getattr(ov, "obuf_packed_device", None) or []):
            freebuffer = getattr(buf, "freebuffer", None)
            if freebuffer is not None:
                freebuffer()


class SimAccelerator(PackedAccelerator):
    """The board in software: the same buffers and path as :class:`FpgaAccelerator`, the
    accumulators from the package's simulator graph (onnxruntime).

    package: deploy package folder (no bitstream needed) whose ``sim.model`` is an ONNX graph
    from the host tile to the accelerator's accumulators (any graph does, as long as its output
    is the integers the hardware produces). model: another such graph (overrides the package's).
    batch_size: tiles per simulated transfer (default 1). paced: wait so that each transfer
    takes at least the package's estimated accelerator time (``estimate.cycles_per_tile`` at
    ``clock_mhz``) on ``clock`` (a :class:`~sarvessel.runtime.power.clock.Clock`; default its
``SystemClock``). threads: onnxruntime intra-op
    threads (default: onnxruntime's). timing_only: skip the simulator graph and return a fixed
    open-sea output at the accelerator's pace (implies ``paced``): the host side (packing,
    unpacking, tail, decode, merge) runs as it would around the real accelerator, for
    throughput measurements; its detections mean nothing.
    """

    kind = AcceleratorKind.SIM

    def __init__(self, package: Path | str | DeployPackage, *, model: Path | None = None,
                 batch_size: int = 1, paced: bool = False, clock: Clock | None = None,
                 threads: int | None = None, timing_only: bool = False) -> None:
        pkg = package if isinstance(package, DeployPackage) else load_package(package)
        super().__init__(pkg, batch_size=batch_size)
        #: Return a fixed "open sea" output instead of running the simulator graph (paced runs
        #: that measure the pipeline around an accelerator this CPU cannot emulate in time).
        self.timing_only = bool(timing_only)
        if self.timing_only:
            paced = True
        path = Path(model) if model is not None else pkg.sim_model
        if path is None:
            raise PackageError(f"{pkg.root}: no simulator model (driver_config.json sim.model)")
        if not path.is_file():
            raise PackageError(f"{path}: simulator model not found")
        sim = pkg.config.get("sim") or {}
        self._sim_in_nchw = sim.get("input_layout", "NHWC") == "NCHW"
        self._sim_out_nchw = sim.get("output_layout", "NHWC") == "NCHW"
        self.clock: Clock = clock or SystemClock()
        self.paced = bool(paced)
        self.seconds_per_tile = pkg.seconds_per_tile
        if self.paced and self.seconds_per_tile is None:
            raise PackageError(f"{pkg.root}: pacing needs estimate.cycles_per_tile (or "
                               "tiles_per_s) in driver_config.json")
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self._session = ort.InferenceSession(str(path), opts,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise PackageError(f"{path}: onnxruntime cannot load the simulator model: {exc}"
                               ) from exc
        inp = self._session.get_inputs()[0]
        self._feed_name = inp.name
        self._feed_dtype = _ORT_INPUT_DTYPES.get(inp.type)
        if self._feed_dtype is None:
            raise PackageError(f"{path}: simulator input type {inp.type} not supported")
        self.model_path = path
        self._ibuf = np.zeros((self.batch_size, *self._in_packed), np.uint8)
        self._obuf = np.zeros((self.batch_size, *self._out_packed), np.uint8)
        #: Seconds spent waiting to match the accelerator's pace (for overlap measurements).
        self.paced_wait_s = 0.0
        if self.timing_only:
            quiet = np.broadcast_to(self._quiet_accumulators(), (self.batch_size,
                                                                 *self._out_normal))
            pack(quiet.reshape(self.batch_size, *self._out_folded), self._odt, out=self._obuf)

    def _quiet_accumulators(self) -> np.ndarray:
        """One tile's output ``[H, W, C]`` for an empty sea: every class logit near -20 after
        the tail (nothing to decode), box channels 0."""
        m = self.package.model
        n_box = 4 * int(m.get("reg_max", 16))
        c = self._out_normal[-1]
        scale = np.broadcast_to(self.tail.scale, (c,)).astype(np.float64)
        bias = np.broadcast_to(self.tail.bias, (c,)).astype(np.float64)
        acc = np.zeros(c, np.int64)
        cls = np.arange(c) % (n_box + int(m.get("nc", 1))) >= n_box
        with np.errstate(divide="ignore", invalid="ignore"):
            want = np.where(scale != 0, np.rint((-20.0 - bias) / scale), 0)
        lo, hi = self._odt.min, self._odt.max
        acc[cls] = np.clip(want[cls], lo, hi).astype(np.int64)
        return np.broadcast_to(acc, self._out_normal)

    def _input_buffer(self, n: int) -> np.ndarray:
        return self._ibuf[:n]

    def _run(self, n: int) -> np.ndarray:
        t0 = self.clock.now()
        if self.timing_only:
            self._pace(n, t0)
            return self._obuf[:n]
        ibuf = self._ibuf[:n]
        if self._idt.bits == 8 and self._idt.byte_aligned:
            x = ibuf.view(np.int8 if self._idt.signed else np.uint8)
        else:
            x = unpack(ibuf, self._idt, self.package.input["shape_folded"][-1])
        x = x.reshape(n, self.tile_size, self.tile_size, self.channels)  # NHWC
        if self._sim_in_nchw:
            x = x.transpose(0, 3, 1, 2)
        y = self._session.run(None, {self._feed_name: x.astype(self._feed_dtype)})[0]
        y = np.asarray(y)
        if self._sim_out_nchw:
            y = y.transpose(0, 2, 3, 1)
        if y.shape != (n, *self._out_normal):
            raise BoardError(f"{self.model_path.name}: simulator output {list(y.shape)} is not "
                             f"the accelerator's {[n, *self._out_normal]} (NHWC)")
        if y.dtype.kind == "f":
            yi = np.rint(y)
            if not np.array_equal(yi, y):
                raise BoardError(f"{self.model_path.name}: simulator output is not integer "
                                 "accumulators (did the graph include the CPU tail?)")
            y = yi.astype(np.int64)
        try:
            pack(y.reshape(n, *self._out_folded), self._odt, out=self._obuf[:n])
        except ValueError as exc:
            raise BoardError(f"{self.model_path.name}: {exc}") from exc
        self._pace(n, t0)
        return self._obuf[:n]

    def _pace(self, n: int, t0: float) -> None:
        """With ``paced``, wait until ``n`` tiles' accelerator time has passed since ``t0``."""
        if self.paced:
            wait = n * float(self.seconds_per_tile or 0.0) - (self.clock.now() - t0)
            if wait > 0:
                self.clock.sleep(wait)
                self.paced_wait_s += wait


def open_accelerator(kind: AcceleratorKind | str, package: Path | str, **kwargs: Any
                     ) -> PackedAccelerator:
    """Build the ``fpga`` or ``sim`` core for ``package`` (keyword arguments go to its class)."""
    kind = AcceleratorKind(kind)
    if kind is AcceleratorKind.FPGA:
        return FpgaAccelerator(package, **kwargs)
    return SimAccelerator(package, **kwargs)
