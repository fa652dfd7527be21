"""Equivalence check of an export: Brevitas forward vs QONNX (``execute_onnx``) vs onnxruntime.

A failed check raises :class:`EquivalenceError` (FINN's ``verify_step`` only prints "FAIL").

Two measures per pair of implementations, on the raw head output ``[B, 4*reg_max + nc, H, W]``:

- the largest absolute difference of the float output (logit units), checked against ``atol``;
- the integer accumulator of the last conv. The output is ``s_in * s_w[c] * acc + bias[c]`` with
  ``acc`` an integer, so where the graph is integer, ``rint((y - bias) / (s_in * s_w))`` must be
  *identical* in every implementation. ``s_in``, ``s_w`` and ``bias`` are read from the cleaned
  QONNX graph (the Quant nodes feeding its last Conv). The number of cells whose accumulator
  differs is checked against ``max_code_mismatch`` (default 0: integer-exact). The float32
  output resolves the accumulator only where one quantum ``s_in * s_w[c]`` is several float32
  ulps of ``|y|`` and ``|bias|``; a barely trained model (a smoke run) can have quanta of
  ~2e-7 beside biases of ~7, where neighbouring accumulators give the same float. Such
  channels are compared at the float noise floor instead (:func:`compare_outputs`), so the
  check neither fails nor gives up on them, whatever the CPU's summation order.

Measured on this project's network (docs/references.md §6 agrees): QONNX ``execute_onnx`` and the
plain QCDQ in onnxruntime match Brevitas to ~1e-7 in float with identical accumulators; the
integer-fusable QCDQ (:func:`~sarvessel.quantize.export.export_qcdq_int8`) rounds each BatchNorm
shift to an int32 bias, which flips a few activation roundings, so check it with a looser ``atol``
and a non-zero ``max_code_mismatch``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sarvessel.runtime.errors import SarvesselError

log = logging.getLogger(__name__)

__all__ = ["EquivalenceError", "EquivalenceReport", "PairReport", "check_equivalence",
           "compare_outputs"]

#: A channel's accumulator is read from the float32 output only where this many ulps of the
#: output's magnitude fit in one quantum (rounding of the sum, the bias add and the output);
#: elsewhere that many ulps are the float noise floor two implementations may differ by.
RESOLUTION_ULPS = 8


class EquivalenceError(SarvesselError):
    """Two implementations of the exported network disagree beyond the stated tolerance."""


@dataclass
class PairReport:
    """One comparison. max_abs_diff: largest float difference (logit units). code_mismatches:
    output cells whose integer accumulator differs (None when it could not be derived).
    cells: number of output values compared."""

    a: str
    b: str
    max_abs_diff: float
    code_mismatches: int | None
    cells: int


@dataclass
class EquivalenceReport:
    """All comparisons of :func:`check_equivalence` and the tolerances they were held to.

    quantum_residual: largest distance of the QONNX run's accumulator from an integer in the
    resolved channels (a sanity check of the derived scales; NaN if not derived). channels:
    output channels; resolved_channels: those whose float32 output resolves one accumulator
    quantum (see :func:`compare_outputs`; both 0 if not derived).
    """

    tiles: int
    atol: float
    max_code_mismatch: int
    pairs: list[PairReport] = field(default_factory=list)
    quantum_residual: float = float("nan")
    brevitas_mismatch_fraction: float = 0.0
    channels: int = 0
    resolved_channels: int = 0

    @property
    def ok(self) -> bool:
        """Whether every pair is within the tolerances."""
        return all(_pair_ok(p, self.atol, self.max_code_mismatch,
                            self.brevitas_mismatch_fraction) for p in self.pairs)


def check_equivalence(
    model: Any,
    qonnx_path: Path | str | None,
    onnx_path: Path | str | None,
    tiles: np.ndarray,
    *,
    atol: float = 1e-5,
    max_code_mismatch: int = 0,
    brevitas_mismatch_fraction: float = 0.0,
) -> EquivalenceReport:
    """Compare the Brevitas ``model`` with its QONNX and ONNX (QCDQ) exports on ``tiles``.

    tiles: uint8 ``[B, C, T, T]`` (the preprocess output). qonnx_path: the cleaned QONNX export
    (run tile by tile with ``qonnx.core.onnx_exec.execute_onnx``; its batch is 1); None skips it.
    onnx_path: an ONNX file for onnxruntime; None skips it. atol: largest allowed float
    difference of the raw output, in logit units; the default is 1e-5. max_code_mismatch: output
    cells allowed to differ in the last conv's integer accumulator; the default is 0 (exact).
    The accumulator check needs ``qonnx_path``.
    brevitas_mismatch_fraction: for the pairs with the Brevitas forward only, a share of output
    cells whose accumulator may differ (in which case their float difference is not held to
    ``atol``). Why: Brevitas simulates quantisation in float32, so an activation that lands
    within float32 rounding of a .5 boundary can round the other way than in the exported
    graph (seen on trained models: ~0.3 % of the last conv's accumulators). The exported graphs
    (QONNX, which FINN compiles, and the onnxruntime one the CPU runs) are always held to
    ``atol`` and ``max_code_mismatch`` against each other. The default is 0.0 (exact).

    Returns the report; raises :class:`EquivalenceError` listing every failing pair.
    """
    import torch

    tiles = np.asarray(tiles)
    if tiles.dtype != np.uint8 or tiles.ndim != 4:
        raise ValueError(f"tiles must be uint8 [B, C, T, T], got {tiles.dtype} {tiles.shape}")
    x = tiles.astype(np.float32)
    model.eval()
    with torch.no_grad():
        y = model(torch.from_numpy(x))
    outputs: dict[str, np.ndarray] = {"brevitas": _as_numpy(y)}
    quantum = None
    if qonnx_path is not None:
        outputs["qonnx"], quantum = _run_qonnx(Path(qonnx_path), x)
    if onnx_path is not None:
        outputs["onnxruntime"] = _run_ort(Path(onnx_path), x)
    return compare_outputs(outputs, quantum, tiles=len(tiles), atol=atol,
                           max_code_mismatch=max_code_mismatch,
                           brevitas_mismatch_fraction=brevitas_mismatch_fraction)


def compare_outputs(
    outputs: Mapping[str, np.ndarray],
    quantum: tuple[np.ndarray, np.ndarray] | None,
    *,
    tiles: int,
    atol: float = 1e-5,
    max_code_mismatch: int = 0,
    brevitas_mismatch_fraction: float = 0.0,
) -> EquivalenceReport:
    """Compare the raw outputs of several implementations pairwise (the core of
    :func:`check_equivalence`, without running anything).

    outputs: raw head maps ``[B, C, H, W]`` by implementation name, in comparison order; a
    name ``"brevitas"`` gets the ``brevitas_mismatch_fraction`` allowance. quantum: the last
    conv's accumulator scale and bias, each ``[1, C, 1, 1]`` float64, or None (float check
    only). tiles: the number of tiles, for the report. The tolerances are
    :func:`check_equivalence`'s.

    The float32 output ``s*acc + b`` resolves the integer accumulator only where its rounding
    error is well below one quantum ``s``. A channel is *resolved* where
    ``RESOLUTION_ULPS * ulp(max(|y|, |b|)) <= s``; there a cell mismatches if its accumulators
    differ. In an unresolved channel (a tiny ``s`` beside a large bias, as in a barely trained
    model) the float output cannot tell neighbouring accumulators apart, so a cell mismatches
    if the outputs differ by more than that float noise floor. The accumulator residual that
    validates the derived scales is taken over the resolved channels only.
    """
    report = EquivalenceReport(tiles=tiles, atol=atol, max_code_mismatch=max_code_mismatch,
                               brevitas_mismatch_fraction=brevitas_mismatch_fraction)
    names = list(outputs)
    codes: dict[str, np.ndarray] = {}
    resolved = floor = None
    if quantum is not None:
        scale, bias = quantum
        ref_name = _reference(outputs)
        ref = outputs[ref_name]
        magnitude = np.maximum(np.abs(ref.astype(np.float32)).max(axis=(0, 2, 3), keepdims=True),
                               np.abs(bias).astype(np.float32))
        floor = RESOLUTION_ULPS * np.spacing(magnitude).astype(np.float64)  # [1, C, 1, 1]
        resolved = floor <= scale
        report.channels = int(resolved.size)
        report.resolved_channels = int(resolved.sum())
        if report.resolved_channels < report.channels:
            log.info("%d of %d output channels have a quantum below float32 resolution "
                     "(e.g. %.3g beside a bias of %.3g): compared at the float noise floor",
                     report.channels - report.resolved_channels, report.channels,
                     float(scale[~resolved].min()), float(np.abs(bias)[~resolved].max()))
        for name, out in outputs.items():
            acc = (out.astype(np.float64) - bias) / scale
            codes[name] = np.rint(acc)
            if name == ref_name and report.resolved_channels:
                residual = np.where(resolved, np.abs(acc - codes[name]), 0.0)
                report.quantum_residual = float(residual.max(initial=0.0))
        if report.resolved_channels and not report.quantum_residual < 0.25:
            log.warning("last-conv accumulator is %.3f from an integer in a resolved channel: "
                        "scales not derivable, integer check skipped", report.quantum_residual)
            codes, resolved = {}, None
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    for first, other in pairs:
        a, b = outputs[first], outputs[other]
        if a.shape != b.shape:
            raise EquivalenceError(f"{other} output shape {b.shape} != {first} {a.shape}")
        mism = None
        if codes and resolved is not None and floor is not None:
            differ = np.where(resolved, codes[first] != codes[other],
                              np.abs(a.astype(np.float64) - b) > floor)
            mism = int(differ.sum())
        report.pairs.append(PairReport(first, other, float(np.abs(a - b).max(initial=0.0)),
                                       mism, int(a.size)))
    failures = [p for p in report.pairs
                if not _pair_ok(p, atol, max_code_mismatch, brevitas_mismatch_fraction)]
    for p in report.pairs:
        log.info("%s vs %s: max |diff| %.3g, accumulator mismatches %s of %d", p.a, p.b,
                 p.max_abs_diff, p.code_mismatches, p.cells)
    if failures:
        raise EquivalenceError("; ".join(
            f"{p.a} vs {p.b}: max |diff| {p.max_abs_diff:.3g} (atol {atol:.3g}), "
            f"accumulator mismatches {p.code_mismatches} of {p.cells} "
            f"(allowed {_allowed(p, max_code_mismatch, brevitas_mismatch_fraction)})"
            for p in failures))
    return report


def _reference(outputs: Mapping[str, np.ndarray]) -> str:
    """The implementation whose accumulators validate the derived scales: QONNX if present
    (the graph FINN compiles), else the first one."""
    return "qonnx" if "qonnx" in outputs else next(iter(outputs))


#: Ops that keep a quantised tensor's scale (the last conv's input may come through them).
_SCALE_PRESERVING = ("MaxPool", "Identity", "Reshape", "Transpose")


def _pair_ok(p: PairReport, atol: float, max_code_mismatch: int, brevitas_fraction: float
             ) -> bool:
    if brevitas_fraction > 0 and "brevitas" in (p.a, p.b) and p.code_mismatches is not None:
        return p.code_mismatches <= _allowed(p, max_code_mismatch, brevitas_fraction)
    if not p.max_abs_diff <= atol:  # also catches NaN
        return False
    return p.code_mismatches is None or p.code_mismatches <= max_code_mismatch


def _allowed(p: PairReport, max_code_mismatch: int, brevitas_fraction: float) -> int:
    """Accumulator mismatches allowed for the pair ``p``."""
    if brevitas_fraction > 0 and "brevitas" in (p.a, p.b):
        return max(max_code_mismatch, int(brevitas_fraction * p.cells))
    return max_code_mismatch


def _as_numpy(y: Any) -> np.ndarray:
    y = y.value if hasattr(y, "value") else y
    return y.detach().cpu().numpy().astype(np.float32)


def _run_ort(path: Path, x: np.ndarray) -> np.ndarray:
    """Run ``path`` in onnxruntime (full graph optimisation), tile by tile if batch is fixed."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    step = inp.shape[0] if isinstance(inp.shape[0], int) else len(x)
    parts = [sess.run(None, {inp.name: x[i:i + step]})[0] for i in range(0, len(x), step)]
    return np.concatenate(parts).astype(np.float32)


