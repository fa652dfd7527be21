"""Functional check of the converted hardware graph, in Python, without Vivado.

finn-plus executes un-specialised HW layers (``MVAU``, ``ConvolutionInputGenerator``, ``Pool``,
``FMPadding``, ...) in Python, but their specialised ``*_hls`` / ``*_rtl`` forms only through
cppsim/rtlsim, which need Vitis HLS / Vivado. So the check runs in stages on real uint8 tiles:

1. The HW-layer graph (checkpoint of ``convert_to_hw``, before partitioning) against the
   streamlined FINN-ONNX graph (checkpoint of ``streamline``): outputs must be identical
   (bit for bit, both end in the same CPU tail on the same integers).
2. The specialised, folded dataflow partition, "generalised" back to its Python-executable base
   op types (same attributes, weights, thresholds and folding), fed with the partition input of
   stage 1: its integer output stream must equal stage 1's accumulator bit for bit.
3. Against the QONNX model run by ``qonnx.core.onnx_exec``: the integers recovered from the QONNX
   output through the CPU tail (``y = transpose(acc) * scale + bias``) are compared with the
   accumulator. They agree except where an activation lands exactly on a rounding tie
   (``x / s == k + 0.5``): QONNX's round-half-even and FINN's float thresholds can then differ by
   one step, and a 3×3 conv chain spreads that to neighbouring outputs. The share of differing
   outputs is reported and bounded by ``qonnx_tolerance``.

A failed check raises :class:`VerificationError` (unlike FINN's ``verify_step``, which only
prints FAIL).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from sarvessel.hw.errors import VerificationError
from sarvessel.hw.steps import is_hw_node

log = logging.getLogger(__name__)

_SPECIALISED_SUFFIXES = ("_hls", "_rtl")
_HW_DOMAIN = "finn.custom_op.fpgadataflow"


@dataclass
class TileCheck:
    """Outcome for one tile."""

    #: HW-layer graph output == streamlined FINN-ONNX output, bit for bit (None: not checked).
    hw_vs_finn_exact: bool | None
    #: Specialised dataflow partition output == HW-graph accumulator (None: not checked).
    dataflow_exact: bool | None
    #: Share of accumulator values differing from the integers recovered from QONNX (0..1).
    qonnx_mismatch: float
    #: Largest |HW-graph output − QONNX output| (float).
    qonnx_max_abs_diff: float
    #: Largest |QONNX output| (for scale).
    max_abs_ref: float
    #: Standard deviation of the QONNX output (0 would mean a degenerate, constant output).
    ref_std: float
    #: Largest distance of the recovered QONNX integers from an integer: float32 rounding of the
    #: QONNX output, growing with the accumulator size; near 0.5 the recovery is ambiguous.
    off_grid: float

    def ok(self, qonnx_tolerance: float) -> bool:
        """Whether every checked stage passed."""
        return (
            self.hw_vs_finn_exact is not False
            and self.dataflow_exact is not False
            and self.qonnx_mismatch <= qonnx_tolerance
            and self.off_grid < 0.25
        )


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_models`."""

    tiles: list[TileCheck] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bit_exact(self) -> bool:
        """True when the HW graphs matched each other and the QONNX model on every value."""
        return bool(self.tiles) and all(
            t.hw_vs_finn_exact is not False and t.dataflow_exact is not False
            and t.qonnx_mismatch == 0.0
            for t in self.tiles
        )

    @property
    def hw_exact(self) -> bool:
        """True when every HW stage matched the streamlined FINN graph bit for bit."""
        return bool(self.tiles) and all(
            t.hw_vs_finn_exact is not False and t.dataflow_exact is not False for t in self.tiles
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping."""
        return {
            "bit_exact": self.bit_exact,
            "hw_exact": self.hw_exact,
            "seconds": self.seconds,
            "tiles": [asdict(t) for t in self.tiles],
        }


def verify_models(
    qonnx_model: ModelWrapper | Path | str,
    hw_model: ModelWrapper | Path | str,
    tiles: np.ndarray,
    *,
    finn_model: ModelWrapper | Path | str | None = None,
    dataflow_model: ModelWrapper | Path | str | None = None,
    qonnx_tolerance: float = 0.05,
    raise_on_mismatch: bool = True,
) -> VerifyReport:
    """Run ``tiles`` (uint8 ``[N, C, T, T]``) through the QONNX model and the HW graphs.

    ``hw_model`` is the HW-layer graph before partitioning (``convert_to_hw`` checkpoint);
    ``finn_model`` the streamlined graph (``streamline`` checkpoint, optional);
    ``dataflow_model`` the specialised/folded partition (optional). ``qonnx_tolerance`` is the
    largest share of outputs allowed to differ from QONNX through rounding ties. The default
    is 0.05.
    """
    tiles = np.asarray(tiles)
    if tiles.dtype != np.uint8 or tiles.ndim != 4:
        raise VerificationError(
            f"tiles must be uint8 [N, C, T, T], got {tiles.dtype} {tiles.shape}"
        )
    ref_model = _load(qonnx_model)
    hw = _load(hw_model)
    fm = _load(finn_model) if finn_model is not None else None
    df = generalize_specialized(_load(dataflow_model)) if dataflow_model is not None else None
    tail = cpu_tail(hw)
    report = VerifyReport()
    t0 = time.perf_counter()
    for i, tile in enumerate(tiles):
        check = _check_tile(ref_model, fm, hw, df, tail, tile[None].astype(np.float32))
        log.info("tile %d: %s", i, check)
        report.tiles.append(check)
        if raise_on_mismatch and not check.ok(qonnx_tolerance):
            raise VerificationError(f"tile {i}: HW graph does not match: {check}")
    report.seconds = time.perf_counter() - t0
    return report


def verify_flow_outputs(
    qonnx_model: ModelWrapper | Path | str, output_dir: Path, tiles: np.ndarray, **kwargs: Any
) -> VerifyReport:
    """:func:`verify_models` on the checkpoints a flow run left in ``output_dir``.

    Uses ``streamline.onnx``, ``convert_to_hw.onnx`` and the latest of
    ``generate_estimates.onnx`` / ``set_folding.onnx`` / ``specialize_layers.onnx`` found under
    ``intermediate_models``.
    """
    inter = Path(output_dir) / "intermediate_models"
    hw = inter / "convert_to_hw.onnx"
    if not hw.is_file():
        raise VerificationError(f"{hw}: missing; run the flow up to convert_to_hw first")
    fm = inter / "streamline.onnx"
    df = next(
        (
            p
            for p in (
                inter / "generate_estimates.onnx",
                inter / "set_folding.onnx",
                inter / "specialize_layers.onnx",
            )
            if p.is_file()
        ),
        None,
    )
    return verify_models(
        qonnx_model,
        hw,
        tiles,
        finn_model=fm if fm.is_file() else None,
        dataflow_model=df,
        **kwargs,
    )


def synthetic_sar_tiles(
    n: int, *, channels: int = 2, tile: int = 512, seed: int = 0
) -> np.ndarray:
    """``n`` SAR-like uint8 tiles ``[n, channels, tile, tile]`` through the real preprocessing.

    Sea clutter is K-distributed (gamma texture × gamma speckle, L = 4.4; docs/references.md §9)
    around −20 dB (VV) with VH 8 dB lower, plus a few bright point targets; values go through
    :func:`sarvessel.runtime.preprocess.to_uint8` exactly as scenes do.

    >>> t = synthetic_sar_tiles(1, channels=2, tile=32)
    >>> t.shape, t.dtype
    ((1, 2, 32, 32), dtype('uint8'))
    """
    from sarvessel.runtime.preprocess import VH, VV, to_uint8

    rng = np.random.default_rng(seed)
    out = np.empty((n, channels, tile, tile), np.uint8)
    for i in range(n):
        texture = rng.gamma(4.0, 1 / 4.0, (tile, tile))
        for c in range(channels):
            sigma0 = 10 ** ((-20.0 - 8.0 * c) / 10)
            inten = sigma0 * texture * rng.gamma(4.4, 1 / 4.4, (tile, tile))
            for _ in range(4):
                r, k = rng.integers(2, tile - 2, 2)
                inten[r - 1 : r + 2, k - 1 : k + 2] += sigma0 * 10 ** rng.uniform(2.0, 4.0)
            db = (10 * np.log10(inten)).astype(np.float32)
            out[i, c] = to_uint8(db, VV if c == 0 else VH)
    return out


def generalize_specialized(model: ModelWrapper) -> ModelWrapper:
    """Copy of ``model`` with ``X_hls``/``X_rtl`` layers turned back into Python-executable ``X``.

    Attributes (folding, weights, thresholds, datatypes) are kept; only the op type and domain
    change, so the Python model of each layer runs with exactly the specialised parameters.
    """
    out = copy.deepcopy(model)
    for node in out.graph.node:
        if node.domain.startswith(_HW_DOMAIN + "."):
            node.domain = _HW_DOMAIN
            for suffix in _SPECIALISED_SUFFIXES:
                node.op_type = node.op_type.removesuffix(suffix)
    return out


# -- helpers --------------------------------------------------------------------------------


@dataclass
class CpuTail:
    """The CPU side of the output: ``y = transpose(acc, perm) * scale + bias``."""

    perm: list[int] | None
    scale: np.ndarray
    bias: np.ndarray


def _load(m: ModelWrapper | Path | str) -> ModelWrapper:
    if isinstance(m, ModelWrapper):
        return m
    p = Path(m)
    if not p.is_file():
        raise VerificationError(f"{p}: model file not found")
    return ModelWrapper(str(p))


def cpu_tail(model: ModelWrapper, *, after: int | None = None) -> CpuTail:
    """The affine CPU tail after node index ``after`` (default: the last HW layer):
    ``[Transpose] → Mul → [Add]``, folded into one ``y = transpose(acc) * scale + bias`` with
    ``scale``/``bias`` broadcast over the transposed (NCHW) result."""
    nodes = list(model.graph.node)
    last = after if after is not None else max(i for i, n in enumerate(nodes) if is_hw_node(n))
    perm: list[int] | None = None
    scale, bias = np.float32(1.0), np.float32(0.0)
    for n in nodes[last + 1 :]:
        const = model.get_initializer(n.input[1]) if len(n.input) > 1 else None
        if n.op_type == "Transpose":
            perm = [int(v) for a in n.attribute if a.name == "perm" for v in a.ints]
        elif n.op_type in ("Mul", "Add") and const is not None:
            if perm is None and const.size > 1:
                raise VerificationError(
                    f"per-channel {n.op_type} {n.name!r} before the output transpose is not "
                    "supported in the CPU tail"
                )
            if n.op_type == "Mul":
                scale, bias = scale * const, bias * const
            else:
                bias = bias + const
        elif n.op_type == "Reshape":
            continue
        else:
            raise VerificationError(f"unsupported CPU tail op {n.op_type} {n.name!r}")
    return CpuTail(perm, np.asarray(scale, np.float32), np.asarray(bias, np.float32))


def _check_tile(
    ref_model: ModelWrapper,
    finn_model: ModelWrapper | None,
    hw: ModelWrapper,
    df: ModelWrapper | None,
    tail: CpuTail,
    x: np.ndarray,
) -> TileCheck:
    from finn.core.onnx_exec import execute_onnx
    from qonnx.core.onnx_exec import execute_onnx as qonnx_execute

    ref = qonnx_execute(ref_model, {ref_model.graph.input[0].name: x})[
        ref_model.graph.output[0].name
    ]
    ctx = execute_onnx(hw, {hw.graph.input[0].name: x}, return_full_exec_context=True)
    out = ctx[hw.graph.output[0].name]
    hw_nodes = [n for n in hw.graph.node if is_hw_node(n)]
    acc = ctx[hw_nodes[-1].output[0]]
    finn_exact = None
    if finn_model is not None:
        fo = execute_onnx(finn_model, {finn_model.graph.input[0].name: x})[
            finn_model.graph.output[0].name
        ]
        finn_exact = bool(np.array_equal(fo, out))
    df_exact = None
    if df is not None:
        df_out = execute_onnx(df, {df.graph.input[0].name: ctx[hw_nodes[0].input[0]]})[
            df.graph.output[0].name
        ]
        df_exact = bool(np.array_equal(df_out, acc))
    # invert the tail: ref = transpose(acc) * scale + bias
    rec = (ref.astype(np.float64) - tail.bias) / tail.scale
    if tail.perm is not None:
        rec = np.transpose(rec, np.argsort(tail.perm))
    rec_int = np.rint(rec)
    if rec_int.shape != acc.shape:
        raise VerificationError(f"QONNX output {ref.shape} does not map onto HW {acc.shape}")
    return TileCheck(
        hw_vs_finn_exact=finn_exact,
        dataflow_exact=df_exact,
        qonnx_mismatch=float(np.mean(rec_int != acc)),
        qonnx_max_abs_diff=float(np.abs(out - ref).max()),
        max_abs_ref=float(np.abs(ref).max()),
        ref_std=float(np.std(ref)),
        off_grid=float(np.abs(rec - rec_int).max()),
    )