def _run_qonnx(
    path: Path, x: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """Run the QONNX file with ``execute_onnx`` (batch 1, tile by tile); also derive the last
    conv's accumulator scale and bias ``([1, C, 1, 1], [1, C, 1, 1])`` when it can."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    mw = ModelWrapper(str(path))
    iname, oname = mw.graph.input[0].name, mw.graph.output[0].name
    outs, ctx = [], {}
    for i in range(len(x)):
        ctx = execute_onnx(mw, {iname: x[i:i + 1]}, return_full_exec_context=True)
        outs.append(ctx[oname])
    return np.concatenate(outs).astype(np.float32), _accumulator_scale(mw, ctx)


def _accumulator_scale(mw: Any, ctx: dict[str, np.ndarray]
                       ) -> tuple[np.ndarray, np.ndarray] | None:
    """Scale ``s_in * s_w[c]`` and bias of the Conv producing the graph output, from the Quant
    nodes feeding it; None if the graph does not have that shape."""
    last = mw.find_producer(mw.graph.output[0].name)
    if last is None or last.op_type != "Conv":
        return None
    pin, pw = mw.find_producer(last.input[0]), mw.find_producer(last.input[1])
    while pin is not None and pin.op_type in _SCALE_PRESERVING:
        pin = mw.find_producer(pin.input[0])
    if pin is None or pw is None or pin.op_type != "Quant" or pw.op_type != "Quant":
        return None
    s_in, z_in = ctx[pin.input[1]], ctx[pin.input[2]]
    s_w, z_w = ctx[pw.input[1]], ctx[pw.input[2]]
    if np.size(s_in) != 1 or np.any(z_in != 0) or np.any(z_w != 0):
        return None
    cout = ctx[last.input[1]].shape[0]
    scale = (float(np.reshape(s_in, ())) * np.broadcast_to(np.reshape(s_w, -1), (cout,))
             ).astype(np.float64).reshape(1, -1, 1, 1)
    bias = (np.asarray(ctx[last.input[2]], np.float64).reshape(1, -1, 1, 1)
            if len(last.input) > 2 and last.input[2] else np.zeros((1, cout, 1, 1)))
    return scale, bias
